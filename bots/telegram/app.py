"""Building and running the python-telegram-bot Application: long polling, or a webhook."""
from __future__ import annotations

import asyncio
import logging
import secrets
from urllib.parse import urlsplit

from telegram import Update
from telegram.error import InvalidToken, NetworkError, TelegramError
from telegram.ext import Application, ApplicationBuilder

from core.app import Earshot
from core.config import Settings
from core.errors import EarshotError
from core.flow.redelivery import Redeliveries
from core.logs import RedactingFilter, guard_logs
from core.store.election import Election
from core.words import messages

from ..health import HealthServer, PlatformProbe, serve_health
from ..web import until_signalled
from .convert import PLATFORM
from .durable import ConfirmAfterHandled, HandledApplication, HandledQueue
from .handlers import TelegramHandlers
from .request import AiohttpRequest
from .webhook import WebhookServer

log = logging.getLogger(__name__)

# updates handled at once: different chats run concurrently (ChatLocks keep each chat in order)
CONCURRENT_UPDATES = 256
ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY]    # taps on the buttons under answers


def build_application(settings: Settings, parts: Earshot) -> Application:
    """The Application, wired to `parts` (core.app); the caller starts it and owns their lifetime."""
    if settings.telegram_bot_token is None or not settings.telegram_bot_token.get_secret_value():
        raise EarshotError(messages.NO_TELEGRAM_TOKEN)
    root = settings.telegram_api_base_url.rstrip("/")
    token = settings.telegram_bot_token.get_secret_value()
    handlers = TelegramHandlers(parts)
    queue = HandledQueue()   # updates are confirmed to Telegram only once handled: their jobs are stored
    # replicas on one database: one of them polls (the token's first part is the bot's public id)
    election = Election(parts.history, f"telegram-polling:{token.split(':')[0]}")

    async def post_stop(application: Application) -> None:
        await election.stop()
        await handlers.post_stop(application)

    app = (
        ApplicationBuilder()
        .application_class(HandledApplication)
        .update_queue(queue)
        .get_updates_request(ConfirmAfterHandled(queue, election, connection_pool_size=1))
        .token(token)
        # PTB appends the token to both: {root}/bot<token>/<method> and {root}/file/bot<token>/<path>
        .base_url(f"{root}/bot")
        .base_file_url(f"{root}/file/bot")
        .concurrent_updates(CONCURRENT_UPDATES)
        .request(AiohttpRequest(64))
        .post_init(handlers.post_init)
        .post_stop(post_stop)
        .build()
    )
    if isinstance(app, HandledApplication):
        # an update is handled once, whichever replica gets it
        app.once = Redeliveries(parts.events, PLATFORM, parts.locks)
    handlers.register(app)
    return app


def connection_probe(application: Application, webhook: WebhookServer | None = None) -> PlatformProbe:
    """For /healthz: updates are being fetched (or received) and Telegram answers getMe."""
    async def probe() -> str | None:
        receiving = webhook.running if webhook is not None else (
            application.updater is None or application.updater.running)
        if not application.running or not receiving:
            return "not receiving updates"
        try:
            await application.bot.get_me()
        except TelegramError as exc:
            return f"the Bot API does not answer ({type(exc).__name__})"
        return None
    return probe


class _NoStartupTraceback(logging.Filter):
    """PTB logs each failed start-up try (Telegram unreachable) with a 60-line traceback; one line says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.getMessage().startswith("Network Retry Loop"):
            err = record.exc_info[1]
            said = record.getMessage()
            record.msg, record.args = "%s (%s)", (said, err if isinstance(err, NetworkError) else type(err).__name__)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


logging.getLogger("telegram.ext").addFilter(_NoStartupTraceback())


def run(settings: Settings, *, webhook_url: str | None = None, port: int = 8443,
        listen: str = "0.0.0.0") -> None:
    """Run the bot until SIGINT/SIGTERM, answering in-flight updates before exiting.

    Long polling by default; with `webhook_url` (the public HTTPS address Telegram should POST to),
    serves a webhook on listen:port at that URL's path (bots.telegram.webhook) and rejects requests without
    the secret token (TELEGRAM_WEBHOOK_SECRET, shared by replicas behind one URL; else a random one for this
    process) before reading their bodies.
    """
    guard_logs(settings.secrets(), settings.log_format)
    earshot = Earshot.build(settings)       # the composition root (core.app)
    app = build_application(settings, earshot)
    set_up = app.post_init
    health: HealthServer | None = None
    webhook: WebhookServer | None = None
    if webhook_url:
        shared = settings.telegram_webhook_secret
        secret = shared.get_secret_value() if shared is not None else secrets.token_urlsafe(32)
        webhook = WebhookServer(app, path=urlsplit(webhook_url).path, secret=secret, listen=listen, port=port)

    async def start(application: Application) -> None:
        nonlocal health
        await earshot.open()
        if set_up:
            await set_up(application)
        health = await serve_health(earshot.history, connection_probe(application, webhook), name="telegram",
                                    port=settings.metrics_port)
        me = application.bot
        log.info("earshot is listening as @%s (%s)", me.username,
                 "webhook" if webhook_url else "long polling")

    async def stop(application: Application) -> None:
        if health is not None:
            await health.stop()
        await earshot.aclose()

    app.post_init = start
    app.post_shutdown = stop
    try:
        if webhook_url and webhook is not None:
            if isinstance(app.update_queue, HandledQueue):
                app.update_queue.hold_puts = True   # answer Telegram's POST only once the update is handled
            asyncio.run(_serve_webhook(app, webhook, webhook_url, secret))
        else:
            app.run_polling(allowed_updates=ALLOWED_UPDATES, bootstrap_retries=3)
    except InvalidToken:
        # PTB's exception text quotes the token: don't chain it into a traceback
        raise EarshotError(messages.BAD_TELEGRAM_TOKEN) from None
    except NetworkError as err:
        # only start-up lets it out (getMe, setWebhook); later PTB retries by itself
        reason = RedactingFilter(settings.secrets()).redact(err.message)
        raise EarshotError(messages.TELEGRAM_UNREACHABLE.format(url=settings.telegram_api_base_url,
                                                                reason=reason)) from None


SET_WEBHOOK_TRIES = 4


async def _serve_webhook(app: Application, server: WebhookServer, url: str, secret: str) -> None:
    """The Application's life in webhook mode, in run_webhook's order: initialize, post_init, Telegram told
    the URL and our server listening, start; on SIGTERM/SIGINT the server stops taking updates, those in
    hand are answered, then stop, post_stop, shutdown, post_shutdown."""
    await app.initialize()
    try:
        if app.post_init:
            await app.post_init(app)
        for attempt in range(SET_WEBHOOK_TRIES):
            try:
                await app.bot.set_webhook(url=url, secret_token=secret, allowed_updates=ALLOWED_UPDATES)
                break
            except NetworkError:
                if attempt == SET_WEBHOOK_TRIES - 1:
                    raise
                log.warning("setWebhook failed; trying again")
                await asyncio.sleep(1 + attempt)
        await server.start()
        try:
            await app.start()
            try:
                await until_signalled()
            finally:
                await server.stop()          # no new updates; those being handled are answered first
                await app.stop()
                if app.post_stop:
                    await app.post_stop(app)
        finally:
            await server.stop()
    finally:
        await app.shutdown()
        if app.post_shutdown:
            await app.post_shutdown(app)
