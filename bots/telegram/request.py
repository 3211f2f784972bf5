"""The Bot API over aiohttp: python-telegram-bot's requests, made with the HTTP client earshot's servers use.

python-telegram-bot makes its requests through a `BaseRequest`; its own (`HTTPXRequest`) spends ~0.6 ms
of CPU on each in httpx and httpcore, where aiohttp's client, whose HTTP parser is in C, spends ~0.12 ms
(bench: a Telegram voice note makes five: getUpdates' share, sendChatAction, getFile, the download,
sendMessage). At ten notes at once every millisecond of a note is spent in turn on the one event loop,
ahead of the last note's model call (BENCHMARKS.md, "Throughput").

What `HTTPXRequest` promises is kept: the default timeouts (read, write, connect, and the wait for a free
connection, which aiohttp counts in `connect`), `TimedOut` for a timeout and `NetworkError` for anything
else that fails on the way, a pool of `connection_pool_size` connections, the proxy from HTTPS_PROXY /
HTTP_PROXY / NO_PROXY as httpx took it (looked up once per host: aiohttp's own `trust_env` looks it up, and
for a .netrc, in a worker thread on every request), parameters form-encoded and files as
multipart/form-data. No cookies are kept (the Bot API sets none).
"""
from __future__ import annotations

import urllib.request
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData


class AiohttpRequest(BaseRequest):
    """A `BaseRequest` on one aiohttp session, opened by `initialize` (on the bot's event loop)."""

    def __init__(self, connection_pool_size: int = 1, *, read_timeout: float | None = 5.0,
                 write_timeout: float | None = 5.0, connect_timeout: float | None = 5.0,
                 pool_timeout: float | None = 1.0, media_write_timeout: float | None = 20.0) -> None:
        self._pool_size = connection_pool_size
        self._read, self._write, self._connect, self._pool = read_timeout, write_timeout, connect_timeout, pool_timeout
        self._media_write = media_write_timeout
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[str, str | None] = {}

    @property
    def read_timeout(self) -> float | None:
        return self._read

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size, limit_per_host=self._pool_size),
                headers={"User-Agent": self.USER_AGENT}, cookie_jar=aiohttp.DummyCookieJar())

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def do_request(self, url: str, method: str, request_data: RequestData | None = None,
                         read_timeout: Any = BaseRequest.DEFAULT_NONE, write_timeout: Any = BaseRequest.DEFAULT_NONE,
                         connect_timeout: Any = BaseRequest.DEFAULT_NONE,
                         pool_timeout: Any = BaseRequest.DEFAULT_NONE) -> tuple[int, bytes]:
        if self._session is None or self._session.closed:
            raise RuntimeError("This AiohttpRequest is not initialized!")
        files = request_data.multipart_data if request_data else None
        read, connect = _given(read_timeout, self._read), _given(connect_timeout, self._connect)
        pool = _given(pool_timeout, self._pool)
        write = _given(write_timeout, self._media_write if files else self._write)
        # aiohttp has no write timeout of its own: a request may take its write and read time in all
        whole = None if write is None or read is None else write + read
        timeout = aiohttp.ClientTimeout(
            total=whole, sock_read=read, sock_connect=connect,
            connect=None if connect is None or pool is None else connect + pool)
        body: aiohttp.FormData | dict[str, str] | None = None
        if request_data is not None:
            body = _multipart(request_data.json_parameters, files) if files else request_data.json_parameters
        try:
            async with self._session.request(method, url, data=body, timeout=timeout,
                                             proxy=self._proxy_for(url)) as response:
                return response.status, await response.read()
        except TimeoutError as err:
            raise TimedOut from err
        except aiohttp.ClientError as err:
            raise NetworkError(f"aiohttp.{type(err).__name__}: {err}") from err

    def _proxy_for(self, url: str) -> str | None:
        """The proxy the environment names for `url`'s scheme and host (None: go direct)."""
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.hostname}"
        if key not in self._proxies:
            bypass = urllib.request.proxy_bypass(parts.hostname or "")
            self._proxies[key] = None if bypass else urllib.request.getproxies().get(parts.scheme)
        return self._proxies[key]


def _given(value: Any, default: float | None) -> float | None:
    """A timeout a bot method passed (seconds, or None for none), else this request's default (the library
    passes a DefaultValue when the caller gave none)."""
    return value if value is None or isinstance(value, (int, float)) else default


def _multipart(fields: dict[str, str], files: dict[str, tuple[str, Any, str]]) -> aiohttp.FormData:
    """Parameters and files as multipart/form-data; `files` maps a part's name to (file name, content, MIME
    type), the content bytes or a file object."""
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    for name, (filename, content, mime) in files.items():
        form.add_field(name, content, filename=filename, content_type=mime)
    return form
