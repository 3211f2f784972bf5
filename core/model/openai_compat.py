"""Client for OpenAI-compatible chat completions: DashScope's compatible mode (Qwen-Omni) and vLLM.

Speaks `/chat/completions` itself over the pooled httpx client every model client has (RetryPolicy), with
earshot's bounded retries, backoff and typed errors, as for the native API (core.model.dashscope). No openai
SDK: importing it (hundreds of pydantic models) cost every one-shot `earshot transcribe` by the recognizer
~0.25 s of CPU and ~14 MB, and it built pydantic objects for every chunk of a stream (~80 µs each, against
~6 µs here); the protocol is plain JSON in, and JSON or server-sent events (`data: {...}` lines, ending with
`data: [DONE]`) out. What the SDK did that servers rely on is kept: the same request bodies, a Bearer key
only when there is one (vLLM may want none), an `{"error": ...}` object inside a stream taken as the call's
failure, an error's `code` and `message` read from the body's "error" object (else the whole body).

The two services differ in ways that stay inside this module:

- DashScope wants audio as a `data:;base64,` URL and refuses bare base64; vLLM wraps what it gets in its
  own data: URL, so it needs bare base64 (a data: prefix fails there with "Incorrect padding").
- DashScope's Omni models answer only when streamed; vLLM streams too, so one path serves both.
- Spoken answers (DashScope only) arrive as base64 24 kHz s16le mono PCM in `delta.audio.data`; the
  words arrive in `delta.content`, or in `delta.audio.transcript` on qwen-omni-turbo.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from typing import Any

import httpx

from core.errors import BadModelResponse, ModelAuthError, ModelError, QuotaExhausted
from core.model import prompts
from core.model.dashscope import DATA_URI_PREFIX, SSE_TYPE, RetryPolicy, _error_for, _retry_after, _sse_events
from core.model.model_api import ModelAnswer, OnDelta
from core.values import Usage
from core.words import messages as msgs

log = logging.getLogger("earshot.openai_compat")

CHAT_PATH = "/chat/completions"
JSON_TYPE = "application/json"
STREAM_FAILED = "An error occurred during streaming"    # an error event without a message of its own


def _get(obj: Any, name: str) -> Any:
    """A field of a JSON object; None when it's missing or the value isn't an object."""
    return obj.get(name) if isinstance(obj, dict) else None


def usage_of(raw: Any) -> Usage:
    """OpenAI-style usage onto earshot's: prompt tokens split into audio and the rest; output is all generated."""
    if not isinstance(raw, dict):
        return Usage()
    prompt, completion = int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0)
    audio = int(_get(raw.get("prompt_tokens_details"), "audio_tokens") or 0)
    return Usage(audio, max(0, prompt - audio), completion)


def _numeric(value: Any) -> int | None:
    """vLLM's `code`: the HTTP status as a number (or its digits); DashScope's codes are words."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit() and len(value) == 3:
        return int(value)
    return None


def _code(body: dict) -> str:
    """The error's code as earshot's errors name it: DashScope's word, or vLLM's type for a numeric code."""
    code = body.get("code")
    if _numeric(code) is not None:
        return str(body.get("type") or "")
    return str(code or body.get("type") or "")


def _stream_status(body: dict) -> int:
    """The status an error inside a 200 stream stands for: vLLM's numeric code is one (500: the engine
    failed, retryable; 400: the input's fault); a DashScope word is the request's fault unless it names a
    failure of the service (core.model.dashscope._error_for tells); no code at all: the server failed."""
    number = _numeric(body.get("code"))
    if number is not None:
        return number
    if body.get("code"):
        return 400
    return 500 if not str(body.get("type") or "").startswith("BadRequest") else 400


class OpenAICompatClient(RetryPolicy):
    """Calls a model over `/chat/completions`. dashscope=True: DashScope's compatible mode; False: vLLM or
    another self-hosted server. The key (if any) goes only to `base_url`."""

    # the same retry policy, transport errors and redaction as the native client (RetryPolicy)

    def __init__(self, api_key: str, base_url: str, model: str, *, dashscope: bool, timeout: float = 120,
                 retry_budget: float = 60, max_concurrency: int = 16,
                 transport: httpx.AsyncBaseTransport | None = None, max_attempts: int = 5,
                 backoff: float = 1.0, system_when_speaking: bool = True) -> None:
        self._setup(api_key, base_url, model, timeout=timeout, retry_budget=retry_budget,
                    max_concurrency=max_concurrency, transport=transport, max_attempts=max_attempts,
                    backoff=backoff)
        self.dashscope = dashscope
        self.service = "DashScope (compatible mode)" if dashscope else f"The model server at {self.base_url}"
        self.system_when_speaking = system_when_speaking
        self.url = self.base_url + CHAT_PATH

    @property
    def _key_variable(self) -> str:
        return "DASHSCOPE_API_KEY" if self.dashscope else "EARSHOT_OPENAI_API_KEY"

    # --- request shape ----------------------------------------------------------------------------
    def _headers(self, stream: bool) -> dict[str, str]:
        """No Authorization header without a key: a vLLM server started without --api-key wants none."""
        headers = {"Content-Type": JSON_TYPE, "Accept": SSE_TYPE if stream else JSON_TYPE}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _audio_part(self, value: str) -> dict[str, Any]:
        data = value if self.dashscope else value.removeprefix(DATA_URI_PREFIX)
        return {"type": "input_audio", "input_audio": {"data": data, "format": "mp3"}}

    def _convert(self, messages: list[dict], speaking: bool) -> list[dict]:
        """earshot's neutral messages in this protocol's shape (assistant and system turns: plain text)."""
        out: list[dict] = []
        for m in messages:
            items = m["content"] if isinstance(m["content"], list) else [{"text": str(m["content"])}]
            if m["role"] != "user":
                text = "".join(i.get("text", "") for i in items)
                if m["role"] == "system" and speaking and not self.system_when_speaking:
                    # this model ignores a system prompt when it speaks: set the role in a first exchange
                    out += [{"role": "user", "content": text},
                            {"role": "assistant", "content": prompts.ROLE_ACCEPTED}]
                else:
                    out.append({"role": m["role"], "content": text})
                continue
            parts = [self._audio_part(i["audio"]) if "audio" in i else {"type": "text", "text": i["text"]}
                     for i in items]
            out.append({"role": "user", "content": parts})
        return out

    # --- errors -----------------------------------------------------------------------------------
    def _bad_answer(self, detail: str, status: int | None = None) -> BadModelResponse:
        """An answer that isn't one (HTML from a proxy, a wrong base URL): the operator is told the setting."""
        return BadModelResponse(msgs.BAD_MODEL_RESPONSE, msgs.BAD_RESPONSE_COMPAT_OP.format(
            service=self.service, variable=self._base_variable, detail=detail), status=status)

    def _page(self, resp: httpx.Response) -> BadModelResponse:
        """An answer that isn't JSON: a gateway's 5xx page may clear up; a 200 or 4xx page (a wrong base URL, a
        captive proxy) will not."""
        snippet = " ".join(self._redact(resp.text).split())[:80]
        err = self._bad_answer(f"HTTP {resp.status_code}: {snippet!r}", resp.status_code)
        err.retryable = resp.status_code >= 500 or resp.status_code in (408, 429)
        return err

    def _status_error(self, resp: httpx.Response) -> ModelError:
        """The error a non-2xx answer stands for. Its `code` and `message` come from the body's "error"
        object, else from the body itself (vLLM's 401 has a bare string there: the message)."""
        status = resp.status_code
        try:
            outer = json.loads(resp.text)
        except ValueError:
            outer = None
        if not isinstance(outer, (dict, list)):
            return self._page(resp)
        inner = outer.get("error", outer) if isinstance(outer, dict) else outer
        body = inner if isinstance(inner, dict) else {}
        code = _code(body)
        message = self._redact(str(body.get("message") or (inner if isinstance(inner, str) else "")))
        request_id = (outer.get("request_id") or outer.get("id")) if isinstance(outer, dict) else None
        err: ModelError = _error_for(status, code, message, model=self.model,
                         request_id=request_id or resp.headers.get("x-request-id"),
                         retry_after=_retry_after(resp.headers), service=self.service)
        shown = code or f"HTTP {status}"
        if isinstance(err, ModelAuthError) and (status == 401 or "api_key" in code.lower()
                                                or code == "InvalidApiKey"):
            err.operator_message = msgs.BAD_KEY_COMPAT_OP.format(service=self.service, code=shown,
                                                                 variable=self._key_variable)
        elif isinstance(err, QuotaExhausted) and "freetieronly" in code.lower():
            err.operator_message = msgs.FREE_TIER_ONLY_OP.format(model=self.model, code=shown, detail=message)
        elif isinstance(err, ModelAuthError) and status == 404:
            err.operator_message = msgs.MODEL_NOT_FOUND_COMPAT_OP.format(service=self.service, model=self.model,
                                                                         code=shown)
        return err

    def _event_error(self, error: Any, request_id: str | None, chunks: int) -> ModelError:
        """An `{"error": ...}` event inside a 200 stream: the call failed (vLLM: the engine; DashScope: the
        service), with a status the error's code stands for."""
        body = error if isinstance(error, dict) else {}
        text = body.get("message") or (error if isinstance(error, str) else STREAM_FAILED)
        err = _error_for(_stream_status(body), _code(body), self._redact(str(text)), model=self.model,
                         request_id=request_id, service=self.service)
        log.warning("%s %s failed inside the stream after %d chunks: %s", self.service, self.model, chunks,
                    err.operator_message)
        return err

    @property
    def _base_variable(self) -> str:
        return "DASHSCOPE_COMPAT_BASE_URL" if self.dashscope else "EARSHOT_OPENAI_BASE_URL"

    def _failed(self, exc: Exception, started: float) -> ModelError:
        log.info("%s %s failed after %.2fs: %s", self.service, self.model, time.monotonic() - started,
                 type(exc).__name__)
        return self._transport_error(exc)

    # --- the call ---------------------------------------------------------------------------------
    async def generate(self, messages: list[dict], *, max_tokens: int | None = None,
                       on_delta: OnDelta | None = None, voice: str | None = None) -> ModelAnswer:
        """Ask the model (always streamed); text pieces go to on_delta as they come; with voice, the
        answer is also spoken (callers check the catalog that the model speaks)."""
        if self.dashscope and not self._api_key:
            raise ModelAuthError(msgs.NO_KEY_CLI)
        body: dict[str, Any] = {"model": self.model, "messages": self._convert(messages, voice is not None),
                                "stream": True, "stream_options": {"include_usage": True}}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if voice is not None:
            body["modalities"] = ["text", "audio"]
            body["audio"] = {"voice": voice, "format": "wav"}   # "wav" is the only value; PCM arrives
        async for attempt in self._retrying():
            with attempt:
                return await self._stream(body, on_delta)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def recognize(self, audio: bytes, *, mime: str = "", fmt: str = "mp3",
                        language: str | None = None) -> ModelAnswer:
        """A transcript by a recognizer (qwen3-asr-flash; Qwen3-ASR on vLLM): the one audio item as it is,
        not streamed; `language` pins the spoken language (else the recognizer detects it). The answer
        carries the language and emotion the recognizer reports."""
        if self.dashscope and not self._api_key:
            raise ModelAuthError(msgs.NO_KEY_CLI)
        encoded = base64.b64encode(audio).decode("ascii")
        data = f"data:{mime};base64,{encoded}" if self.dashscope else encoded
        body: dict[str, Any] = {
            "model": self.model, "stream": False,
            "messages": [{"role": "user", "content": [{"type": "input_audio",
                                                        "input_audio": {"data": data, "format": fmt}}]}],
            "asr_options": {"enable_itn": False, **({"language": language} if language else {})}}
        async for attempt in self._retrying():
            with attempt:
                return await self._recognize_once(body)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _recognize_once(self, body: dict[str, Any]) -> ModelAnswer:
        async with self._sem:
            started = time.monotonic()
            try:
                # the client's timeout bounds each wait (connecting, each read), as for a stream
                resp = await self._http.post(self.url, json=body, headers=self._headers(False))
            except (TimeoutError, httpx.RequestError) as exc:
                raise self._failed(exc, started) from None
        if not resp.is_success:
            raise self._status_error(resp)
        try:
            data = resp.json()
        except ValueError:
            raise self._page(resp) from None
        choices = data.get("choices") if isinstance(data, dict) else None
        if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
            err = self._bad_answer("no choices in the answer")
            err.retryable = False
            raise err
        message = choices[0].get("message") or {}
        content = _get(message, "content")
        text = content if isinstance(content, str) else "".join(
            str(p.get("text", "")) for p in content or [] if isinstance(p, dict))
        info = next((a for a in _get(message, "annotations") or []
                     if isinstance(a, dict) and a.get("type") == "audio_info"), {})
        log.info("%s %s recognized id=%s %.2fs", self.service, self.model, data.get("id"),
                 time.monotonic() - started)
        return ModelAnswer(text, usage_of(data.get("usage")), data.get("request_id") or data.get("id"),
                           choices[0].get("finish_reason"), language=info.get("language") or None,
                           emotion=info.get("emotion") or None)

    async def _stream(self, body: dict[str, Any], on_delta: OnDelta | None) -> ModelAnswer:
        handed = False     # once the caller has text, a retry would repeat it: never retry then
        texts: list[str] = []
        speech = bytearray()
        usage, request_id, reason, chunks = Usage(), None, None, 0
        async with self._sem:
            started = time.monotonic()
            try:
                # no deadline on the whole stream (a 20-minute transcript takes a while): the client's
                # timeout bounds each wait for the next piece instead
                async with self._http.stream("POST", self.url, json=body, headers=self._headers(True)) as resp:
                    if not resp.is_success:
                        await resp.aread()
                        raise self._status_error(resp)
                    done = False
                    async for event in _sse_events(resp.aiter_lines()):
                        if done or not event.data:      # after [DONE], read to the end to keep the connection
                            continue
                        raw = "\n".join(event.data)
                        if raw.startswith("[DONE]"):
                            done = True
                            continue
                        try:
                            chunk = json.loads(raw)
                        except ValueError as exc:
                            raise self._bad_answer(self._redact(str(exc))[:120]) from None
                        if _get(chunk, "error"):
                            raise self._event_error(chunk["error"], request_id, chunks)
                        chunks += 1
                        request_id = request_id or _get(chunk, "id")
                        if _get(chunk, "usage") is not None:
                            usage = usage_of(chunk["usage"])
                        for choice in _get(chunk, "choices") or []:
                            if _get(choice, "index") not in (0, None):
                                continue
                            reason = _get(choice, "finish_reason") or reason
                            delta = _get(choice, "delta")
                            audio = _get(delta, "audio")
                            piece = _get(delta, "content") or _get(audio, "transcript") or ""
                            if data := _get(audio, "data"):
                                try:
                                    speech += base64.b64decode(data)
                                except (binascii.Error, ValueError, TypeError):
                                    raise BadModelResponse(msgs.BAD_MODEL_RESPONSE,
                                                           f"{self.service} sent speech that is not base64") from None
                            if isinstance(piece, str) and piece:
                                texts.append(piece)
                                if on_delta is not None:
                                    handed = True
                                    await on_delta(piece)
                if not chunks:       # a 200 that isn't an event stream: a wrong base URL or a captive proxy
                    err: ModelError = self._bad_answer("HTTP 200 without a single chunk of an answer")
                    err.retryable = False
                    raise err
            except ModelError as exc:
                exc.retryable = exc.retryable and not handed
                raise
            except (TimeoutError, httpx.RequestError) as exc:
                err = self._failed(exc, started)
                err.retryable = not handed
                raise err from None
        log.info("%s %s stream id=%s %d chunks %.2fs", self.service, self.model, request_id, chunks,
                 time.monotonic() - started)
        return ModelAnswer("".join(texts), usage, request_id, reason, bytes(speech))
