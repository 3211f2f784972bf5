"""`earshot telegram --webhook-url`: the HTTPS endpoint Telegram POSTs updates to, earshot's own.

python-telegram-bot's built-in webhook server (tornado) reads a body of up to 100 MB before it looks at
the secret header: three forged 90 MB POSTs put hundreds of megabytes on the bot. This server (aiohttp,
like the Slack app and /healthz) checks X-Telegram-Bot-Api-Secret-Token first, in constant time, and
reads at most bots.web.TELEGRAM_BODY_CAP bytes, refusing anything larger unread. It then does what the
library's server did: the update goes into the Application's update queue (whose put waits, with
HandledQueue.hold_puts, until the update is handled), so Telegram hears 200 once its job is stored.
An update the library can't read is answered 200 and skipped (as polling does, bots.telegram.updates),
so Telegram doesn't redeliver it forever.
"""
from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Mapping

from aiohttp import web
from telegram import Update
from telegram.ext import Application

from ..web import TELEGRAM_BODY_CAP, HeaderCheck, Refused, body_cap, guarded, listen, read_body
from .updates import readable

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def secret_check(secret: str) -> HeaderCheck:
    """A bots.web.HeaderCheck: the request carries our secret token (compared in constant time) as JSON."""
    expected = secret.encode()

    def check(headers: Mapping[str, str]) -> str | None:
        given = headers.get(SECRET_HEADER, "").encode("utf-8", "surrogatepass")
        if not hmac.compare_digest(given, expected):
            return "a missing or wrong Telegram secret token"
        if headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/json":
            return "not JSON"
        return None
    return check


class WebhookServer:
    """Serves POST {path} on listen:port into `application`'s update queue: `await start()`, `await stop()`."""

    def __init__(self, application: Application, *, path: str, secret: str, listen: str, port: int) -> None:
        self.application = application
        self.path = "/" + path.strip("/")
        self.listen = listen
        self.port = port
        self._check = secret_check(secret)
        self._runner: web.AppRunner | None = None

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> int:
        app = web.Application(client_max_size=TELEGRAM_BODY_CAP, middlewares=[body_cap(TELEGRAM_BODY_CAP)])
        handler = guarded(self._update)
        app.router.add_post(self.path, handler)
        if self.path != "/":                   # with or without a trailing slash, as Telegram may be told
            app.router.add_post(self.path + "/", handler)
        self._runner = await listen(app, self.listen, self.port, shutdown_timeout=5)
        self.port = self._runner.addresses[0][1]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _update(self, request: web.Request) -> web.Response:
        body = await read_body(request, cap=TELEGRAM_BODY_CAP, check=self._check)
        try:
            raw = json.loads(body)
        except ValueError:
            raise Refused(400, "a body that is not JSON") from None
        kept = readable(raw)
        if kept is None:
            raise Refused(400, "an update without an id")
        update = Update.de_json(kept, self.application.bot)
        await self.application.update_queue.put(update)
        return web.Response(status=200)
