"""The recognizer (qwen3-asr-flash, compatible mode) and the voice (qwen3-tts-flash, native endpoint) on the
DashScope stand-in, strict the way the service documents them (see the project's protocol notes):

    recognizer  POST /compatible-mode/v1/chat/completions with a qwen3-asr-* model: an optional system message,
        exactly one user message holding exactly one input_audio part whose data is a data: URL (bare base64
        and URLs refused), at most 10 MB after base64 and 300 s, a container the recognizer lists;
        `asr_options` top-level ({"language": one of the listed codes, "enable_itn": bool}); stream optional,
        `stream_options` only with stream; no audio output. Answers "[fake-asr] " + the tones heard over the
        whole item (nothing at all for silence), annotations {"type": "audio_info", "language": the pin or
        "en", "emotion": "neutral"}, usage 25 tokens per started second and `seconds`.
    voice       POST /api/v1/services/aigc/multimodal-generation/generation with a qwen3-tts-* model:
        input {"text" (1-600 characters), "voice" (a listed one), "language_type"}; answers a URL on the
        stand-in's own origin (or `tts_url_base`) where a 24 kHz mono WAV of a 587 Hz tone waits, 0.8 s
        plus 1 s per 250 characters; usage {"characters"}.

Each request is recorded in `fake.calls` with `task` "asr" or "tts"; every GET of a voice's audio goes to
`speech.fetches`.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import json
import math
import re
import time
import uuid
import wave
from typing import TYPE_CHECKING

import numpy as np
from aiohttp import web

if TYPE_CHECKING:
    from tests.fakes.dashscope import Call, FakeDashScope

ASR_MODELS = {"qwen3-asr-flash", "qwen3-asr-flash-2025-09-08", "qwen3-asr-flash-2026-02-10"}
ASR_SECONDS = 300
ASR_MAX_B64 = 10 * 1024 * 1024
ASR_TOKENS_PER_SECOND = 25
ASR_LANGUAGES = {"zh", "yue", "en", "ja", "de", "ko", "ru", "fr", "pt", "ar", "it", "es", "hi", "id", "th", "tr",
                 "uk", "vi", "cs", "da", "fil", "fi", "is", "ms", "no", "pl", "sv"}
ASR_FORMATS = {"aac", "amr", "flac", "mp3", "ogg", "opus", "wav", "webm", "mp4"}
ASR_MARK = "[fake-asr]"

TTS_MODELS = {"qwen3-tts-flash", "qwen3-tts-flash-2025-11-27", "qwen3-tts-flash-2025-09-18"}
TTS_MAX_CHARS = 600
TTS_RATE = 24_000
TTS_HZ = 587
TTS_LANGUAGES = {"auto", "chinese", "english", "german", "italian", "portuguese", "spanish", "japanese", "korean",
                 "french", "russian"}
TTS_VOICES = {"Cherry", "Serena", "Ethan", "Chelsie", "Momo", "Vivian", "Moon", "Maia", "Kai", "Nofish", "Bella",
              "Jennifer", "Ryan", "Katerina", "Aiden", "Eldric Sage", "Mia", "Mochi", "Bellona", "Vincent", "Bunny",
              "Neil", "Elias", "Arthur", "Nini", "Seren", "Pip", "Stella", "Jada", "Dylan", "Sunny", "Li", "Marcus",
              "Roy", "Peter", "Rocky", "Kiki", "Eric"}
_DATA_URL = re.compile(r"^data:([^,;]*);base64,")


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def tts_seconds(chars: int) -> float:
    return min(4.0, 0.8 + chars / 250)


def tts_wav(chars: int) -> bytes:
    n = int(tts_seconds(chars) * TTS_RATE)
    pcm = (0.4 * np.sin(2 * np.pi * TTS_HZ * np.arange(n) / TTS_RATE) * 32767).astype("<i2").tobytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(TTS_RATE)
        w.writeframes(pcm)
    return out.getvalue()


def ogg_seconds(raw: bytes) -> float | None:
    """An Ogg Opus file's length from its last page's granule position (48 kHz samples, less the pre-skip
    in OpusHead); None for anything else."""
    head, last = raw.find(b"OpusHead"), raw.rfind(b"OggS")
    if not raw.startswith(b"OggS") or head < 0 or last < 0 or len(raw) < last + 14 or len(raw) < head + 12:
        return None
    granule = int.from_bytes(raw[last + 6:last + 14], "little", signed=True)
    pre_skip = int.from_bytes(raw[head + 10:head + 12], "little")
    return max(0, granule - pre_skip) / 48_000 if granule >= 0 else None


class SpeechRoutes:
    """State for both; the stand-in's endpoints hand requests for these models here."""

    def __init__(self, fake: FakeDashScope) -> None:
        self.fake = fake
        self.tts_url_base: str | None = None      # None: the stand-in's own origin
        self.fetches: list[str] = []               # every GET of a voice's audio (path and query)
        self.fetch_headers: list[dict[str, str]] = []   # the headers each GET came with
        self._audio: dict[str, bytes] = {}
        fake.app.router.add_get("/_tts/{name}", self._fetch)

    # --- the recognizer -----------------------------------------------------------------------------
    async def asr(self, call: Call, body: dict, api: str = "compat") -> web.Response:
        """api "vllm": a Qwen3-ASR model on a vLLM server, which wants raw base64 (it wraps it itself)."""
        from tests.fakes.dashscope import HeardItem, decode, find_tones, sniff
        call.task = "asr"
        call.stream = bool(body.get("stream"))
        if body.get("stream_options") is not None and not call.stream:
            raise Refused(400, "invalid_parameter_error", "stream_options cannot be set when stream is false")
        if "audio" in (body.get("modalities") or ["text"]):
            raise Refused(400, "invalid_parameter_error", "This model generates text only.")
        options = body.get("asr_options")
        call.asr_options = options if isinstance(options, dict) else None
        if options is not None:
            if not isinstance(options, dict):
                raise Refused(400, "invalid_parameter_error", "asr_options must be an object")
            call.language = options.get("language")
            if call.language is not None and call.language not in ASR_LANGUAGES:
                raise Refused(400, "invalid_parameter_error", f"Unsupported language: {call.language}")
            if "enable_itn" in options and not isinstance(options["enable_itn"], bool):
                raise Refused(400, "invalid_parameter_error", "enable_itn must be a boolean")
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise Refused(400, "invalid_parameter_error", "messages is required.")
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        others = [m for m in messages if not isinstance(m, dict) or m.get("role") not in ("user", "system")]
        if len(users) != 1 or others:
            raise Refused(400, "invalid_parameter_error", "Only one user message (and an optional system "
                                                          "message) may be set.")
        for m in messages:
            call.roles.append(m["role"])
            if m["role"] == "system":
                content = m.get("content")
                texts = [content] if isinstance(content, str) else [str(p.get("text", "")) for p in content or []
                                                                     if isinstance(p, dict)]
                call.texts.extend(texts)
        parts = users[0].get("content")
        if not isinstance(parts, list) or len(parts) != 1 or not isinstance(parts[0], dict) \
                or parts[0].get("type") != "input_audio":
            raise Refused(400, "invalid_parameter_error", "The user message must hold exactly one input_audio.")
        data = str((parts[0].get("input_audio") or {}).get("data", ""))
        m = _DATA_URL.match(data)
        if api == "vllm":
            if m:
                raise Refused(400, "BadRequestError", "Incorrect padding")
            encoded, mime = data, ""
        elif not m:
            raise Refused(400, "InternalError.Algo.InvalidParameter", "The provided URL does not appear to be valid.")
        else:
            encoded, mime = data[m.end():], m.group(1)
        if len(data) > ASR_MAX_B64:
            raise Refused(400, "invalid_parameter_error", "The audio exceeds 10 MB after base64 encoding.")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise Refused(400, "invalid_parameter_error", "The audio is not valid base64.") from None
        item = HeardItem(message=len(messages) - 1, role="user", bytes=len(raw), format=sniff(raw), accepted=False,
                         sha256=hashlib.sha256(raw).hexdigest(), mime=mime, b64_chars=len(encoded))
        call.items.append(item)
        if item.format not in ASR_FORMATS:
            self.fake.rejected.append(item.format)
            raise Refused(400, "invalid_parameter_error", "The audio format is not supported")
        seconds_heard = ogg_seconds(raw) if not self.fake.inspect else None
        if seconds_heard is not None:        # a load test: the length from the Ogg pages, no decode
            item.accepted, item.duration = True, seconds_heard
            call.reply = f"{ASR_MARK} {len(raw)} bytes"
        else:
            try:
                # decoded beside the event loop, so calls at once are heard at once, as by the service
                pcm = await asyncio.to_thread(decode, raw)
            except ValueError:
                raise Refused(400, "invalid_parameter_error", "The audio file could not be decoded.") from None
            item.accepted, item.duration = True, len(pcm) / 16_000
            item.tones = await asyncio.to_thread(find_tones, pcm)
            marks = " ".join(f"TONE{hz}@{t:.1f}s" for hz, t in item.tones)
            call.reply = f"{ASR_MARK} {marks}" if marks else ""      # no words in silence
        if item.duration > ASR_SECONDS + 0.5:
            raise Refused(400, "invalid_parameter_error", f"The audio is longer than {ASR_SECONDS} seconds")
        seconds = max(1, math.ceil(item.duration - 1e-6))
        audio, output = seconds * ASR_TOKENS_PER_SECOND, max(1, len(call.reply) // 4)
        call.usage = {"prompt_tokens": audio, "completion_tokens": output, "total_tokens": audio + output,
                      "prompt_tokens_details": {"audio_tokens": audio, "text_tokens": 0},
                      "completion_tokens_details": {"text_tokens": output}, "seconds": seconds}
        annotations = [{"type": "audio_info", "language": call.language or "en", "emotion": "neutral"}]
        cid = "chatcmpl-" + call.request_id
        if call.stream:
            chunks = [{"id": cid, "object": "chat.completion.chunk", "model": call.model,
                       "choices": [{"index": 0, "delta": {"annotations": annotations, "content": call.reply,
                                                          "role": None}, "finish_reason": None}]},
                      {"id": cid, "object": "chat.completion.chunk", "model": call.model,
                       "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "stop"}]}]
            if (body.get("stream_options") or {}).get("include_usage"):
                chunks.append({"id": cid, "object": "chat.completion.chunk", "model": call.model, "choices": [],
                               "usage": call.usage})
            text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
            return web.Response(text=text, content_type="text/event-stream")
        return web.json_response({"id": cid, "object": "chat.completion", "created": int(time.time()),
                                  "model": call.model, "usage": call.usage,
                                  "choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant", "content": call.reply,
                                                           "annotations": annotations}}]})

    # --- the voice ------------------------------------------------------------------------------------
    async def tts(self, request: web.Request, call: Call, body: dict) -> web.Response:
        call.task = "tts"
        inp = body.get("input")
        if not isinstance(inp, dict):
            raise Refused(400, "InvalidParameter", 'Required parameter "input" missing from request.')
        text, voice = inp.get("text"), inp.get("voice")
        if not isinstance(text, str) or not text:
            raise Refused(400, "InvalidParameter", "Required parameter text missing or empty.")
        call.text, call.voice = text, voice if isinstance(voice, str) else None
        if len(text) > TTS_MAX_CHARS:
            raise Refused(400, "InvalidParameter",
                          f"Range of input length should be [1, {TTS_MAX_CHARS}], got {len(text)} characters.")
        if call.voice not in TTS_VOICES:
            raise Refused(400, "InvalidParameter", f"Voice {voice!r} is not supported.")
        language = inp.get("language_type", "Auto")
        if not isinstance(language, str) or language.lower() not in TTS_LANGUAGES:
            raise Refused(400, "InvalidParameter", f"Unsupported language_type: {language!r}")
        name = uuid.uuid4().hex
        self._audio[name] = tts_wav(len(text))
        base = self.tts_url_base or f"{request.scheme}://{request.host}"
        call.tts_url = (f"{base}/_tts/{name}.wav?Expires={int(time.time()) + 86400}&OSSAccessKeyId=LTAIfake"
                        f"&Signature=fake%3D")
        call.reply = ""
        call.usage = {"characters": len(text)}
        return web.json_response({"request_id": call.request_id,
                                  "output": {"finish_reason": "stop",
                                             "audio": {"data": "", "url": call.tts_url, "id": "audio_" + name,
                                                       "expires_at": int(time.time()) + 86400}},
                                  "usage": call.usage})

    async def _fetch(self, request: web.Request) -> web.Response:
        self.fetches.append(request.path_qs)
        self.fetch_headers.append(dict(request.headers))
        name = request.match_info["name"].removesuffix(".wav")
        if name not in self._audio or "Signature" not in request.query:
            return web.Response(status=404, content_type="application/xml",
                                text="<Error><Code>NoSuchKey</Code></Error>")
        return web.Response(body=self._audio[name], content_type="audio/wav")
