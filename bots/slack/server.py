"""Serve the Slack app: an aiohttp server at POST /slack/events, or a Socket Mode connection.

The HTTP server is aiohttp's production runner (AppRunner + TCPSite), not Bolt's development
server. SIGTERM and SIGINT stop taking requests, let answers in progress finish, then close.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping

import httpx
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError

from core.app import Earshot
from core.config import Settings
from core.errors import EarshotError
from core.logs import guard_logs
from core.words import messages

from ..health import Health, HealthServer, PlatformProbe, Ports, serve_health
from ..web import SLACK_BODY_CAP, body_cap, guarded, read_body, serve_until_signalled
from .app import build_app, check_token, require_credentials
from .listeners import Handlers
from .webapi import api_error

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
DRAIN_SECONDS = 20.0           # how long shutdown waits for answers in progress


def connection_probe(app: AsyncApp, socket: AsyncSocketModeHandler | None = None) -> PlatformProbe:
    """For /healthz: Slack answers auth.test with our token (and, in Socket Mode, the socket is up)."""
    async def probe() -> str | None:
        if socket is not None and not await socket.client.is_connected():
            return "the Socket Mode connection is down"
        try:
            await app.client.auth_test()
        except SlackApiError as err:
            return f"auth.test failed ({api_error(err)})"
        except Exception as err:
            return f"the Web API does not answer ({type(err).__name__})"
        return None
    return probe


SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")
FRESH_SECONDS = 300            # Slack's advice: refuse requests signed more than five minutes ago


def signed_recently(headers: Mapping[str, str]) -> str | None:
    """Before a body is read: the request carries a well-formed Slack signature made in the last five minutes
    (None), or why not. Bolt then checks the signature itself against the body, read up to SLACK_BODY_CAP."""
    if not SIGNATURE.fullmatch(headers.get("X-Slack-Signature", "")):
        return "no Slack signature"
    try:
        stamp = int(headers.get("X-Slack-Request-Timestamp", ""))
    except ValueError:
        return "no Slack request timestamp"
    if abs(time.time() - stamp) > FRESH_SECONDS:
        return "a stale Slack request timestamp"
    return None


def web_app(app: AsyncApp, health: Health | None = None) -> web.Application:
    """POST /slack/events and GET /healthz. /metrics is not here: it is served on EARSHOT_METRICS_PORT only,
    never on the public events port."""
    @guarded
    async def events(request: web.Request) -> web.Response:
        body = await read_body(request, cap=SLACK_BODY_CAP, check=signed_recently, refused=401)
        bolt_request = AsyncBoltRequest(body=body.decode("utf-8", "replace"), query=request.query_string,
                                        headers=request.headers)  # type: ignore[arg-type]
        response = await app.async_dispatch(bolt_request)
        if response.status == 401:
            log.warning("refused a request to %s: bad or stale Slack signature (check SLACK_SIGNING_SECRET "
                        "if this repeats)", EVENTS_PATH)
        return await to_aiohttp_response(response)

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    web_application = web.Application(client_max_size=SLACK_BODY_CAP, middlewares=[body_cap(SLACK_BODY_CAP)])
    web_application.router.add_post(EVENTS_PATH, events)
    if health is None:
        web_application.router.add_get("/healthz", ok)
    else:
        health.add_routes(web_application, metrics=False)
    return web_application


class _Serving:
    """What both modes share: earshot's parts (core.app), an HTTP pool, the Bolt app and its listeners."""

    settings: Settings
    earshot: Earshot
    _handlers: Handlers

    async def _open(self, *, socket_mode: bool = False) -> AsyncApp:
        """Everything up, jobs left unanswered resumed, daily digests and retention scheduled."""
        self.earshot = await Earshot.build(self.settings).open()    # the composition root (core.app)
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(60, connect=10))
        try:
            app, self._handlers = build_app(self.settings, self.earshot, self._http, socket_mode=socket_mode)
            await check_token(app.client)
            await self._handlers.start()
        except BaseException:
            await self._close_clients()
            raise
        return app

    async def _close_clients(self) -> None:
        await self._http.aclose()
        await self.earshot.aclose()


class SlackServer(_Serving):
    """The HTTP mode, inside a running loop: `port = await server.start()`, later `await server.stop()`."""

    def __init__(self, settings: Settings, *, host: str = "0.0.0.0", port: int = 3000) -> None:
        require_credentials(settings, socket_mode=False)
        self.settings = settings
        self.host = host
        self.port = port
        self._ports = Ports()

    async def start(self) -> int:
        app = await self._open()
        try:
            health = Health(self.earshot.history, connection_probe(app), name="slack")
            self.port = await self._ports.open(web_app(app, health), health, host=self.host, port=self.port,
                                               metrics_port=self.settings.metrics_port,
                                               what="Slack app", path=EVENTS_PATH)
        except BaseException:
            await self._close_clients()
            raise
        return self.port

    async def stop(self) -> None:
        await self._ports.wind_down(lambda: self._handlers.drain(DRAIN_SECONDS))
        await self._close_clients()


class SlackSocketMode(_Serving):
    """Socket Mode: one outgoing WebSocket to Slack, no public URL. `await start()`, then `await stop()`."""

    def __init__(self, settings: Settings) -> None:
        require_credentials(settings, socket_mode=True)
        if settings.slack_app_token is None:
            raise EarshotError(messages.SLACK_NO_CREDENTIALS)
        self.settings = settings
        self._handler: AsyncSocketModeHandler | None = None
        self._health: HealthServer | None = None

    async def start(self) -> None:
        app = await self._open(socket_mode=True)
        try:
            assert self.settings.slack_app_token is not None
            self._handler = AsyncSocketModeHandler(app, self.settings.slack_app_token.get_secret_value())
            # Ask for the WebSocket URL ourselves: the SDK retries a refused app token forever, quietly.
            try:
                self._handler.client.wss_uri = await self._handler.client.issue_new_wss_url()
            except SlackApiError as err:
                raise EarshotError(messages.SLACK_BAD_APP_TOKEN.format(error=api_error(err))) from err
            await self._handler.connect_async()
            self._health = await serve_health(self.earshot.history, connection_probe(app, self._handler),
                                              name="slack", port=self.settings.metrics_port)
        except BaseException:
            if self._handler is not None:
                await self._handler.close_async()
                self._handler = None
            await self._close_clients()
            raise
        log.info("Slack app connected in Socket Mode")

    async def stop(self) -> None:
        if self._health is not None:
            await self._health.stop()
            self._health = None
        if self._handler is not None:
            await self._handler.close_async()     # no new events
            await self._handlers.drain(DRAIN_SECONDS)
            self._handler = None
            await self._close_clients()


def run(settings: Settings, *, port: int = 3000) -> None:
    """`earshot slack`: Socket Mode when SLACK_APP_TOKEN is set, else HTTP on `port`. Blocks until SIGTERM."""
    socket_mode = settings.slack_app_token is not None and bool(settings.slack_app_token.get_secret_value())
    require_credentials(settings, socket_mode=socket_mode)
    guard_logs(settings.secrets(), settings.log_format)     # response_url paths are bearer-like secrets
    asyncio.run(serve_until_signalled(SlackSocketMode(settings) if socket_mode else SlackServer(settings, port=port)))
