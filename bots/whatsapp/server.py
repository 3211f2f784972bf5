"""`earshot whatsapp`: the Cloud API webhook on aiohttp's production runner, at /whatsapp/webhook.

GET is Meta's verification handshake: the challenge echoed when the verify token matches, else 403. POST is a
delivery, read the way every endpoint earshot serves reads a body (bots.web.read_body): its X-Hub-Signature-256
must be there and well formed before a byte of the body is read, a body declared over WHATSAPP_BODY_CAP is refused
unread (413), and the HMAC-SHA256 of the raw body, keyed by the app secret, is compared in constant time before
anything is parsed; a bad or missing signature is refused (401) and nothing is done. A good one is answered 200
once its messages are stored as jobs (the runner answers them, in order per chat); a payload that fails on
earshot's side gets a 500, so Meta delivers it again. The public port also answers /healthz (ok, or what is wrong
in a few words); /metrics is served on EARSHOT_METRICS_PORT only (bots.health), with /healthz again.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Mapping

import httpx
from aiohttp import web

from core.app import Earshot
from core.config import Settings
from core.errors import EarshotError
from core.logs import guard_logs
from core.words import messages

from ..health import Health, PlatformProbe, Ports
from ..web import WHATSAPP_BODY_CAP, Refused, body_cap, guarded, read_body, serve_until_signalled
from .graph import Graph, GraphError
from .handlers import WhatsAppHandlers

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/whatsapp/webhook"
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


SIGNATURE = re.compile(r"sha256=[0-9a-f]{64}")


def signature_header(headers: Mapping[str, str]) -> str | None:
    """Before the body is read (a bots.web.HeaderCheck): the delivery carries a well-formed signature (None), or
    why not. Whether it matches the body is `signature_matches`, once the body (up to the cap) is read."""
    if not SIGNATURE.fullmatch(headers.get(SIGNATURE_HEADER, "").strip().lower()):
        return f"a missing or malformed {SIGNATURE_HEADER}"
    return None


def signature_matches(secret: bytes, headers: Mapping[str, str], body: bytes) -> bool:
    """The header (already found well formed) is the HMAC-SHA256 of `body` keyed by `secret`: constant time."""
    given = headers.get(SIGNATURE_HEADER, "").strip().lower().removeprefix("sha256=")
    return hmac.compare_digest(hmac.new(secret, body, hashlib.sha256).hexdigest(), given)


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
        self._ports = Ports()

    async def start(self) -> int:
        self.earshot = await Earshot.build(self.settings).open()    # the composition root (core.app)
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(60, connect=10))
        try:
            self.graph = Graph(self.settings, self._http)
            self.handlers = WhatsAppHandlers(self.earshot, self.graph)
            await self._check_token()
            await self.handlers.start()
            health = Health(self.earshot.history, connection_probe(self.graph), name="whatsapp")
            self.port = await self._ports.open(self.web_app(health), health, host=self.host, port=self.port,
                                               metrics_port=self.settings.metrics_port,
                                               what="WhatsApp webhook", path=WEBHOOK_PATH)
        except BaseException:
            await self._close_clients()
            raise
        return self.port

    async def stop(self) -> None:
        if self._ports.serving:
            await self._ports.wind_down(lambda: self.handlers.stop(DRAIN_SECONDS))
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
        """The public port: the webhook and /healthz. /metrics is not here (EARSHOT_METRICS_PORT only)."""
        app = web.Application(client_max_size=WHATSAPP_BODY_CAP, middlewares=[body_cap(WHATSAPP_BODY_CAP)])
        app.router.add_get(WEBHOOK_PATH, self.verify)
        app.router.add_post(WEBHOOK_PATH, guarded(self.deliver))
        health.add_routes(app, metrics=False)
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
        """A signed delivery (headers checked first, the body capped, then the signature over it), stored."""
        body = await read_body(request, cap=WHATSAPP_BODY_CAP, check=signature_header, refused=401)
        if not signature_matches(self._secret, request.headers, body):
            raise Refused(401, f"a {SIGNATURE_HEADER} that does not match the body (check WHATSAPP_APP_SECRET "
                               "if this repeats)")
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
