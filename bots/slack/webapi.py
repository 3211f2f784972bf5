"""Small helpers over slack-sdk's Web API client."""
from __future__ import annotations

from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse


async def read(client: AsyncWebClient, method: str, **params: Any) -> AsyncSlackResponse:
    """Call a read method (files.info, conversations.history…) as a form POST.

    slack-sdk sends these as GET; Slack accepts POST for every method, and so do the proxies and
    stand-ins that refuse a GET, so POST is the one that works everywhere. A boolean argument goes as
    `true` or `false`, as Slack's method pages write them (a form body would otherwise carry "True").
    """
    return await client.api_call(method, data={k: _form(v) for k, v in params.items() if v is not None})


def _form(value: Any) -> Any:
    return ("true" if value else "false") if isinstance(value, bool) else value


def api_error(err: SlackApiError) -> str:
    """Slack's error code from a failed call, even when the body wasn't JSON (a proxy's page, a 405)."""
    data = err.response.data if err.response is not None else None
    if isinstance(data, dict):
        return str(data.get("error") or "unknown_error")
    return f"HTTP {getattr(err.response, 'status_code', '?')}"


def needed_scope(err: SlackApiError) -> str | None:
    """The scope Slack says is missing, if that is what went wrong."""
    data = err.response.data if err.response is not None else None
    if isinstance(data, dict) and data.get("error") == "missing_scope":
        return str(data.get("needed") or "?")
    return None
