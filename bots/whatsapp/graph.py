"""WhatsApp's Graph API: the handful of REST calls earshot makes, over the httpx client it already has.

Every call carries the access token, and the token goes nowhere but the API's own origin (WHATSAPP_API_URL)
and Meta's media hosts (*.fbsbx.com, *.whatsapp.net): a media URL anywhere else is not fetched at all.
Redirects are never followed, so no answer can send the token on.

Graph errors ({"error": {"message", "type", "code", "error_data", "fbtrace_id"}}) are told apart by their code,
not their wording: throughput limits (4, 80007, 130429, 131056), HTTP 429 and 5xx are tried again here with
backoff (Retry-After honoured); the rest come out as GraphError, whose properties say what they mean:
`window_closed` (131047: more than 24 hours since the user last wrote; only templates may be sent), `operator`
(190: the token; 10, 200-299: a permission), anything else a request earshot should not have made.
"""
from __future__ import annotations

import asyncio
import logging
import random
from typing import Any
from urllib.parse import urlsplit

import httpx

from core.audio.pipeline import check_length, read_capped
from core.config import Settings, origin
from core.errors import EarshotError
from core.values import Audio
from core.words import messages

log = logging.getLogger(__name__)

MEDIA_HOSTS = ("fbsbx.com", "whatsapp.net")    # where Meta serves media: the token may go to their subdomains
RETRIED_CODES = frozenset({1, 2, 4, 80007, 130429, 131000, 131016, 131056})
WINDOW_CLOSED = 131047
TOKEN_CODES = frozenset({0, 190})
ATTEMPTS = 4
BACKOFF = 0.5                # seconds before the first retry, doubling, with jitter
MAX_WAIT = 20.0              # a Retry-After longer than this is left to the job runner's own retries


class GraphError(Exception):
    """A refused Graph API call: its HTTP status and Graph error code (None when the body was not Graph's)."""

    def __init__(self, status: int, code: int | None, message: str, details: str = "", trace: str = "") -> None:
        super().__init__(f"HTTP {status}, Graph error {code}: {message}" + (f" ({details})" if details else "")
                         + (f" [fbtrace_id {trace}]" if trace else ""))
        self.status, self.code, self.message, self.details = status, code, message, details

    @property
    def retryable(self) -> bool:
        return self.status == 429 or self.status >= 500 or self.code in RETRIED_CODES

    @property
    def window_closed(self) -> bool:
        return self.code == WINDOW_CLOSED

    @property
    def operator(self) -> bool:
        """The token or its permissions: only the operator can fix it."""
        code = self.code if self.code is not None else -1
        return code in TOKEN_CODES or code == 10 or 200 <= code < 300

    def operator_message(self) -> str:
        detail = f"code {self.code}: {self.message}"
        if self.code in TOKEN_CODES:
            return messages.WHATSAPP_BAD_TOKEN.format(detail=detail)
        return messages.WHATSAPP_NO_PERMISSION.format(detail=detail)


class MediaUnavailable(EarshotError):
    """The user's media can't be fetched: the API gave no usable URL, or one the token must not go to."""

    operator = True

    def __init__(self, operator_message: str) -> None:
        super().__init__(messages.WHATSAPP_MEDIA_UNAVAILABLE, operator_message)


def graph_error(response: httpx.Response) -> GraphError:
    try:
        err = response.json().get("error") or {}
    except (ValueError, AttributeError):
        err = {}
    if not isinstance(err, dict):
        err = {}
    code = err.get("code")
    details = (err.get("error_data") or {}).get("details", "") if isinstance(err.get("error_data"), dict) else ""
    return GraphError(response.status_code, code if isinstance(code, int) else None,
                      str(err.get("message") or response.reason_phrase), str(details or ""),
                      str(err.get("fbtrace_id") or ""))


def may_carry_token(url: str, api_origin: str) -> bool:
    """The token may go to the API's own origin, or over HTTPS to a subdomain of Meta's media hosts."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port    # noqa: B018  (a malformed port raises here)
    except ValueError:
        return False
    if not host or "@" in parts.netloc:
        return False
    if origin(url) == api_origin:
        return True
    return parts.scheme == "https" and parts.port in (None, 443) and any(host.endswith("." + h) for h in MEDIA_HOSTS)


class Graph:
    """The business number's side of the Cloud API: send, mark read, media in and out, the number itself."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient, *, backoff: float = BACKOFF) -> None:
        assert settings.whatsapp_access_token is not None and settings.whatsapp_phone_number_id
        self.base = settings.whatsapp_api_url.rstrip("/")
        self.origin = origin(self.base)
        self.phone_number_id = settings.whatsapp_phone_number_id
        self.http = http
        self.backoff = backoff
        self._auth = {"Authorization": f"Bearer {settings.whatsapp_access_token.get_secret_value()}"}

    # --- the calls ------------------------------------------------------------------------------
    async def send(self, to: str, message: dict[str, Any], *, reply_to: str | None = None) -> str:
        """Send one message (`{"type": …, <type>: {…}}`) to `to`, quoting `reply_to`; its wamid."""
        body: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to, **message}
        if reply_to:
            body["context"] = {"message_id": reply_to}
        answer = await self._call("POST", f"{self.base}/{self.phone_number_id}/messages", json=body)
        return str(((answer.get("messages") or [{}])[0]).get("id") or "")

    async def mark_read(self, wamid: str, *, typing: bool = True) -> None:
        """Blue ticks on the user's message, and "typing…" until the answer comes (or 25 s pass)."""
        body: dict[str, Any] = {"messaging_product": "whatsapp", "status": "read", "message_id": wamid}
        if typing:
            body["typing_indicator"] = {"type": "text"}
        await self._call("POST", f"{self.base}/{self.phone_number_id}/messages", json=body, attempts=1)

    async def upload(self, data: bytes, mime_type: str, filename: str) -> str:
        """Upload media to send (a voice note, a transcript file); its media id."""
        answer = await self._call("POST", f"{self.base}/{self.phone_number_id}/media",
                                  data={"messaging_product": "whatsapp", "type": mime_type},
                                  files={"file": (filename, data, mime_type)})
        return str(answer.get("id") or "")

    async def phone(self) -> dict[str, Any]:
        """The business number: display_phone_number and verified_name (doctor, /healthz)."""
        return await self._call("GET", f"{self.base}/{self.phone_number_id}",
                                params={"fields": "display_phone_number,verified_name"}, attempts=1)

    async def download(self, media_id: str, *, max_bytes: int, filename: str | None = None) -> Audio:
        """The user's media: a fresh short-lived URL from the API, then its bytes with the same token, but only
        from the API's origin or Meta's media hosts; refused past `max_bytes` before and while it arrives."""
        info = await self._call("GET", f"{self.base}/{media_id}")
        url = str(info.get("url") or "")
        if not url:
            raise MediaUnavailable(f"the Graph API gave no URL for media {media_id}")
        if not may_carry_token(url, self.origin):
            host = urlsplit(url).netloc or "?"
            raise MediaUnavailable(f"the Graph API gave a URL on {host} for media {media_id}: not fetched, since the "
                                   "access token goes only to WHATSAPP_API_URL's origin and Meta's media hosts")
        try:
            check_length(int(info.get("file_size") or 0), max_bytes)    # a number or a string, by API version
        except ValueError:
            pass
        for attempt in range(ATTEMPTS):
            async with self.http.stream("GET", url, headers=self._auth, follow_redirects=False) as resp:
                if resp.status_code == 200:
                    data = await read_capped(resp.aiter_bytes(), max_bytes)
                    mime = str(info.get("mime_type") or resp.headers.get("content-type") or "") or None
                    return Audio(data, filename=filename, mime_type=mime)
                await resp.aread()
                error = graph_error(resp)
            if not error.retryable or attempt == ATTEMPTS - 1:
                break
            await asyncio.sleep(self._wait(attempt, resp))
        if error.operator:
            raise EarshotError(messages.MISCONFIGURED, error.operator_message())
        raise error

    # --- how every call goes --------------------------------------------------------------------
    async def _call(self, method: str, url: str, *, attempts: int = ATTEMPTS, **kw: Any) -> dict[str, Any]:
        """The call's JSON answer; passing failures (429, 5xx, throughput codes) tried again with backoff."""
        for attempt in range(attempts):
            resp = await self.http.request(method, url, headers=self._auth, follow_redirects=False, **kw)
            if resp.status_code == 200:
                try:
                    answer = resp.json()
                except ValueError:
                    answer = None
                if isinstance(answer, dict):
                    return answer
                error = GraphError(resp.status_code, None, "the answer is not a JSON object")
            else:
                error = graph_error(resp)
            if not error.retryable or attempt == attempts - 1:
                raise error
            wait = self._wait(attempt, resp)
            log.warning("WhatsApp's Graph API is busy (%s); trying again in %.1f s", _short(error), wait)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    def _wait(self, attempt: int, resp: httpx.Response) -> float:
        try:
            asked = float(resp.headers.get("retry-after", ""))
        except ValueError:
            asked = 0.0
        return min(MAX_WAIT, max(asked, self.backoff * 2 ** attempt * random.uniform(0.8, 1.2)))


def _short(error: GraphError) -> str:
    return f"HTTP {error.status}" + (f", code {error.code}" if error.code is not None else "")
