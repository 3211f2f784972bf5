"""A stand-in for DashScope's native multimodal-generation endpoint, strict the way the service documents.

It checks what earshot sends (Bearer key, body shape, `data:;base64,` audio of at most 10 MB encoded in a
format the model lists) and "listens": each audio item is decoded with imageio-ffmpeg's binary, only the
first 30 s are heard, and pure tones over silence are found with an FFT over 0.1 s frames. The answer
names them, e.g. "heard 440Hz@0.5s 660Hz@3.0s (4.2s)" (times relative to that item, frequencies to the
nearest 10 Hz), so a test can check which audio reached the model, in what order, at what offsets.
A text-only request answers "[text-only] " plus the tone markers found in the text it was sent, the way
a summary of earlier answers would repeat them.

    fake = FakeDashScope(api_key="sk-test")
    async with Served(fake.app) as s: ...            # or `with Threaded(fake.app) as s:`
    fake.fail(THROTTLED, replace(SERVER_ERROR, retry_after=1))
    fake.calls[-1].items[0].tones == [(440, 0.5)]

`tone_audio(...)` makes the audio such tests send.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import struct
import subprocess
import tempfile
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import imageio_ffmpeg
import numpy as np
from aiohttp import web

PATH = "/api/v1/services/aigc/multimodal-generation/generation"
RATE = 16_000
FRAME = RATE // 10                    # 0.1 s analysis frames: 10 Hz bins
HEARD_SECONDS = 30.0                  # the real service processes only the first 30 s of each item
MAX_ENCODED = 10 * 1024 * 1024
TOKENS_PER_SECOND = 25
TEXT_ONLY_MARKER = "[text-only]"
ACCEPTED_FORMATS = ("mp3", "wav", "amr", "3gp", "aac")
# model -> (max input tokens, max output tokens), per the model list
MODELS: dict[str, tuple[int, int]] = {"qwen-audio-turbo": (6000, 1500),
                                      "qwen-audio-turbo-latest": (6144, 2048),
                                      "qwen2-audio-instruct": (6000, 1500)}
MARKER = re.compile(r"\b(\d+)Hz@(\d+(?:\.\d+)?)s")


def heard(text: str) -> list[int]:
    """The tones (Hz) an answer of this stand-in says it heard, in order."""
    return [int(m) for m in re.findall(r"(\d+)Hz@", text)]


@dataclass(frozen=True)
class Failure:
    """One scripted misbehaviour, consumed by the next authenticated request.

    status None with hang > 0: stall, then answer normally. html: a proxy's HTML page instead of JSON.
    mid_stream: on a stream, send one piece of text, then `event:error` with this status and code.
    """

    status: int | None = 500
    code: str = "InternalError"
    message: str = "An internal error has occured, please try again later."
    retry_after: float | str | None = None
    hang: float = 0.0
    html: bool = False
    mid_stream: bool = False


SERVER_ERROR = Failure()
UNAVAILABLE = Failure(503, "ModelUnavailable", "Model is unavailable, please try again later.")
THROTTLED = Failure(429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later.")
FREE_QUOTA = Failure(429, "Throttling.AllocationQuota", "Free allocated quota exceeded.")
FREE_TIER_ONLY = Failure(403, "AllocationQuota.FreeTierOnly",
                         "The free tier of the model has been exhausted.")
ARREARAGE = Failure(400, "Arrearage", "Access denied, please make sure your account is in good standing.")
ACCESS_DENIED = Failure(403, "AccessDenied", "Access denied.")
CONTENT = Failure(400, "DataInspectionFailed", "Input data may contain inappropriate content.")
BAD_PARAMETER = Failure(400, "InvalidParameter", "Required parameter(s) missing or invalid.")
HTML = Failure(502, html=True)
HANG = Failure(None, hang=30.0)


@dataclass
class HeardItem:
    """One audio content item as the stand-in received and heard it."""

    message: int                       # index in input.messages
    role: str
    bytes: int
    format: str
    accepted: bool
    duration: float | None = None      # seconds, whole item (None when not decoded)
    over_30s: bool = False             # longer than the 30 s the model hears
    tones: list[tuple[int, float]] = field(default_factory=list)   # (Hz, start s) within the first 30 s
    heard: str = ""
    sha256: str = ""                   # of the decoded bytes (the recognizer: pass-through is byte for byte)
    mime: str = ""                     # the data: URL's media type
    b64_chars: int = 0                 # the base64 string's length as sent


@dataclass
class Call:
    """Everything about one request, answered or not."""

    request_id: str
    headers: dict[str, str]
    stream: bool
    body: dict[str, Any] | None = None
    model: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    roles: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    items: list[HeardItem] = field(default_factory=list)
    status: int = 200
    code: str | None = None
    reply: str | None = None
    finish_reason: str = "stop"            # "length" when max_tokens cut the reply short
    usage: dict[str, Any] = field(default_factory=dict)
    failure: Failure | None = None
    api: str = "native"                    # "compat" (Qwen-Omni) or "vllm": see tests/fakes/compat.py
    voice: str | None = None               # the voice a spoken answer was asked in
    speech_bytes: int = 0                  # PCM bytes of the spoken answer sent
    task: str = "chat"                     # "asr" (the recognizer) or "tts" (the voice): tests/fakes/speech.py
    asr_options: dict[str, Any] | None = None
    language: str | None = None            # asr_options.language asked for
    text: str | None = None                # tts: the text to speak
    tts_url: str | None = None             # tts: where its audio was put


# --- audio: making it (for tests) and hearing it (for the stand-in) --------------------------------

def ffmpeg(args: list[str], data: bytes, timeout: float = 30) -> bytes:
    proc = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", *args],
                          input=data, capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise ValueError(proc.stderr.decode(errors="replace")[-300:])
    return proc.stdout


_ENCODE = {"mp3": ["-c:a", "libmp3lame", "-b:a", "48k", "-f", "mp3"],
           "wav": ["-c:a", "pcm_s16le", "-f", "wav"],
           "ogg": ["-c:a", "libopus", "-f", "ogg"],
           "webm": ["-c:a", "libopus", "-f", "webm"],
           "flac": ["-c:a", "flac", "-f", "flac"],
           "aac": ["-c:a", "aac", "-f", "adts"],
           "amr": ["-c:a", "libopencore_amrnb", "-ar", "8000", "-f", "amr"],
           "3gp": ["-c:a", "libopencore_amrnb", "-ar", "8000", "-f", "3gp"]}


def tone_pcm(*segments: tuple[float, float], rate: int = RATE) -> np.ndarray:
    """Float samples for (Hz, seconds) segments; Hz 0 is silence. Short fades avoid clicks."""
    out = []
    for hz, seconds in segments:
        n = int(round(seconds * rate))
        if hz:
            t = np.arange(n) / rate
            x = 0.5 * np.sin(2 * np.pi * hz * t)
            fade = min(n // 2, rate // 200)
            if fade:
                ramp = np.linspace(0, 1, fade)
                x[:fade] *= ramp
                x[n - fade:] *= ramp[::-1]
        else:
            x = np.zeros(n)
        out.append(x)
    return np.concatenate(out) if out else np.zeros(0)


def tone_audio(*segments: tuple[float, float], fmt: str = "mp3") -> bytes:
    """Encoded audio of tones over silence, e.g. tone_audio((0, .5), (440, 1), (0, 1)) -> "440Hz@0.5s"."""
    pcm = (np.clip(tone_pcm(*segments), -1, 1) * 32767).astype("<i2").tobytes()
    # a seekable output: mp4-family containers need it, and MP3 gets its gapless header, so offsets stay exact
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"a.{fmt}"
        src = ["-f", "s16le", "-ar", str(RATE), "-ac", "1", "-i", "pipe:0"]
        ffmpeg([*src, *_ENCODE[fmt], "-y", str(out)], pcm)
        return out.read_bytes()


def sniff(data: bytes) -> str:
    """Container/codec by magic bytes; names the formats the model does not list too, to report them."""
    if data[:3] == b"ID3":
        return "mp3"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return _wav_kind(data)
    if data[:5] == b"#!AMR":
        return "amr"
    if data[4:8] == b"ftyp":
        return "3gp" if data[8:11] in (b"3gp", b"3g2") else "mp4"
    if data[:4] == b"OggS":
        return "opus" if b"OpusHead" in data[:128] else "ogg"
    if data[:4] == b"\x1aE\xdf\xa3":
        return "webm"
    if data[:4] == b"fLaC":
        return "flac"
    if len(data) >= 2 and data[0] == 0xFF:
        if data[1] & 0xF6 == 0xF0:             # sync + layer 00: ADTS
            return "aac"
        if data[1] & 0xE0 == 0xE0 and data[1] & 0x06:
            return "mp3"
    return "unknown"


def _wav_kind(data: bytes) -> str:
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if cid == b"fmt ":
            tag = struct.unpack("<H", data[pos + 8:pos + 10])[0]
            return "wav" if tag in (1, 0x31, 0xFFFE) else f"wav-{tag:#x}"   # PCM, GSM 6.10, extensible
        pos += 8 + size + (size & 1)
    return "wav-broken"


def decode(data: bytes) -> np.ndarray:
    """16 kHz mono float samples (through a temp file: mp4-family containers need to seek)."""
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        raw = ffmpeg(["-i", f.name, "-f", "s16le", "-ac", "1", "-ar", str(RATE), "pipe:1"], b"")
    return np.frombuffer(raw, "<i2").astype(np.float64) / 32768


def find_tones(pcm: np.ndarray) -> list[tuple[int, float]]:
    """(Hz to the nearest 10, start s) of each pure tone over silence, in order."""
    frames = len(pcm) // FRAME
    window = np.hanning(FRAME)
    found: list[tuple[float, int]] = []        # per frame: (Hz or 0)
    for i in range(frames):
        x = pcm[i * FRAME:(i + 1) * FRAME]
        if np.sqrt(np.mean(x * x)) < 0.01:     # below -40 dBFS: silence
            found.append((0.0, i))
            continue
        spec = np.abs(np.fft.rfft(x * window)) ** 2
        k = int(np.argmax(spec[1:])) + 1
        if spec[max(0, k - 3):k + 4].sum() < 0.6 * spec.sum():   # energy spread out: not a pure tone
            found.append((0.0, i))
            continue
        a, b, c = (spec[k - 1], spec[k], spec[k + 1]) if 0 < k < len(spec) - 1 else (0, 1, 0)
        shift = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) else 0.0
        found.append(((k + shift) * RATE / FRAME, i))
    tones: list[tuple[int, float]] = []
    run: list[tuple[float, int]] = []
    for hz, i in [*found, (0.0, frames)]:
        if run and hz and abs(hz - run[0][0]) <= 0.03 * run[0][0]:
            run.append((hz, i))
            continue
        if len(run) >= 2:                      # at least 0.2 s: a click or a transition is not a tone
            tones.append(_tone(pcm, run))
        run = [(hz, i)] if hz else []
    return tones


def _tone(pcm: np.ndarray, run: list[tuple[float, int]]) -> tuple[int, float]:
    hz = float(np.median([h for h, _ in run]))
    first = run[0][1]
    # the onset inside the frame(s) around the run's start, to the sample
    lo, hi = max(0, (first - 1) * FRAME), (first + 1) * FRAME
    seg = np.abs(pcm[lo:hi])
    loud = np.nonzero(seg > 0.3 * seg.max())[0] if seg.size else np.array([0])
    start = (lo + int(loud[0])) / RATE if loud.size else first * FRAME / RATE
    return int(round(hz / 10) * 10), round(start, 2)


def hear(data: bytes) -> tuple[float, list[tuple[int, float]]]:
    pcm = decode(data)
    return len(pcm) / RATE, find_tones(pcm[: int(HEARD_SECONDS * RATE)])


# --- the service ------------------------------------------------------------------------------------

class _Reject(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class FakeDashScope:
    """The stand-in. Mutate its knobs between (or during) tests; read `calls` afterwards."""

    def __init__(self, api_key: str = "sk-test-key", *, inspect: bool = True, latency: float = 0.0) -> None:
        self.api_key = api_key
        self.url = ""                                   # set once served
        self.inspect = inspect                 # False: skip decoding (load tests); answers name byte counts
        self.latency = latency                 # seconds before each answer
        self.chunk_delay = 0.0                 # seconds between stream events
        self.reply: Callable[[Call], str] | None = None
        self.usage_style: Literal["flat", "details"] = "flat"
        self.failures: deque[Failure] = deque()
        self.calls: list[Call] = []
        self.rejected: list[str] = []          # formats refused, in order
        self.in_flight = 0
        self.max_in_flight = 0
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_post(PATH, self._handle)
        from tests.fakes.compat import CompatRoutes
        from tests.fakes.speech import SpeechRoutes
        self.compat = CompatRoutes(self)       # the OpenAI-compatible endpoints, same host
        self.speech = SpeechRoutes(self)       # the recognizer and the voice (tests/fakes/speech.py)

    def fail(self, *failures: Failure) -> None:
        self.failures.extend(failures)

    @property
    def answered(self) -> list[Call]:
        return [c for c in self.calls if c.status == 200 and c.reply is not None]

    def audio_items(self) -> list[HeardItem]:
        return [i for c in self.calls for i in c.items]

    # --- request handling -------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._serve(request)
        finally:
            self.in_flight -= 1

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        call = Call(request_id=str(uuid.uuid4()), headers=dict(request.headers),
                    stream=request.headers.get("X-DashScope-SSE", "").lower() == "enable")
        self.calls.append(call)
        if self.latency:
            await asyncio.sleep(self.latency)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error(call, 401, "InvalidApiKey", "Invalid API-key provided.")
        failure = call.failure = self.failures.popleft() if self.failures else None
        if failure and failure.hang and not await self._stall(request, failure.hang):
            call.status = 499                  # the client gave up first
            return web.Response(status=499)
        if failure and failure.status is not None and not failure.mid_stream:
            return self._scripted(call, failure)
        from tests.fakes.speech import TTS_MODELS, Refused
        try:
            peek = json.loads(await request.read())
        except ValueError:
            peek = None
        if isinstance(peek, dict) and peek.get("model") in TTS_MODELS:
            call.body, call.model = peek, peek["model"]
            try:
                return await self.speech.tts(request, call, peek)
            except Refused as r:
                return self._error(call, r.status, r.code, r.message)
        try:
            await self._check(request, call)
        except _Reject as r:
            return self._error(call, r.status, r.code, r.message)
        call.reply, call.usage = self._answer(call)
        if call.stream:
            return await self._sse(request, call, failure if failure and failure.mid_stream else None)
        return web.json_response({
            "output": {"choices": [{"finish_reason": call.finish_reason,
                                    "message": {"role": "assistant", "content": [{"text": call.reply}]}}]},
            "usage": call.usage, "request_id": call.request_id})

    async def _stall(self, request: web.Request, seconds: float) -> bool:
        """Sleep, but stop as soon as the client hangs up (so timeouts leave no handler behind).

        True if the client is still there afterwards."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            if request.transport is None or request.transport.is_closing():
                return False
            await asyncio.sleep(0.05)
        return True

    async def _check(self, request: web.Request, call: Call) -> None:
        if not request.content_type.startswith("application/json"):
            raise _Reject(400, "InvalidParameter",
                          f"Content-Type must be application/json, not {request.content_type}")
        try:
            body = json.loads(await request.read())
        except ValueError:
            raise _Reject(400, "InvalidParameter", "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise _Reject(400, "InvalidParameter", "The request body must be a JSON object.")
        call.body = body
        call.model = body.get("model")
        if not call.model:
            raise _Reject(400, "BadRequest.EmptyModel", 'Required parameter "model" missing from request.')
        if call.model not in MODELS:
            raise _Reject(404, "ModelNotFound", "Model not exist.")
        if "parameters" not in body or not isinstance(body["parameters"], dict):
            raise _Reject(400, "BadRequest.EmptyParameters",
                          'Required parameter "parameters" missing from request.')
        call.parameters = body["parameters"]
        msgs = (body.get("input") or {}).get("messages") if isinstance(body.get("input"), dict) else None
        if not isinstance(msgs, list) or not msgs:
            raise _Reject(400, "BadRequest.EmptyInput",
                          'Required input parameter "messages" missing from request.')
        max_in, max_out = MODELS[call.model]
        max_tokens = call.parameters.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or not 1 <= max_tokens <= max_out):
            raise _Reject(400, "InvalidParameter", f"Range of max_tokens should be [1, {max_out}]")
        for m, msg in enumerate(msgs):
            if not isinstance(msg, dict) or msg.get("role") not in ("system", "user", "assistant"):
                raise _Reject(400, "InvalidParameter",
                              f"messages[{m}]: role must be system, user or assistant")
            if not isinstance(msg.get("content"), list):
                raise _Reject(400, "InvalidParameter", f"messages[{m}].content must be a list of items")
            call.roles.append(msg["role"])
            for item in msg["content"]:
                await self._check_item(call, m, msg["role"], item)
        if self._input_tokens(call) > max_in:
            raise _Reject(400, "InvalidParameter", f"Range of input length should be [1, {max_in}]")

    async def _check_item(self, call: Call, m: int, role: str, item: Any) -> None:
        if not isinstance(item, dict) or len(item) != 1:
            raise _Reject(400, "InvalidParameter", f"messages[{m}]: each content item has exactly one key")
        (key, value), = item.items()
        if key == "text":
            if not isinstance(value, str):
                raise _Reject(400, "InvalidParameter", f"messages[{m}]: text must be a string")
            call.texts.append(value)
            return
        if key != "audio" or not isinstance(value, str):
            raise _Reject(400, "InvalidParameter", f"messages[{m}]: unsupported content item {key!r}")
        if not value.startswith("data:;base64,"):
            # file:// is SDK-only; URLs and oss:// would need fetching, which this stand-in never does
            raise _Reject(400, "InvalidParameter", "The provided URL does not appear to be valid: "
                          "send audio as data:;base64,")
        encoded = value[len("data:;base64,"):]
        if len(encoded) > MAX_ENCODED:
            raise _Reject(400, "InvalidParameter",
                          f"Exceeded limit on max bytes per data-uri item : {MAX_ENCODED}")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise _Reject(400, "InvalidParameter", "The audio data URI is not valid base64.") from None
        heard = HeardItem(message=m, role=role, bytes=len(data), format=sniff(data), accepted=False)
        call.items.append(heard)
        if heard.format not in ACCEPTED_FORMATS:
            self.rejected.append(heard.format)
            raise _Reject(400, "InvalidParameter", f"The audio format is not supported: {heard.format}")
        heard.accepted = True
        if not self.inspect:
            heard.heard = f"heard {len(data)} bytes"
            return
        try:
            duration, tones = await asyncio.to_thread(hear, data)
        except (ValueError, subprocess.TimeoutExpired):
            raise _Reject(400, "InvalidParameter", "The audio file could not be decoded.") from None
        heard.duration, heard.tones, heard.over_30s = duration, tones, duration > HEARD_SECONDS + 0.05
        marks = " ".join(f"{hz}Hz@{t:.1f}s" for hz, t in tones) or "silence"
        heard.heard = f"heard {marks} ({duration:.1f}s)"

    # --- answers ------------------------------------------------------------------------------------
    @staticmethod
    def _audio_tokens(call: Call) -> int:
        return sum(max(TOKENS_PER_SECOND, round(min(i.duration or 0, HEARD_SECONDS) * TOKENS_PER_SECOND))
                   for i in call.items)

    def _input_tokens(self, call: Call) -> int:
        return self._audio_tokens(call) + sum(len(t) for t in call.texts) // 4

    def _answer(self, call: Call) -> tuple[str, dict[str, Any]]:
        last_user = max((n for n, r in enumerate(call.roles) if r == "user"), default=-1)
        current = [i for i in call.items if i.message == last_user]
        if self.reply is not None:
            text = self.reply(call)
        elif current:
            text = " | ".join(i.heard for i in current)
        else:
            marks = [f"{hz}Hz@{t}s" for t_ in call.texts for hz, t in MARKER.findall(t_)]
            text = " ".join([TEXT_ONLY_MARKER, *marks])
        max_tokens = call.parameters.get("max_tokens")
        if max_tokens and len(text) // 4 > max_tokens:
            text, call.finish_reason = text[: max_tokens * 4], "length"
        audio, chars = self._audio_tokens(call), sum(len(t) for t in call.texts)
        return text, self._usage(audio, max(1, chars // 4) if chars else 0, max(1, len(text) // 4))

    def _usage(self, audio: int, text: int, output: int) -> dict[str, Any]:
        if self.usage_style == "details":
            return {"input_tokens": audio + text, "output_tokens": output,
                    "total_tokens": audio + text + output,
                    "input_tokens_details": {"audio_tokens": audio, "text_tokens": text},
                    "output_tokens_details": {"text_tokens": output}}
        return {"audio_tokens": audio, "input_tokens": text, "output_tokens": output}

    def _error(self, call: Call, status: int, code: str, message: str,
               headers: dict[str, str] | None = None) -> web.StreamResponse:
        call.status, call.code = status, code
        body = {"request_id": call.request_id, "code": code, "message": message}
        if call.stream and status != 200:
            # a stream request refused up front: non-2xx, but the body is still SSE
            text = f"id:1\nevent:error\n:HTTP_STATUS/{status}\ndata:{json.dumps(body)}\n\n"
            return web.Response(status=status, text=text, content_type="text/event-stream", headers=headers)
        return web.json_response(body, status=status, headers=headers)

    def _scripted(self, call: Call, failure: Failure) -> web.StreamResponse:
        assert failure.status is not None
        headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else None
        if failure.html:
            call.status, call.code = failure.status, None
            page = (f"<html><head><title>{failure.status} Bad Gateway</title></head><body><center>"
                    f"<h1>{failure.status} Bad Gateway</h1></center><hr><center>nginx</center></body></html>")
            return web.Response(status=failure.status, text=page, content_type="text/html", headers=headers)
        return self._error(call, failure.status, failure.code, failure.message, headers)

    async def _sse(self, request: web.Request, call: Call, mid: Failure | None) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream;charset=UTF-8"})
        await resp.prepare(request)
        incremental = bool(call.parameters.get("incremental_output"))
        pieces = re.findall(r"\S+\s*", call.reply or "") or [call.reply or ""]
        sent, n = "", 0

        async def event(kind: str, status: int, data: dict[str, Any]) -> None:
            nonlocal n
            n += 1
            payload = json.dumps(data, ensure_ascii=False)
            await resp.write(f"id:{n}\nevent:{kind}\n:HTTP_STATUS/{status}\ndata:{payload}\n\n".encode())
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)

        def chunk(text: str, reason: str, output: int) -> dict[str, Any]:
            usage = {**call.usage}
            if "audio_tokens" in usage:
                usage["output_tokens"] = output
            else:
                usage.update(output_tokens=output, total_tokens=usage["input_tokens"] + output)
            content = [{"text": text}] if text else []
            return {"output": {"choices": [{"message": {"content": content, "role": "assistant"},
                                            "finish_reason": reason}]},
                    "usage": usage, "request_id": call.request_id}

        for k, piece in enumerate(pieces):
            sent += piece
            await event("result", 200, chunk(piece if incremental else sent, "null", max(1, len(sent) // 4)))
            if mid is not None and k == 0:
                assert mid.status is not None
                call.status, call.code = mid.status, mid.code
                await event("error", mid.status, {"code": mid.code, "message": mid.message,
                                                  "request_id": call.request_id})
                return resp
        await event("result", 200, chunk("" if incremental else sent, call.finish_reason,
                                          call.usage["output_tokens"]))
        await resp.write_eof()
        return resp
