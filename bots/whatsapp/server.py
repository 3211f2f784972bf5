"""`earshot whatsapp`: the Cloud API webhook on aiohttp's production runner, at /whatsapp/webhook.

GET is Meta's verification handshake: the challenge echoed when the verify token matches, else 403. POST is a
delivery: its X-Hub-Signature-256 (HMAC-SHA256 of the raw body, keyed by the app secret) is checked in constant
time over at most BODY_CAP bytes before anything is parsed; a bad or missing one is refused (401) and nothing is
done. A good one is answered 200 once its messages are stored as jobs (the runner answers them, in order per
chat); a payload that fails on earshot's side gets a 500, so Meta delivers it again. /healthz and /metrics are
served on the same port, as Slack's HTTP mode does.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging

import httpx
from aiohttp import web

from core.app import Earshot
from core.config import Settings
from core.errors import EarshotError
from core.logs import guard_logs
from core.words import messages

from ..health import Health, PlatformProbe
from ..web import listen, serve_until_signalled
from .graph import Graph, GraphError
from .handlers import WhatsAppHandlers

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/whatsapp/webhook"
BODY_CAP = 256 * 1024          # Meta's deliveries are a few kilobytes; anything past this is refused unread
DRAIN_SECONDS = 20.0           # how long shutdown waits for answers in progress
SIGNATURE_HEADER = "X-Hub-Signature-256"


def require_credentials(settings: Settings) -> None:
    """Fail early with one clear line naming every setting still missing."""
    secrets = {"WHATSAPP_ACCESS_TOKEN": settings.whatsapp_access_token,
               "WHATSAPP_APP_SECRET": settings.whatsapp_app_secret,
               "WHATSAPP_VERIFY_TOKEN": settings.whatsapp_verify_token}
    missing = [name for name, value in secrets.items() if value is None or not value.get_secret_value()]
    if not settings.whatsapp_phone_number_id:
        missing.insert(1, "WHATSAPP_PHONE_NUMBER_ID")
    if missing:
        raise EarshotError(messages.WHATSAPP_NO_CREDENTIALS.format(missing=", ".join(missing)))


async def signed_body(request: web.Request, secret: bytes, *, cap: int = BODY_CAP) -> bytes | None:
    """The raw body when its X-Hub-Signature-256 matches (compared in constant time), else None; over `cap`
    bytes (said or sent) it is refused with 413 before any more is read. Nothing is parsed here."""
    header = request.headers.get(SIGNATURE_HEADER, "")
    if not header.startswith("sha256="):
        return None
    if request.content_length is not None and request.content_length > cap:
        raise web.HTTPRequestEntityTooLarge(max_size=cap, actual_size=request.content_length)
    body = await request.content.read(cap + 1)
    while len(body) <= cap and not request.content.at_eof():
        body += await request.content.read(cap + 1 - len(body))
    if len(body) > cap:
        raise web.HTTPRequestEntityTooLarge(max_size=cap, actual_size=len(body))
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
    return body if hmac.compare_digest(expected, header[7:].strip().lower().encode(errors="replace")) else None


def connection_probe(graph: Graph) -> PlatformProbe:
    """For /healthz: the Graph API answers for the business number with our token."""
    async def probe() -> str | None:
        try:
            await graph.phone()
        except GraphError as err:
            return f"the Graph API refused ({err.status}, code {err.code})"
        except httpx.HTTPError as err:
            return f"the Graph API does not answer ({type(err).__name__})"
        return None
    return probe


class WhatsAppServer:
    """The webhook server, inside a running loop: `port = await server.start()`, later `await server.stop()`."""

    def __init__(self, settings: Settings, *, host: str = "0.0.0.0", port: int = 8080) -> None:
        require_credentials(settings)
        self.settings = settings
        self.host, self.port = host, port
        assert settings.whatsapp_app_secret is not None and settings.whatsapp_verify_token is not None
        self._secret = settings.whatsapp_app_secret.get_secret_value().encode()
        self._verify = settings.whatsapp_verify_token.get_secret_value().encode()
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        self.earshot = await Earshot.build(self.settings).open()    # the composition root (core.app)
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(60, connect=10))
        try:
            self.graph = Graph(self.settings, self._http)
            self.handlers = WhatsAppHandlers(self.earshot, self.graph)
            await self._check_token()
            await self.handlers.start()
            health = Health(self.earshot.history, connection_probe(self.graph), name="whatsapp")
            self._runner = await listen(self.web_app(health), self.host, self.port, shutdown_timeout=5)
        except BaseException:
            await self._close_clients()
            raise
        self.port = self._runner.addresses[0][1]     # the real port when asked for port 0
        log.info("WhatsApp webhook listening on http://%s:%d%s", self.host, self.port, WEBHOOK_PATH)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.shutdown()       # stop accepting deliveries first
            await self.handlers.stop(DRAIN_SECONDS)
            await self._runner.cleanup()
            self._runner = None
            await self._close_clients()

    async def _close_clients(self) -> None:
        await self._http.aclose()
        await self.earshot.aclose()

    async def _check_token(self) -> None:
        """The business number at start-up: a refused token stops us with a clear line; an unreachable API warns."""
        try:
            number = await self.graph.phone()
        except GraphError as err:
            if err.operator:
                raise EarshotError(err.operator_message()) from None
            log.warning("the Graph API did not describe the business number (%s); carrying on", err)
            return
        except httpx.HTTPError as err:
            log.warning("could not reach the Graph API to check the token (%s); carrying on", type(err).__name__)
            return
        log.info("serving WhatsApp number %s (%s)", number.get("display_phone_number"), number.get("verified_name"))

    # --- the routes ------------------------------------------------------------------------------
    def web_app(self, health: Health) -> web.Application:
        app = web.Application(client_max_size=BODY_CAP)
        app.router.add_get(WEBHOOK_PATH, self.verify)
        app.router.add_post(WEBHOOK_PATH, self.deliver)
        health.add_routes(app)      # /healthz and /metrics
        return app

    async def verify(self, request: web.Request) -> web.Response:
        """Meta saving the callback URL: echo hub.challenge when hub.verify_token is ours."""
        q = request.query
        token = q.get("hub.verify_token", "").encode("utf-8", "surrogateescape")
        if q.get("hub.mode") == "subscribe" and hmac.compare_digest(token, self._verify):
            return web.Response(text=q.get("hub.challenge", ""))
        log.warning("refused a webhook verification: wrong hub.verify_token (check WHATSAPP_VERIFY_TOKEN)")
        return web.Response(status=403, text="forbidden")

    async def deliver(self, request: web.Request) -> web.Response:
        body = await signed_body(request, self._secret)
        if body is None:
            log.warning("refused a delivery to %s: bad or missing %s (check WHATSAPP_APP_SECRET if this repeats)",
                        WEBHOOK_PATH, SIGNATURE_HEADER)
            return web.Response(status=401, text="bad signature")
        try:
            payload = json.loads(body)
        except ValueError:
            return web.Response(status=400, text="not JSON")
        try:
            await self.handlers.handle(payload)
        except Exception:
            log.exception("failed to handle a WhatsApp delivery; Meta will deliver it again")
            return web.Response(status=500, text="try again")
        return web.Response(text="ok")


def run(settings: Settings, *, port: int = 8080) -> None:
    """`earshot whatsapp`: the webhook on `port`. Blocks until SIGTERM or SIGINT."""
    require_credentials(settings)
    guard_logs(settings.secrets(), settings.log_format)
    asyncio.run(serve_until_signalled(WhatsAppServer(settings, port=port)))
