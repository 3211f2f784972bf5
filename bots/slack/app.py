"""Build the Bolt app: our Web API client (base URL injectable), request verification, the listeners."""
from __future__ import annotations

import logging

import httpx
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from core.app import Earshot
from core.config import Settings
from core.errors import EarshotError
from core.words import messages

from .listeners import Handlers
from .webapi import api_error

log = logging.getLogger(__name__)

# auth.test errors that mean the token itself is wrong, not that Slack is unreachable
_BAD_TOKEN = {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired",
              "not_allowed_token_type"}


class _DropTokenNotice(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN itself and warns that our client's token wins: it is the same token."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


_bolt_logger = logging.getLogger("earshot.slack.bolt")
_bolt_logger.addFilter(_DropTokenNotice())


def require_credentials(settings: Settings, *, socket_mode: bool) -> None:
    """Fail early with one clear line when a credential the chosen mode needs is missing."""
    needed = [settings.slack_bot_token] + ([] if socket_mode else [settings.slack_signing_secret])
    if any(s is None or not s.get_secret_value() for s in needed):
        raise EarshotError(messages.SLACK_NO_CREDENTIALS)


def web_client(settings: Settings) -> AsyncWebClient:
    assert settings.slack_bot_token is not None
    base = settings.slack_api_url if settings.slack_api_url.endswith("/") else settings.slack_api_url + "/"
    return AsyncWebClient(token=settings.slack_bot_token.get_secret_value(), base_url=base, timeout=30)


async def check_token(client: AsyncWebClient) -> str:
    """auth.test at startup: a wrong token stops us with a clear line; an unreachable Slack only warns."""
    try:
        resp = await client.auth_test()
    except SlackApiError as err:
        error = api_error(err)
        if error in _BAD_TOKEN:
            raise EarshotError(messages.SLACK_BAD_TOKEN.format(error=error)) from err
        log.warning("auth.test failed (%s); carrying on", error)
        return ""
    except Exception as err:  # network trouble at startup should not stop a long-running service
        log.warning("could not reach Slack to check the token (%s); carrying on", type(err).__name__)
        return ""
    log.info("signed in to Slack as %s in %s", resp.get("user"), resp.get("team"))
    return str(resp.get("user_id") or "")


def build_app(settings: Settings, earshot: Earshot, http: httpx.AsyncClient, *,
              socket_mode: bool = False) -> tuple[AsyncApp, Handlers]:
    """The Bolt app and its listeners. Over HTTP, Bolt checks each request's v0 signature and
    refuses any whose timestamp is more than 5 minutes off (401); Socket Mode needs no signature."""
    client = web_client(settings)
    # Bolt logs a refused request with its whole body (response_url included) at INFO;
    # our server logs a short line instead
    logging.getLogger("slack_bolt.RequestVerification").setLevel(logging.WARNING)
    secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
    app = AsyncApp(
        client=client,
        signing_secret=secret,
        request_verification_enabled=not socket_mode,
        # the listener stores a job and returns, then Bolt acks: Slack never holds an ack for a request we
        # could lose (the model work runs later, in the job runner)
        process_before_response=True,
        logger=_bolt_logger,
    )
    handlers = Handlers(client, earshot, http)
    handlers.register(app)
    return app, handlers
