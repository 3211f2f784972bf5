"""OpenAI-compatible chat completions, as DashScope's compatible mode (Qwen-Omni) and a vLLM server serve
them, added to the DashScope stand-in (tests/fakes/dashscope.py) on the same loopback server:

    POST /compatible-mode/v1/chat/completions   DashScope: Bearer key, stream only, one audio item per
        request as input_audio with a data: URL (bare base64 and audio_url refused), at most the model's
        seconds and bytes, spoken answers (voice from the model's list, format "wav") as base64 24 kHz
        s16le mono PCM deltas; usage in a last chunk when stream_options.include_usage is set.
    POST /v1/chat/completions                   vLLM: optional key, raw base64 in input_audio.data (a data:
        prefix fails with "Incorrect padding", as vLLM wraps it in its own), text only, Qwen2-Audio
        refuses audio over 30 s; streamed or not.

Each request is recorded in `fake.calls` like a native one, with `api` "compat" or "vllm", the `voice`
asked for and the `speech_bytes` sent. Answers name the tones heard over the whole item (not only 30 s).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import subprocess
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from aiohttp import web

if TYPE_CHECKING:
    from tests.fakes.dashscope import Call, FakeDashScope

COMPAT_PATH = "/compatible-mode/v1/chat/completions"
VLLM_PATH = "/v1/chat/completions"
SPEECH_RATE = 24_000
SPOKEN_HZ = 523                     # the spoken answer is this tone, 0.1 s per word (at most 2 s)
MB = 1024 * 1024


@dataclass(frozen=True)
class Model:
    seconds: float
    max_bytes: int
    tokens_per_second: float
    max_output: int
    voices: tuple[str, ...] = ()     # empty: can't speak


TURBO_VOICES = ("Cherry", "Serena", "Ethan", "Chelsie")
OMNI = {
    "qwen3-omni-flash": Model(1200, 100 * MB, 12.5, 16384, ("Cherry", "Ethan", "Jennifer", "Ryan", "Katerina")),
    "qwen-omni-turbo": Model(180, 10 * MB, 25, 2048, TURBO_VOICES),
    "qwen-omni-turbo-latest": Model(180, 10 * MB, 25, 2048, TURBO_VOICES),
    "qwen2.5-omni-7b": Model(180, 10 * MB, 25, 2048, ("Ethan", "Chelsie")),
    # the 2026 Omni pages' names: served with qwen3-omni-flash's figures (their own are unpublished)
    "qwen3.5-omni-plus": Model(1200, 100 * MB, 12.5, 16384, ("Cherry", "Ethan", "Jennifer", "Ryan", "Tina")),
    "qwen3.8-omni-flash": Model(1200, 100 * MB, 12.5, 16384),
}
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|latest)$")


def omni_model(name: object) -> Model | None:
    """The Omni row a compatible-mode name resolves to: exact, or a dated/-latest snapshot of a known one."""
    if not isinstance(name, str):
        return None
    if name in OMNI:
        return OMNI[name]
    m = _SNAPSHOT.search(name)
    return OMNI.get(name[:m.start()]) if m else None
VLLM = {
    "Qwen/Qwen2-Audio-7B-Instruct": Model(30, 64 * MB, 25, 4096),
    "Qwen/Qwen2.5-Omni-7B": Model(160, 64 * MB, 25, 4096),
}
_PREFIX = re.compile(r"^data:[^,;]*;base64,")


VLLM_ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 500: "InternalServerError"}


def vllm_error(status: int, message: str) -> dict[str, Any]:
    """vLLM's ErrorInfo: `code` is the HTTP status as a number."""
    return {"message": message, "type": VLLM_ERROR_TYPES.get(status, "InternalServerError"), "param": None,
            "code": status}


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class CompatRoutes:
    """Registers both endpoints on the DashScope stand-in's app; state lives on the stand-in."""

    def __init__(self, fake: FakeDashScope) -> None:
        self.fake = fake
        self.vllm_key: str | None = None        # None: the vLLM server wants no key
        self.vllm_recognizers: set[str] = set()  # recognizer models the vLLM server runs (Qwen3-ASR)
        fake.app.router.add_post(COMPAT_PATH, self._compat)
        fake.app.router.add_post(VLLM_PATH, self._vllm)

    async def _compat(self, request: web.Request) -> web.StreamResponse:
        return await self._tracked(request, "compat")

    async def _vllm(self, request: web.Request) -> web.StreamResponse:
        return await self._tracked(request, "vllm")

    async def _tracked(self, request: web.Request, api: str) -> web.StreamResponse:
        fake = self.fake
        fake.in_flight += 1
        fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            return await self._serve(request, api)
        finally:
            fake.in_flight -= 1

    # --- one request ------------------------------------------------------------------------------
    async def _serve(self, request: web.Request, api: str) -> web.StreamResponse:
        from tests.fakes.dashscope import Call
        fake = self.fake
        call = Call(request_id=str(uuid.uuid4()), headers=dict(request.headers), stream=False)
        call.api = api
        fake.calls.append(call)
        if fake.latency:
            await asyncio.sleep(fake.latency)
        key = fake.api_key if api == "compat" else self.vllm_key
        if key is not None and request.headers.get("Authorization") != f"Bearer {key}":
            return self._error(call, 401, "invalid_api_key" if api == "compat" else "Unauthorized",
                               "Incorrect API key provided.")
        failure = call.failure = fake.failures.popleft() if fake.failures else None
        if failure and failure.hang and not await fake._stall(request, failure.hang):
            call.status = 499
            return web.Response(status=499)
        if failure and failure.status is not None and not failure.mid_stream:
            if failure.html:
                call.status = failure.status
                return web.Response(status=failure.status, text="<html><body>502 Bad Gateway</body></html>",
                                    content_type="text/html")
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else None
            return self._error(call, failure.status, failure.code, failure.message, headers)
        from tests.fakes.speech import ASR_MODELS, Refused
        try:
            peek = json.loads(await request.read())
        except ValueError:
            peek = None
        if isinstance(peek, dict) and peek.get("model") in ASR_MODELS | self.vllm_recognizers:
            call.body, call.model = peek, peek["model"]
            if api == "compat" or call.model in self.vllm_recognizers:
                try:
                    return await self.fake.speech.asr(call, peek, api)
                except Refused as r:
                    return self._error(call, r.status, r.code, r.message)
        try:
            body, model = await self._check(request, call, api)
        except _Refused as r:
            return self._error(call, r.status, r.code, r.message)
        call.reply, call.usage = self._answer(call, model, body)
        if call.stream:
            return await self._sse(request, call, body, failure if failure and failure.mid_stream else None)
        return web.json_response({"id": "chatcmpl-" + call.request_id, "object": "chat.completion",
                                  "model": call.model, "usage": call.usage,
                                  "choices": [{"index": 0, "finish_reason": call.finish_reason,
                                               "message": {"role": "assistant", "content": call.reply}}]})

    async def _check(self, request: web.Request, call: Call, api: str) -> tuple[dict, Model]:
        try:
            body = json.loads(await request.read())
        except ValueError:
            raise _Refused(400, "invalid_parameter_error", "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise _Refused(400, "invalid_parameter_error", "The request body must be a JSON object.")
        call.body, call.model, call.stream = body, body.get("model"), bool(body.get("stream"))
        found = omni_model(call.model) if api == "compat" else VLLM.get(str(call.model))
        if found is None:
            raise _Refused(404, "model_not_found" if api == "compat" else "NotFoundError",
                           f"The model `{call.model}` does not exist.")
        model = found
        if api == "compat" and not call.stream:
            raise _Refused(400, "invalid_parameter_error", "This model only support stream mode, please enable "
                                                           "the stream parameter to access the model.")
        max_tokens = body.get("max_tokens")
        call.parameters = {"max_tokens": max_tokens}
        if max_tokens is not None and (not isinstance(max_tokens, int) or not 1 <= max_tokens <= model.max_output):
            raise _Refused(400, "invalid_parameter_error", f"Range of max_tokens should be [1, {model.max_output}]")
        modalities = body.get("modalities") or ["text"]
        if "audio" in modalities:
            if api == "vllm" or not model.voices:
                raise _Refused(400, "BadRequestError" if api == "vllm" else "invalid_parameter_error",
                               "This model generates text only.")
            audio = body.get("audio") or {}
            if audio.get("voice") not in model.voices:
                raise _Refused(400, "invalid_parameter_error",
                               f"Voice {audio.get('voice')!r} is not supported by {call.model}.")
            if audio.get("format") != "wav":
                raise _Refused(400, "invalid_parameter_error", "audio.format only supports wav.")
            call.voice = audio["voice"]
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _Refused(400, "invalid_parameter_error", "messages is required.")
        audio_items = 0
        for m, msg in enumerate(messages):
            role = msg.get("role") if isinstance(msg, dict) else None
            if role not in ("system", "user", "assistant"):
                raise _Refused(400, "invalid_parameter_error", f"messages[{m}]: unknown role")
            call.roles.append(role)
            content = msg.get("content")
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
            if not isinstance(parts, list):
                raise _Refused(400, "invalid_parameter_error", f"messages[{m}].content is invalid")
            for part in parts:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    call.texts.append(str(part.get("text", "")))
                    continue
                if kind not in ("input_audio", "audio_url"):
                    raise _Refused(400, "invalid_parameter_error", f"Invalid content type: {kind}")
                if role != "user":
                    raise _Refused(400, "invalid_parameter_error", "Only user messages may hold audio.")
                audio_items += 1
                if api == "compat" and audio_items > 1:
                    raise _Refused(400, "invalid_parameter_error", "Only one audio file per request is supported.")
                await self._check_audio(call, m, part, api, model)
        return body, model

    async def _check_audio(self, call: Call, m: int, part: dict, api: str, model: Model) -> None:
        from tests.fakes.dashscope import ACCEPTED_FORMATS, HeardItem, decode, find_tones, sniff
        kind = part["type"]
        if kind == "audio_url":
            if api == "compat":
                raise _Refused(400, "invalid_parameter_error",
                               "Invalid value: audio_url. Supported values are: 'text','image_url','video_url' "
                               "and 'video'.")
            url = str((part.get("audio_url") or {}).get("url", ""))
            if not _PREFIX.match(url):
                raise _Refused(400, "BadRequestError", "Only data: URLs are served here.")
            encoded = _PREFIX.sub("", url)
        else:
            data = str((part.get("input_audio") or {}).get("data", ""))
            if api == "compat":
                if not _PREFIX.match(data):
                    raise _Refused(400, "InternalError.Algo.InvalidParameter",
                                   "The provided URL does not appear to be valid.")
                encoded = _PREFIX.sub("", data)
            else:
                if data.startswith("data:"):        # vLLM builds data:audio/{format};base64,{data} itself
                    raise _Refused(400, "BadRequestError", "Incorrect padding")
                encoded = data
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise _Refused(400, "invalid_parameter_error", "The audio is not valid base64.") from None
        if len(encoded) > model.max_bytes:
            raise _Refused(400, "invalid_parameter_error", f"The audio exceeds {model.max_bytes} bytes.")
        heard = HeardItem(message=m, role="user", bytes=len(raw), format=sniff(raw), accepted=False)
        call.items.append(heard)
        if api == "compat" and heard.format not in ACCEPTED_FORMATS:
            self.fake.rejected.append(heard.format)
            raise _Refused(400, "invalid_parameter_error", f"The audio format is not supported: {heard.format}")
        try:
            pcm = await asyncio.to_thread(decode, raw)
        except (ValueError, subprocess.TimeoutExpired):
            raise _Refused(400, "invalid_parameter_error", "The audio file could not be decoded.") from None
        heard.accepted, heard.duration = True, len(pcm) / 16_000
        heard.over_30s = heard.duration > 30.05
        if heard.duration > model.seconds + 0.5:
            if api == "vllm":     # Qwen2-Audio's features are fixed at 30 s; longer input fails the engine
                raise _Refused(400, "BadRequestError",
                               f"input_features dim[2] expected 3000, got {int(heard.duration * 100)}")
            raise _Refused(400, "invalid_parameter_error", f"The audio is longer than {model.seconds:g} seconds.")
        tones = await asyncio.to_thread(find_tones, pcm)
        heard.tones = tones
        marks = " ".join(f"{hz}Hz@{t:.1f}s" for hz, t in tones) or "silence"
        heard.heard = f"heard {marks} ({heard.duration:.1f}s)"

    # --- answers ------------------------------------------------------------------------------------
    def _answer(self, call: Call, model: Model, body: dict) -> tuple[str, dict[str, Any]]:
        text, usage = self.fake._answer(call)      # the same words a native request would get
        audio = sum(int(np.ceil(max(1.0, i.duration or 0) * model.tokens_per_second)) for i in call.items)
        prompt = audio + sum(len(t) for t in call.texts) // 4 + 4
        words = len(text.split())
        spoken = min(2.0, 0.1 * words) if call.voice else 0.0
        audio_out = int(spoken * 12.5)
        output = max(1, len(text) // 4)
        call.speech_bytes = int(spoken * SPEECH_RATE) * 2
        if call.api == "vllm":      # vLLM counts audio inside prompt_tokens and reports no audio_tokens
            return text, {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output,
                          "prompt_tokens_details": None}
        return text, {"prompt_tokens": prompt, "completion_tokens": output + audio_out,
                      "total_tokens": prompt + output + audio_out,
                      "prompt_tokens_details": {"audio_tokens": audio, "text_tokens": prompt - audio},
                      "completion_tokens_details": {"audio_tokens": audio_out, "text_tokens": output}}

    def _error(self, call: Call, status: int, code: str, message: str,
               headers: dict[str, str] | None = None) -> web.Response:
        call.status, call.code = status, code
        if call.api == "vllm":
            # vLLM: `code` is the HTTP status as a number, no request id; a wrong key is a bare string
            if status == 401:
                return web.json_response({"error": "Unauthorized"}, status=401, headers=headers)
            return web.json_response({"error": vllm_error(status, message)}, status=status, headers=headers)
        return web.json_response({"error": {"code": code, "param": None, "message": message,
                                            "type": "invalid_request_error"},
                                  "id": "chatcmpl-" + call.request_id, "request_id": call.request_id},
                                 status=status, headers=headers)

    async def _sse(self, request: web.Request, call: Call, body: dict, mid: Any) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream;charset=UTF-8"})
        await resp.prepare(request)
        cid = "chatcmpl-" + call.request_id

        async def send(data: dict[str, Any]) -> None:
            await resp.write(f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode())
            if self.fake.chunk_delay:
                await asyncio.sleep(self.fake.chunk_delay)

        def chunk(delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
            return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": call.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": reason}], "usage": None}

        # qwen-omni-turbo speaking puts its words in delta.audio.transcript; the others in delta.content
        transcript = bool(call.voice) and str(call.model).startswith("qwen-omni-turbo")
        pieces = re.findall(r"\S+\s*", call.reply or "") or [call.reply or ""]
        for k, piece in enumerate(pieces):
            await send(chunk({"audio": {"transcript": piece}} if transcript else {"content": piece}))
            if mid is not None and k == 0:
                call.status, call.code = mid.status, mid.code
                if call.api == "vllm":     # vLLM: the error object, then [DONE]
                    await send({"error": vllm_error(mid.status, mid.message)})
                    await resp.write(b"data: [DONE]\n\n")
                else:
                    await send({"error": {"code": mid.code, "message": mid.message, "type": "server_error"}})
                return resp
        n = call.speech_bytes // 2
        pcm = (0.4 * np.sin(2 * np.pi * SPOKEN_HZ * np.arange(n) / SPEECH_RATE) * 32767).astype("<i2").tobytes()
        step = SPEECH_RATE // 2 * 2                  # half a second per delta
        for a in range(0, len(pcm), step):
            await send(chunk({"audio": {"data": base64.b64encode(pcm[a:a + step]).decode(), "id": "audio_" + cid,
                                        "expires_at": int(time.time()) + 3600}}))
        await send(chunk({"content": ""}, call.finish_reason))
        if (body.get("stream_options") or {}).get("include_usage"):
            await send({"id": cid, "object": "chat.completion.chunk", "model": call.model, "choices": [],
                        "usage": call.usage})
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
