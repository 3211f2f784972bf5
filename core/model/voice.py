"""Spoken answers for models that can't speak: the answer's text read out by a voice model (qwen3-tts-flash,
EARSHOT_TTS_MODEL) on DashScope's native endpoint.

The service answers each request with the URL of a 24 kHz WAV file (non-streamed) on an Alibaba OSS host
rather than DashScope's own. That URL comes from the answer, so it is fetched only from DashScope's origin or
an Alibaba storage host (`<bucket>.oss-<region>.aliyuncs.com`), without the key, following no redirect, and
at most MAX_WAV_BYTES. Text over the model's per-request limit is cut at sentence ends (then at commas or
spaces, last at the limit), and the pieces' audio is joined with a short pause into one voice note.
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import time
import wave
from typing import Any
from urllib.parse import urlsplit

import httpx

from core.audio import ffmpeg
from core.config import origin
from core.errors import BadModelResponse, ModelAuthError, ModelError, ModelUnavailable
from core.model.dashscope import GENERATION_PATH, JSON_TYPE, RetryPolicy, _error_for, _retry_after
from core.model.model_api import SPEECH_RATE, ModelAnswer
from core.values import Usage
from core.words import messages as msgs

log = logging.getLogger("earshot.voice")

MAX_CHARS = 600                      # qwen3-tts-flash: characters of text per request
MAX_WAV_BYTES = 16 * 1024 * 1024     # one piece's audio: 600 characters are well under a minute
PAUSE_SECONDS = 0.3                  # between pieces of a long answer
# Alibaba Cloud OSS buckets, e.g. dashscope-result-bj.oss-cn-beijing.aliyuncs.com
_OSS_HOST = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}\.oss(-[a-z0-9-]+)?\.aliyuncs\.com$")
_SENTENCE_END = re.compile(r"(?<=[.!?…。！？])[\"'”’)\]]*\s+|(?<=[。！？])")
_SOFT_BREAK = re.compile(r"[,;:，、；：]\s*|\s+")


def split_text(text: str, limit: int = MAX_CHARS) -> list[str]:
    """`text` in pieces of at most `limit` characters, cut at sentence ends where it can be (sentences packed
    together up to the limit), else at a comma or a space, else at the limit itself."""
    text = " ".join(text.split())
    sentences = [s for s in _SENTENCE_END.split(text) if s and s.strip()]
    pieces: list[str] = []
    current = ""
    for sentence in sentences:
        sentence = sentence.strip()
        while len(sentence) > limit:                 # one sentence longer than a request takes
            cut = max((m.end() for m in _SOFT_BREAK.finditer(sentence, 0, limit) if m.end() <= limit), default=0)
            cut = cut if cut > limit // 2 else limit
            if current:
                pieces.append(current)
                current = ""
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if not sentence:
            continue
        if current and len(current) + 1 + len(sentence) > limit:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}" if current else sentence
    if current:
        pieces.append(current)
    return pieces


def allowed_audio_url(url: str, native_base: str) -> bool:
    """Whether a URL from the voice's answer may be fetched: DashScope's own origin, or an Alibaba OSS host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return False
    if origin(url) == origin(native_base):
        return True
    return parts.scheme in ("http", "https") and parts.port in (None, 80, 443) \
        and bool(_OSS_HOST.match(parts.hostname.lower()))


def wav_to_pcm(data: bytes, *, timeout: float = 60) -> bytes:
    """s16le mono PCM at SPEECH_RATE from a WAV file (as it comes, or through ffmpeg when it differs)."""
    try:
        with wave.open(io.BytesIO(data)) as w:
            if (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SPEECH_RATE):
                return w.readframes(w.getnframes())
    except (wave.Error, EOFError):
        pass
    return ffmpeg.run(["-i", "pipe:0", "-f", "s16le", "-ac", "1", "-ar", str(SPEECH_RATE), "pipe:1"],
                      input=data, timeout=timeout)


class VoiceClient(RetryPolicy):
    """Speaks text with a voice model. Safe to share across tasks; close with `aclose()`."""

    def __init__(self, api_key: str, base_url: str, model: str, *, timeout: float = 120,
                 retry_budget: float = 60, max_concurrency: int = 16,
                 transport: httpx.AsyncBaseTransport | None = None, max_attempts: int = 5,
                 backoff: float = 1.0, max_chars: int = MAX_CHARS) -> None:
        self._setup(api_key, base_url, model, timeout=timeout, retry_budget=retry_budget,
                    max_concurrency=max_concurrency, transport=transport, max_attempts=max_attempts,
                    backoff=backoff)
        self.service = "DashScope (voice)"
        self.url = self.base_url + GENERATION_PATH
        self.max_chars = max_chars

    async def speak(self, text: str, voice: str, *, language_type: str = "Auto") -> ModelAnswer:
        """`text` spoken in `voice`: the answer's `speech` is s16le mono PCM at SPEECH_RATE, its usage the
        characters billed (as output tokens)."""
        if not self._api_key:
            raise ModelAuthError(msgs.NO_KEY_CLI)
        pieces = split_text(text, self.max_chars)
        pcm = bytearray()
        ids: list[str] = []
        for k, piece in enumerate(pieces):
            async for attempt in self._retrying():
                with attempt:
                    audio, request_id = await self._one(piece, voice, language_type)
            if k:
                pcm += bytes(int(PAUSE_SECONDS * SPEECH_RATE) * 2)
            pcm += audio
            if request_id:
                ids.append(request_id)
        chars = sum(len(p) for p in pieces)
        return ModelAnswer(text, Usage(output_tokens=chars), ids[-1] if ids else None, "stop", bytes(pcm))

    async def _one(self, text: str, voice: str, language_type: str) -> tuple[bytes, str | None]:
        body = json.dumps({"model": self.model, "input": {"text": text, "voice": voice,
                                                          "language_type": language_type}},
                          ensure_ascii=False).encode("utf-8")
        headers = {"Authorization": f"Bearer {self._api_key}", "Content-Type": JSON_TYPE, "Accept": JSON_TYPE}
        async with self._sem:
            started = time.monotonic()
            try:
                async with asyncio.timeout(self.timeout):
                    resp = await self._http.post(self.url, content=body, headers=headers)
                    data = self._answer(resp)
                    url = str(((data.get("output") or {}).get("audio") or {}).get("url") or "")
                    if not allowed_audio_url(url, self.base_url):
                        err = BadModelResponse(msgs.BAD_MODEL_RESPONSE, f"{self.service} pointed its audio at "
                                               f"{origin(url) if url else 'nothing'}, which is neither DashScope "
                                               "nor Alibaba's storage: not fetched")
                        err.retryable = False
                        raise err
                    wav = await self._fetch(url)
            except (TimeoutError, httpx.TransportError) as exc:
                log.info("%s %s failed after %.2fs: %s", self.service, self.model, time.monotonic() - started,
                         type(exc).__name__)
                raise ModelUnavailable(msgs.MODEL_DOWN, msgs.MODEL_DOWN_OP.format(
                    service=self.service, detail=self._redact(f"{type(exc).__name__}: {str(exc)[:200]}"))) from None
        pcm = await asyncio.to_thread(wav_to_pcm, wav, timeout=self.timeout)
        log.info("%s %s spoke %d characters request_id=%s %.2fs", self.service, self.model, len(text),
                 data.get("request_id"), time.monotonic() - started)
        return pcm, data.get("request_id")

    def _answer(self, resp: httpx.Response) -> dict[str, Any]:
        try:
            data = resp.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            err = BadModelResponse(msgs.BAD_MODEL_RESPONSE, f"{self.service} answered HTTP {resp.status_code} "
                                   "with a body that is not JSON")
            err.retryable = resp.status_code >= 500
            raise err
        if resp.status_code != 200 or (data.get("code") and not data.get("output")):
            raise _error_for(resp.status_code, str(data.get("code") or ""),
                             self._redact(str(data.get("message") or "")), model=self.model,
                             request_id=data.get("request_id"), retry_after=_retry_after(resp.headers),
                             service=self.service)
        return data

    async def _fetch(self, url: str) -> bytes:
        """The audio behind the URL the answer gave: no key sent, no redirect followed, bounded in size."""
        async with self._http.stream("GET", url) as resp:
            if resp.status_code != 200:
                err: ModelError = BadModelResponse(msgs.BAD_MODEL_RESPONSE, f"{self.service}'s audio at "
                                                   f"{origin(url)} answered HTTP {resp.status_code}")
                err.retryable = resp.status_code >= 500
                raise err
            out = bytearray()
            async for chunk in resp.aiter_bytes():
                out += chunk
                if len(out) > MAX_WAV_BYTES:
                    err = BadModelResponse(msgs.BAD_MODEL_RESPONSE, f"{self.service}'s audio is over "
                                           f"{MAX_WAV_BYTES // 2**20} MB: not taken")
                    err.retryable = False
                    raise err
            return bytes(out)
