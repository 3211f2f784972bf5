"""Async client for DashScope's native multimodal-generation endpoint (Qwen-Audio).

One pooled httpx client, a semaphore bounding calls in flight, typed errors with user-facing text,
and bounded retries (tenacity) for the failures that can heal: throttling, 5xx, timeouts. The API
key only ever travels in the Authorization header: never logged, never in an error or a repr.
"""
from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Self

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_before_delay
from tenacity.stop import stop_base

from core.errors import (
    AudioError,
    BadModelResponse,
    ContentRejected,
    ModelAuthError,
    ModelError,
    ModelInputError,
    ModelThrottled,
    ModelUnavailable,
    QuotaExhausted,
)
from core.model.model_api import ModelAnswer, OnDelta
from core.values import Usage
from core.words import messages as msgs

__all__ = ["DashScopeClient", "ModelAnswer", "audio_item", "text_item"]

log = logging.getLogger("earshot.dashscope")
retry_log = logging.getLogger("earshot.model")     # retries of any model service, named in the line

GENERATION_PATH = "/services/aigc/multimodal-generation/generation"
MAX_ENCODED_AUDIO = 10 * 1024 * 1024     # the service's cap on a base64 item, counted after encoding
DATA_URI_PREFIX = "data:;base64,"        # the documented form: empty media type
JSON_TYPE = "application/json; charset=utf-8"
SSE_TYPE = "text/event-stream"

# codes that mean "pay / wait for quota", not "slow down": retrying cannot help
_BILLING_CODES = {"Arrearage", "PrepaidBillOverdue", "PostpaidBillOverdue", "CommodityNotPurchased"}
_UNAVAILABLE_CODES = {"RequestTimeOut", "InternalError", "InternalError.Timeout", "SystemError",
                      "ModelServiceFailed", "ModelUnavailable", "ServiceUnavailable"}



def audio_item(mp3: bytes, max_encoded: int = MAX_ENCODED_AUDIO) -> dict[str, str]:
    """A content item carrying audio inline; refuses what the service would reject for size."""
    encoded = base64.b64encode(mp3).decode("ascii")
    if len(DATA_URI_PREFIX) + len(encoded) > max_encoded:
        raise AudioError(msgs.AUDIO_ITEM_TOO_BIG, fmt=dict(size_mb=len(encoded) / 1024 / 1024,
                                                         limit_mb=max_encoded / 1024 / 1024))
    return {"audio": DATA_URI_PREFIX + encoded}


def text_item(s: str) -> dict[str, str]:
    return {"text": s}


# --- errors ---------------------------------------------------------------------------------------

def _error_for(status: int, code: str, message: str, *, model: str, request_id: str | None,
               retry_after: float | None = None, service: str = "DashScope") -> ModelError:
    """Map an HTTP status and DashScope `code` to earshot's typed error (see protocol doc section 5.3)."""
    kw: dict[str, Any] = {"status": status, "code": code or None, "request_id": request_id,
                          "retry_after": retry_after}
    detail = message or code or f"HTTP {status}"
    shown = code or f"HTTP {status}"
    low_code, low_msg = code.lower(), message.lower()
    if code == "InvalidApiKey" or status == 401:
        return ModelAuthError(msgs.BAD_KEY_OP.format(code=shown), **kw)
    if "freetieronly" in low_code or (code.startswith("Throttling") and "free" in low_msg):
        return QuotaExhausted(msgs.QUOTA_OP.format(code=shown, detail=detail), **kw)
    if code in _BILLING_CODES:
        return QuotaExhausted(msgs.BILLING_OP.format(code=shown, detail=detail), **kw)
    if code in ("ModelNotFound", "WorkSpaceNotFound") or status == 404:
        return ModelAuthError(msgs.MODEL_NOT_FOUND_OP.format(model=model, code=shown), **kw)
    if "accessdenied" in low_code.replace(".", "") or status == 403:
        return ModelAuthError(msgs.MODEL_ACCESS_DENIED_OP.format(model=model, code=shown, detail=detail),
                              **kw)
    if code == "DataInspectionFailed" or low_code == "data_inspection_failed":
        return ContentRejected(msgs.CONTENT_REJECTED, f"DashScope content inspection: {detail}", **kw)
    if status == 429 or code.startswith("Throttling") or code == "LimitRequests":
        return ModelThrottled(msgs.MODEL_BUSY, msgs.THROTTLED_OP.format(service=service, code=shown, detail=detail),
                              **kw)
    if status == 408 or status >= 500 or code in _UNAVAILABLE_CODES:
        return ModelUnavailable(msgs.MODEL_DOWN,
                                msgs.MODEL_DOWN_OP.format(service=service, detail=f"{shown}: {detail}"), **kw)
    if 400 <= status < 500 or code:
        return ModelInputError(msgs.MODEL_REJECTED_INPUT, f"{service} rejected the request ({shown}): {detail}",
                               fmt=dict(detail=detail), **kw)
    return BadModelResponse(msgs.BAD_MODEL_RESPONSE, f"{service} answered HTTP {status} without an answer",
                            **kw)


def _not_json(status: int, content_type: str, body: str, *,
              retry_after: float | None = None) -> BadModelResponse:
    snippet = " ".join(body.split())[:80]
    err = BadModelResponse(msgs.BAD_MODEL_RESPONSE,
                           msgs.BAD_RESPONSE_OP.format(status=status, content_type=content_type or "no type",
                                                           snippet=snippet),
                           status=status, retry_after=retry_after)
    # a gateway's 5xx page may clear up; a 200/4xx page (wrong base URL, captive proxy) will not
    err.retryable = status >= 500 or status in (408, 429)
    return err


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


# --- parsing --------------------------------------------------------------------------------------

def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    found = raw.get("input_tokens_details")
    details: dict = found if isinstance(found, dict) else {}
    inp, out = int(raw.get("input_tokens") or 0), int(raw.get("output_tokens") or 0)
    if raw.get("audio_tokens") is not None:           # Qwen-Audio style: input_tokens excludes audio
        return Usage(int(raw["audio_tokens"]), inp, out)
    audio = int(details.get("audio_tokens") or 0)     # newer style: input_tokens includes audio
    text = details.get("text_tokens")
    return Usage(audio, int(text) if text is not None else max(0, inp - audio), out)


def _choice(data: dict) -> tuple[str, str | None]:
    """Text and finish_reason of the first choice; content is a list of {"text"} items (maybe empty)."""
    choices = (data.get("output") or {}).get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        text = (data.get("output") or {}).get("text")      # result_format "text" fallback
        return (text if isinstance(text, str) else ""), None
    message = choices[0].get("message") or {}
    content = message.get("content")
    if isinstance(content, str):
        text = content
    else:
        text = "".join(i.get("text", "") for i in content or [] if isinstance(i, dict))
    reason = choices[0].get("finish_reason")
    return text, (None if reason in (None, "null") else reason)


@dataclass(slots=True)
class _Event:
    event: str = "result"
    status: int | None = None
    data: list[str] = field(default_factory=list)


async def _sse_events(lines: AsyncIterator[str]) -> AsyncIterator[_Event]:
    """DashScope's SSE framing: id:/event:/:HTTP_STATUS/nnn/data: lines, blank line ends an event."""
    ev, seen = _Event(), False
    async for line in lines:
        if not line:
            if seen:
                yield ev
            ev, seen = _Event(), False
            continue
        seen = True
        if line.startswith(":HTTP_STATUS/"):
            try:
                ev.status = int(line.split("/", 1)[1].strip())
            except ValueError:
                pass
        elif line.startswith(":"):
            continue                                       # comment / heartbeat
        elif line.startswith("event:"):
            ev.event = line[6:].strip()
        elif line.startswith("data:"):
            value = line[5:]
            ev.data.append(value[1:] if value.startswith(" ") else value)
    if seen:
        yield ev


def _first_sse_data(body: str) -> str | None:
    for line in body.splitlines():
        if line.startswith("data:"):
            return line[5:].strip()
    return None


# --- the client -----------------------------------------------------------------------------------

UNREACHABLE_BUDGET = 6.0     # seconds of retries for a host that can't be reached (DNS failure, refused)


class _StopUnreachable(stop_base):
    """Stop retrying a host that can't be reached once UNREACHABLE_BUDGET s have gone by."""

    def __call__(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        return (isinstance(exc, ModelUnavailable) and exc.unreachable
                and (state.seconds_since_start or 0.0) + state.upcoming_sleep >= UNREACHABLE_BUDGET)


def unreachable(exc: BaseException) -> bool:
    """The connection itself failed (a name that doesn't resolve, a port that refuses), as opposed to a host
    that was reached and then failed or fell silent."""
    return any(isinstance(e, httpx.ConnectError) for e in (exc, exc.__cause__, exc.__context__))


class RetryPolicy:
    """What every model client shares: its connection pool (no redirects: one would carry the key somewhere
    we didn't choose), retries with jittered backoff (honouring Retry-After), and keys kept out of errors
    and logs. A client calls `_setup` first in its __init__ and closes its pool in `aclose`."""

    base_url: str
    model: str
    backoff: float
    _api_key: str
    service: str = "DashScope"      # who answers, as log lines and operator messages name it

    def _setup(self, api_key: str, base_url: str, model: str, *, timeout: float, retry_budget: float,
               max_concurrency: int, transport: httpx.AsyncBaseTransport | None, max_attempts: int,
               backoff: float) -> None:
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.retry_budget = min(retry_budget, 60.0)
        self.max_attempts = max_attempts
        self.backoff = backoff
        self._sem = asyncio.Semaphore(max_concurrency)
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled HTTP client (every model client talks through it alone)."""
        await self._http.aclose()

    def _wait(self, state: RetryCallState) -> float:
        # exponential with jitter, so many chats throttled together don't come back in step
        wait = min(30.0, self.backoff * 2 ** (state.attempt_number - 1)) + random.uniform(0, self.backoff)
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        return max(wait, retry_after) if retry_after else wait

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        retry_log.warning("%s %s attempt %d failed (%s status=%s code=%s request_id=%s); retrying in %.2fs",
                    self.service, self.model, state.attempt_number, type(exc).__name__, getattr(exc, "status", None),
                    getattr(exc, "code", None), getattr(exc, "request_id", None),
                    state.next_action.sleep if state.next_action else 0.0)

    def _retrying(self) -> AsyncRetrying:
        """Attempts at one request: bounded by count and by the retry budget; only retryable errors again. A host
        that can't be reached at all is tried for UNREACHABLE_BUDGET s only: the terminal says so within 10 s,
        and the bots' job runner tries again later anyway."""
        return AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts) | stop_before_delay(self.retry_budget) | _StopUnreachable(),
            wait=self._wait,
            retry=retry_if_exception(lambda e: isinstance(e, ModelError) and e.retryable),
            before_sleep=self._log_retry,
            reraise=True,
        )

    def _redact(self, text: str) -> str:
        """Servers may echo what they were sent; the key must not reach an error or a log."""
        return text.replace(self._api_key, "***") if self._api_key else text

    def _transport_error(self, exc: Exception) -> ModelUnavailable:
        """A request that got no answer: timed out, or the connection failed (then `unreachable` says whether
        it was never made)."""
        if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
            detail = f"no answer within {self.timeout:g}s ({type(exc).__name__})"
        else:
            detail = self._redact(f"{type(exc).__name__}: {str(exc)[:200]}")
        err = ModelUnavailable(msgs.MODEL_DOWN, msgs.MODEL_DOWN_OP.format(service=self.service, detail=detail))
        err.unreachable = unreachable(exc)
        return err


class DashScopeClient(RetryPolicy):
    """Calls Qwen-Audio. Safe to share across tasks; close with `aclose()` or `async with`."""

    def __init__(self, api_key: str, base_url: str, model: str, *, timeout: float = 120,
                 retry_budget: float = 60, max_concurrency: int = 16,
                 transport: httpx.AsyncBaseTransport | None = None,
                 max_attempts: int = 5, backoff: float = 1.0) -> None:
        self._setup(api_key, base_url, model, timeout=timeout, retry_budget=retry_budget,
                    max_concurrency=max_concurrency, transport=transport, max_attempts=max_attempts,
                    backoff=backoff)
        self.url = self.base_url + GENERATION_PATH

    async def generate(self, messages: list[dict], *, max_tokens: int | None = None,
                       on_delta: OnDelta | None = None, voice: str | None = None) -> ModelAnswer:
        """Ask the model. With on_delta, stream: each piece of text is awaited as it arrives.
        Qwen-Audio can't speak: callers check the catalog before asking for a voice."""
        if not self._api_key:
            raise ModelAuthError(msgs.NO_KEY_CLI)
        if voice is not None:
            raise ModelInputError(msgs.CANNOT_SPEAK, fmt=dict(model=self.model, models=""))
        parameters: dict[str, Any] = {"result_format": "message"}
        if max_tokens is not None:
            parameters["max_tokens"] = max_tokens
        if on_delta is not None:
            parameters["incremental_output"] = True
        body = json.dumps({"model": self.model, "input": {"messages": messages}, "parameters": parameters},
                          ensure_ascii=False).encode("utf-8")
        async for attempt in self._retrying():
            with attempt:
                if on_delta is None:
                    return await self._call(body)
                return await self._stream(body, on_delta)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    # --- retry plumbing ---------------------------------------------------------------------------
    def _headers(self, stream: bool) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self._api_key}", "Content-Type": JSON_TYPE,
                   "Accept": SSE_TYPE if stream else JSON_TYPE}
        if stream:
            headers["X-DashScope-SSE"] = "enable"
        return headers

    def _error_from_body(self, resp: httpx.Response) -> ModelError:
        """The error a non-2xx (or 200 with `code`) response stands for."""
        ctype = resp.headers.get("content-type", "")
        text = resp.text
        raw = _first_sse_data(text) if ctype.startswith(SSE_TYPE) else text
        try:
            data = json.loads(raw) if raw is not None else None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return _not_json(resp.status_code, ctype, self._redact(text),
                             retry_after=_retry_after(resp.headers))
        return self._mapped(resp.status_code, data, _retry_after(resp.headers))

    def _mapped(self, status: int, data: dict, retry_after: float | None = None) -> ModelError:
        error = data.get("error")
        inner: dict = error if isinstance(error, dict) else data   # compat-mode shape
        code = str(inner.get("code") or inner.get("type") or "")
        message = self._redact(str(inner.get("message") or inner.get("msg") or ""))
        return _error_for(status, code, message, model=self.model, request_id=data.get("request_id"),
                          retry_after=retry_after)

    # --- one attempt ------------------------------------------------------------------------------
    async def _call(self, body: bytes) -> ModelAnswer:
        async with self._sem:
            started = time.monotonic()
            try:
                async with asyncio.timeout(self.timeout):
                    resp = await self._http.post(self.url, content=body, headers=self._headers(False))
            except (TimeoutError, httpx.TransportError) as exc:
                log.info("dashscope %s failed after %.2fs: %s", self.model, time.monotonic() - started,
                         type(exc).__name__)
                raise self._transport_error(exc) from None
        answer = self._answer(resp)
        log.info("dashscope %s status=%d request_id=%s %.2fs", self.model, resp.status_code,
                 answer.request_id, time.monotonic() - started)
        return answer

    def _answer(self, resp: httpx.Response) -> ModelAnswer:
        if resp.status_code != 200:
            raise self._error_from_body(resp)
        try:
            data = resp.json()
        except ValueError:
            raise _not_json(resp.status_code, resp.headers.get("content-type", ""),
                            self._redact(resp.text)) from None
        if not isinstance(data, dict):
            raise _not_json(resp.status_code, resp.headers.get("content-type", ""),
                            self._redact(resp.text[:200]))
        if data.get("code") and not data.get("output"):
            raise self._mapped(resp.status_code, data)
        text, reason = _choice(data)
        return ModelAnswer(text, _usage(data.get("usage")), data.get("request_id"), reason)

    async def _stream(self, body: bytes, on_delta: OnDelta) -> ModelAnswer:
        handed = False     # once the caller has text, a retry would repeat it: never retry then
        async with self._sem:
            started = time.monotonic()
            try:
                async with self._http.stream("POST", self.url, content=body,
                                             headers=self._headers(True)) as resp:
                    if resp.status_code != 200:
                        await resp.aread()
                        raise self._error_from_body(resp)
                    if not resp.headers.get("content-type", "").startswith(SSE_TYPE):
                        await resp.aread()              # a buffering proxy may answer in one piece
                        answer = self._answer(resp)
                        if answer.text:
                            handed = True
                            await on_delta(answer.text)
                        return answer
                    parts: list[str] = []
                    usage, request_id, reason, events = Usage(), None, None, 0
                    async for ev in _sse_events(resp.aiter_lines()):
                        raw = "\n".join(ev.data)
                        try:
                            data = json.loads(raw) if raw else {}
                        except ValueError:
                            raise _not_json(ev.status or 200, SSE_TYPE, self._redact(raw)) from None
                        if not isinstance(data, dict):
                            raise _not_json(ev.status or 200, SSE_TYPE, self._redact(raw))
                        status = ev.status or 200
                        failed = data.get("code") and not data.get("output")
                        if ev.event == "error" or status >= 400 or failed:
                            raise self._mapped(status, data)
                        events += 1
                        request_id = data.get("request_id") or request_id
                        if data.get("usage"):
                            usage = _usage(data["usage"])     # cumulative: the last one wins
                        delta, finish = _choice(data)
                        reason = finish or reason
                        if delta:
                            parts.append(delta)
                            handed = True
                            await on_delta(delta)
                    if not events:
                        raise _not_json(200, SSE_TYPE, "stream closed before any answer")
            except ModelError as exc:
                if handed:
                    exc.retryable = False
                raise
            except (TimeoutError, httpx.TransportError) as exc:
                err = self._transport_error(exc)
                err.retryable = not handed
                raise err from None
        log.info("dashscope %s stream request_id=%s %d pieces %.2fs", self.model, request_id, len(parts),
                 time.monotonic() - started)
        return ModelAnswer("".join(parts), usage, request_id, reason)
