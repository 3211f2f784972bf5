"""Client for OpenAI-compatible chat completions: DashScope's compatible mode (Qwen-Omni) and vLLM.

Built on the openai SDK (what both services document), with its own retries off: earshot's bounded
retries, backoff and typed errors are the same as for the native API (core.model.dashscope). The two services
differ in ways that stay inside this module:

- DashScope wants audio as a `data:;base64,` URL and refuses bare base64; vLLM wraps what it gets in its
  own data: URL, so it needs bare base64 (a data: prefix fails there with "Incorrect padding").
- DashScope's Omni models answer only when streamed; vLLM streams too, so one path serves both.
- Spoken answers (DashScope only) arrive as base64 24 kHz s16le mono PCM in `delta.audio.data`; the
  words arrive in `delta.content`, or in `delta.audio.transcript` on qwen-omni-turbo.
"""
from __future__ import annotations

import base64
import binascii
import logging
import time
from typing import Any

import httpx
import openai

from core.errors import BadModelResponse, ModelAuthError, ModelError, ModelUnavailable, QuotaExhausted
from core.model import prompts
from core.model.dashscope import DATA_URI_PREFIX, RetryPolicy, _error_for, _retry_after, unreachable
from core.model.model_api import ModelAnswer, OnDelta
from core.values import Usage
from core.words import messages as msgs

log = logging.getLogger("earshot.openai_compat")


def _get(obj: Any, name: str) -> Any:
    """A field of an SDK object or of the plain dict the SDK keeps for fields it doesn't model."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def usage_of(raw: Any) -> Usage:
    """OpenAI-style usage onto earshot's: prompt tokens split into audio and the rest; output is all generated."""
    if raw is None:
        return Usage()
    prompt, completion = int(_get(raw, "prompt_tokens") or 0), int(_get(raw, "completion_tokens") or 0)
    audio = int(_get(_get(raw, "prompt_tokens_details"), "audio_tokens") or 0)
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

    # the same retry policy and redaction as the native client (RetryPolicy)

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
        self._sdk = openai.AsyncOpenAI(api_key=api_key or "", base_url=self.base_url, max_retries=0,
                                       timeout=timeout, http_client=self._http)
        # the SDK fills these from OPENAI_ORG_ID / OPENAI_PROJECT_ID; they mean nothing to these servers
        self._sdk.organization = self._sdk.project = None

    async def aclose(self) -> None:
        await self._sdk.close()

    @property
    def _key_variable(self) -> str:
        return "DASHSCOPE_API_KEY" if self.dashscope else "EARSHOT_OPENAI_API_KEY"

    # --- request shape ----------------------------------------------------------------------------
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
    def _status_error(self, exc: openai.APIStatusError) -> ModelError:
        body = exc.body if isinstance(exc.body, dict) else {}
        code = _code(body)
        message = self._redact(str(body.get("message") or (exc.body if isinstance(exc.body, str) else "")))
        try:
            outer = exc.response.json()
        except ValueError:
            outer = None
        if not isinstance(outer, (dict, list)) and exc.status_code >= 200:
            snippet = " ".join(self._redact(exc.response.text).split())[:80]
            err: ModelError = BadModelResponse(msgs.BAD_MODEL_RESPONSE, msgs.BAD_RESPONSE_COMPAT_OP.format(
                service=self.service, variable=self._base_variable,
                detail=f"HTTP {exc.status_code}: {snippet!r}"), status=exc.status_code)
            err.retryable = exc.status_code >= 500 or exc.status_code in (408, 429)
            return err
        request_id = (outer.get("request_id") or outer.get("id")) if isinstance(outer, dict) else None
        err = _error_for(exc.status_code, code, message, model=self.model,
                         request_id=request_id or exc.request_id,
                         retry_after=_retry_after(exc.response.headers), service=self.service)
        shown = code or f"HTTP {exc.status_code}"
        if isinstance(err, ModelAuthError) and (exc.status_code == 401 or "api_key" in code.lower()
                                                or code == "InvalidApiKey"):
            err.operator_message = msgs.BAD_KEY_COMPAT_OP.format(service=self.service, code=shown,
                                                                 variable=self._key_variable)
        elif isinstance(err, QuotaExhausted) and "freetieronly" in code.lower():
            err.operator_message = msgs.FREE_TIER_ONLY_OP.format(model=self.model, code=shown, detail=message)
        elif isinstance(err, ModelAuthError) and exc.status_code == 404:
            err.operator_message = msgs.MODEL_NOT_FOUND_COMPAT_OP.format(service=self.service, model=self.model,
                                                                         code=shown)
        return err

    @property
    def _base_variable(self) -> str:
        return "DASHSCOPE_COMPAT_BASE_URL" if self.dashscope else "EARSHOT_OPENAI_BASE_URL"

    def _transport_error(self, exc: Exception) -> ModelUnavailable:
        if isinstance(exc, (TimeoutError, openai.APITimeoutError)):
            detail = f"no answer within {self.timeout:g}s ({type(exc).__name__})"
        else:
            cause = exc.__cause__ or exc
            detail = self._redact(f"{type(cause).__name__}: {str(cause)[:200]}")
        err = ModelUnavailable(msgs.MODEL_DOWN, msgs.MODEL_DOWN_OP.format(service=self.service, detail=detail))
        err.unreachable = unreachable(exc)
        return err

    # --- the call ---------------------------------------------------------------------------------
    async def generate(self, messages: list[dict], *, max_tokens: int | None = None,
                       on_delta: OnDelta | None = None, voice: str | None = None) -> ModelAnswer:
        """Ask the model (always streamed); text pieces go to on_delta as they come; with voice, the
        answer is also spoken (callers check the catalog that the model speaks)."""
        if self.dashscope and not self._api_key:
            raise ModelAuthError(msgs.NO_KEY_CLI)
        kwargs: dict[str, Any] = {"model": self.model, "messages": self._convert(messages, voice is not None),
                                  "stream": True, "stream_options": {"include_usage": True}}
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        if voice is not None:
            kwargs["modalities"] = ["text", "audio"]
            kwargs["audio"] = {"voice": voice, "format": "wav"}   # "wav" is the only value; PCM arrives
        async for attempt in self._retrying():
            with attempt:
                return await self._stream(kwargs, on_delta)
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
        body: dict[str, Any] = {"asr_options": {"enable_itn": False, **({"language": language} if language else {})}}
        kwargs: dict[str, Any] = {
            "model": self.model, "stream": False, "extra_body": body,
            "messages": [{"role": "user", "content": [{"type": "input_audio",
                                                        "input_audio": {"data": data, "format": fmt}}]}]}
        async for attempt in self._retrying():
            with attempt:
                return await self._recognize_once(kwargs)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _recognize_once(self, kwargs: dict[str, Any]) -> ModelAnswer:
        async with self._sem:
            started = time.monotonic()
            try:
                # the raw body: the SDK's message model knows only URL-citation annotations
                raw = await self._sdk.chat.completions.with_raw_response.create(**kwargs)
                data = raw.http_response.json()
            except openai.APIStatusError as exc:
                raise self._status_error(exc) from None
            except (openai.APIConnectionError, TimeoutError) as exc:
                log.info("%s %s failed after %.2fs: %s", self.service, self.model, time.monotonic() - started,
                         type(exc).__name__)
                raise self._transport_error(exc) from None
            except ValueError as exc:
                raise BadModelResponse(msgs.BAD_MODEL_RESPONSE, msgs.BAD_RESPONSE_COMPAT_OP.format(
                    service=self.service, variable=self._base_variable,
                    detail=self._redact(str(exc))[:120])) from None
        choices = data.get("choices") if isinstance(data, dict) else None
        if not choices or not isinstance(choices[0], dict):
            err = BadModelResponse(msgs.BAD_MODEL_RESPONSE, msgs.BAD_RESPONSE_COMPAT_OP.format(
                service=self.service, variable=self._base_variable, detail="no choices in the answer"))
            err.retryable = False
            raise err
        message = choices[0].get("message") or {}
        content = message.get("content")
        text = content if isinstance(content, str) else "".join(
            str(p.get("text", "")) for p in content or [] if isinstance(p, dict))
        info = next((a for a in message.get("annotations") or []
                     if isinstance(a, dict) and a.get("type") == "audio_info"), {})
        log.info("%s %s recognized id=%s %.2fs", self.service, self.model, data.get("id"),
                 time.monotonic() - started)
        return ModelAnswer(text, usage_of(data.get("usage")), data.get("request_id") or data.get("id"),
                           choices[0].get("finish_reason"), language=info.get("language") or None,
                           emotion=info.get("emotion") or None)

    async def _stream(self, kwargs: dict[str, Any], on_delta: OnDelta | None) -> ModelAnswer:
        handed = False     # once the caller has text, a retry would repeat it: never retry then
        texts: list[str] = []
        speech = bytearray()
        usage, request_id, reason, chunks = Usage(), None, None, 0
        async with self._sem:
            started = time.monotonic()
            try:
                # no deadline on the whole stream (a 20-minute transcript takes a while): the client's
                # timeout bounds each wait for the next piece instead
                stream = await self._sdk.chat.completions.create(**kwargs)
                async for chunk in stream:
                    chunks += 1
                    request_id = request_id or _get(chunk, "id")
                    if _get(chunk, "usage") is not None:
                        usage = usage_of(chunk.usage)
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
                            except (binascii.Error, ValueError):
                                raise BadModelResponse(msgs.BAD_MODEL_RESPONSE,
                                                       f"{self.service} sent speech that is not base64") from None
                        if piece:
                            texts.append(piece)
                            if on_delta is not None:
                                handed = True
                                await on_delta(piece)
                if not chunks:       # a 200 that isn't an event stream: a wrong base URL or a captive proxy
                    err: ModelError = BadModelResponse(msgs.BAD_MODEL_RESPONSE, msgs.BAD_RESPONSE_COMPAT_OP.format(
                        service=self.service, variable=self._base_variable,
                        detail="HTTP 200 without a single chunk of an answer"))
                    err.retryable = False
                    raise err
            except ModelError as exc:
                exc.retryable = exc.retryable and not handed
                raise
            except openai.APIStatusError as exc:
                err = self._status_error(exc)
                err.retryable = err.retryable and not handed
                raise err from None
            except (openai.APIConnectionError, TimeoutError) as exc:   # includes APITimeoutError
                log.info("%s %s failed after %.2fs: %s", self.service, self.model, time.monotonic() - started,
                         type(exc).__name__)
                err = self._transport_error(exc)
                err.retryable = not handed
                raise err from None
            except openai.APIError as exc:          # an error event inside the stream
                body = exc.body if isinstance(exc.body, dict) else {}
                err = _error_for(_stream_status(body), _code(body),
                                 self._redact(str(body.get("message") or exc.message)), model=self.model,
                                 request_id=request_id, service=self.service)
                log.warning("%s %s failed inside the stream after %d chunks: %s", self.service, self.model,
                            chunks, err.operator_message)
                err.retryable = err.retryable and not handed
                raise err from None
            except ValueError as exc:               # a body the SDK couldn't parse as SSE/JSON
                err = BadModelResponse(msgs.BAD_MODEL_RESPONSE, msgs.BAD_RESPONSE_COMPAT_OP.format(
                    service=self.service, variable=self._base_variable, detail=self._redact(str(exc))[:120]))
                err.retryable = not handed
                raise err from None
        log.info("%s %s stream id=%s %d chunks %.2fs", self.service, self.model, request_id, chunks,
                 time.monotonic() - started)
        return ModelAnswer("".join(texts), usage, request_id, reason, bytes(speech))
