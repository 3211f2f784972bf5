"""What every HTTP endpoint earshot serves shares: headers are checked first, and a body is read only up to a
small cap, so a stranger can't make the process hold megabytes.

An endpoint that takes a body (the Telegram webhook, Slack's events, the WhatsApp webhook) reads it through
`read_body`: the request's secret or signature headers are checked before a byte of the body is read; a declared
Content-Length over the cap is refused unread; a chunked body is read up to the cap and refused past it.
Refusals close the connection: servers run with LINGER (aiohttp's lingering_time 0), so the server doesn't
go on reading (and discarding) the rest of an unread body. The `body_cap` middleware puts the same cap in
front of every route of a server, 404s included, and endpoints that take no body (health, metrics) refuse
one; a route marked @guarded reads its body through read_body, which checks the headers first. `listen` and
`serve_until_signalled` are how every server here lives: started, serving until SIGTERM or SIGINT, then
stopped (letting the work in flight finish or hand it back).

The caps (bytes), chosen from what each platform sends:
- Telegram updates: 256 KiB. An update is a few kilobytes; the largest (a 4096-character message with its
  entities, replying to another such message, with a quote) stays well under 100 KiB.
- Slack events and interactions: 1 MiB. A 40,000-character message arrives twice (text and rich-text
  blocks); a modal's state and a message action's full message are larger than Telegram's updates.
- WhatsApp deliveries: 256 KiB. Meta batches at most a few messages or statuses per delivery, each a kilobyte
  or two (a 4096-character text escaped as JSON (\\uXXXX for every non-ASCII character) stays under 30 KiB).
- Health and metrics: no body at all (GET only).
"""
from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware

log = logging.getLogger(__name__)

TELEGRAM_BODY_CAP = 256 * 1024
SLACK_BODY_CAP = 1024 * 1024
WHATSAPP_BODY_CAP = 256 * 1024
NO_BODY = 0

# AppRunner options for every earshot server: no access log (bots log requests themselves), and a body left
# unread is not drained for 10 s (aiohttp's default lingering): the connection closes after the answer
LINGER = 0.0

# a request's headers -> None when they pass, else why not (for the log; the caller gets a bare status)
HeaderCheck = Callable[[Mapping[str, str]], str | None]


class Refused(Exception):
    """A request turned away before (or while) its body was read: the status to answer, and why (logged)."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why

    def response(self) -> web.Response:
        response = web.Response(status=self.status, text=f"{self.status}\n")
        response.force_close()          # don't read the rest of the body to keep the connection
        return response


def declared_too_big(request: web.BaseRequest, cap: int) -> bool:
    """The request says (Content-Length) it carries more than `cap` bytes; nothing is read to know it."""
    length = request.content_length
    return length is not None and length > cap


async def read_body(request: web.BaseRequest, *, cap: int, check: HeaderCheck | None = None,
                    refused: int = 403) -> bytes:
    """The body, once the headers passed `check` and the body fit in `cap` bytes; otherwise Refused (status
    `refused` for headers that fail, 413 for a body too big), having read at most cap + 1 bytes."""
    if check is not None:
        why = check(request.headers)
        if why is not None:
            raise Refused(refused, why)
    if declared_too_big(request, cap):
        raise Refused(413, f"a body of {request.content_length} bytes, over the {cap}-byte cap")
    body = bytearray()
    while len(body) <= cap:
        chunk = await request.content.read(cap + 1 - len(body))
        if not chunk:
            return bytes(body)
        body += chunk
    raise Refused(413, f"a body over the {cap}-byte cap")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def guarded(handler: Handler) -> Handler:
    """Marks a handler that reads its body with read_body (headers first): body_cap leaves the size check to
    it, so a stranger's wrong secret is answered as such (403/401) whatever the size claimed."""
    async def run(request: web.Request) -> web.StreamResponse:
        return await handler(request)
    run.reads_body_guarded = True  # type: ignore[attr-defined]
    return run


def body_cap(cap: int) -> Middleware:
    """aiohttp middleware: requests declaring a body over `cap` bytes (or, for cap 0, any body at all, chunked
    included) are refused with 413 before a handler runs. Use it with web.Application(client_max_size=cap or 1)
    so a handler's own request.read() is capped too."""
    @web.middleware
    async def middleware(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        if getattr(request.match_info.handler, "reads_body_guarded", False):
            pass
        elif declared_too_big(request, cap) or (cap == NO_BODY and chunked):
            # no path in the log: a webhook's path may be a secret of its own
            log.info("refused a %s request: a body where none (or a smaller one) is taken", request.method)
            return Refused(413, "body too big").response()
        try:
            return await handler(request)
        except Refused as refusal:
            log.warning("refused a %s request: %s", request.method, refusal.why)
            return refusal.response()
    return middleware


async def until_signalled() -> None:
    """Wait for SIGTERM or SIGINT (a server's main loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("shutting down")


class Server(Protocol):
    async def start(self) -> object: ...

    async def stop(self) -> None: ...


async def listen(app: web.Application, host: str, port: int, *, shutdown_timeout: float) -> web.AppRunner:
    """`app` served on host:port by aiohttp's production runner (AppRunner + TCPSite, no access log, LINGER),
    cleaned up again when the port can't be had. The port it got (port 0: any free one) is
    `runner.addresses[0][1]`."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout, lingering_time=LINGER)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def serve_until_signalled(server: Server) -> None:
    """Start `server`, serve until signalled, then stop it (whatever ended the wait)."""
    await server.start()
    try:
        await until_signalled()
    finally:
        await server.stop()
