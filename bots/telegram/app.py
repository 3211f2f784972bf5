"""Building and running the python-telegram-bot Application: long polling, or a webhook."""
from __future__ import annotations

import hmac
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
from .convert import PLATFORM
from .durable import ConfirmAfterHandled, HandledApplication, HandledQueue
from .handlers import TelegramHandlers

log = logging.getLogger(__name__)

# updates handled at once: different chats run concurrently (ChatLocks keep each chat in order)
CONCURRENT_UPDATES = 256
ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY]    # taps on the buttons under answers


class SecretToken(str):
    """The webhook secret. PTB checks a request's header with `header != secret`; Python asks the right
    operand first when it is a subclass of the left's type, so the check runs in constant time here."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, str):
            return NotImplemented
        return hmac.compare_digest(self.encode(), other.encode("utf-8", "surrogatepass"))

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = str.__hash__


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
        .connection_pool_size(64)
        .post_init(handlers.post_init)
        .post_stop(post_stop)
        .build()
    )
    if isinstance(app, HandledApplication):
        # an update is handled once, whichever replica gets it
        app.once = Redeliveries(parts.events, PLATFORM, parts.locks)
    handlers.register(app)
    return app


def connection_probe(application: Application) -> PlatformProbe:
    """For /healthz: updates are being fetched (or received) and Telegram answers getMe."""
    async def probe() -> str | None:
        if not application.running or (application.updater is not None and not application.updater.running):
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
    serves a webhook on listen:port at that URL's path and rejects requests without the secret token
    (TELEGRAM_WEBHOOK_SECRET, shared by replicas behind one URL; else a random one for this process).
    """
    guard_logs(settings.secrets(), settings.log_format)
    earshot = Earshot.build(settings)       # the composition root (core.app)
    app = build_application(settings, earshot)
    set_up = app.post_init
    health: HealthServer | None = None

    async def start(application: Application) -> None:
        nonlocal health
        await earshot.open()
        if set_up:
            await set_up(application)
        health = await serve_health(earshot.history, connection_probe(application), name="telegram",
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
    if webhook_url and isinstance(app.update_queue, HandledQueue):
        app.update_queue.hold_puts = True   # answer Telegram's POST only once the update is handled
    shared = settings.telegram_webhook_secret
    secret = shared.get_secret_value() if shared is not None else secrets.token_urlsafe(32)
    try:
        if webhook_url:
            app.run_webhook(listen=listen, port=port, url_path=urlsplit(webhook_url).path.lstrip("/"),
                            webhook_url=webhook_url, secret_token=SecretToken(secret),
                            allowed_updates=ALLOWED_UPDATES, bootstrap_retries=3)
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
