"""Fetch a shared Slack file's bytes with the bot token, and tell a missing scope from a real file."""
from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import httpx
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from core.audio.pipeline import check_length, read_capped
from core.config import DEFAULT_SLACK_API
from core.errors import AudioError, EarshotError, InputError
from core.values import Audio
from core.words import messages

from .convert import is_audio_file
from .webapi import api_error, needed_scope, read

log = logging.getLogger(__name__)

SLACK_FILES_ORIGIN = "https://files.slack.com"
_DEFAULT_PORTS = {"https": 443, "http": 80}
_SCOPE_HELP = ("add the {scope} bot scope under OAuth & Permissions (deploy/slack-manifest.yml lists "
               "every scope earshot needs) and reinstall the app to the workspace")


class SlackScopeMissing(EarshotError):
    """The app lacks an OAuth scope: the operator must fix the app's configuration."""

    operator = True

    def __init__(self, scope: str, what: str) -> None:
        super().__init__(messages.MISCONFIGURED, f"Slack {what}: {_SCOPE_HELP.format(scope=scope)}.")


def scope_error(err: SlackApiError, what: str) -> EarshotError | None:
    """An operator error for a missing scope in a Web API answer, else None."""
    scope = needed_scope(err)
    return SlackScopeMissing(scope, what) if scope else None


def _looks_like_html(content_type: str, head: bytes) -> bool:
    start = head.lstrip()[:15].lower()
    return "text/html" in content_type.lower() or start.startswith((b"<!doctype html", b"<html"))


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of a URL, the default port filled in; None when it has no host."""
    try:
        parts = urlsplit(url)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return None
    if not parts.hostname or port is None:
        return None
    return parts.scheme.lower(), parts.hostname.lower(), port


def token_origins(api_url: str | None) -> set[tuple[str, str, int]]:
    """Where the bot token may go with a file fetch: Slack's file host, or the origin of SLACK_API_URL
    when it is set to something else (a stand-in, a proxy)."""
    api = origin(api_url or DEFAULT_SLACK_API)
    if api is None or api == origin(DEFAULT_SLACK_API):
        return {origin(SLACK_FILES_ORIGIN)}  # type: ignore[arg-type]
    return {api}


def is_external(file: dict[str, Any]) -> bool:
    """A remote file (Google Drive, Dropbox…): its URL points outside Slack, so the token must not go there."""
    return file.get("mode") == "external" or bool(file.get("is_external"))


def needs_info(file: dict[str, Any]) -> bool:
    """A Slack Connect stub ({"id", "mode": "file_access", "file_access": "check_file_info"}) or a slim entry."""
    return file.get("file_access") == "check_file_info" or not (
        file.get("url_private_download") or file.get("url_private"))


async def file_info(client: AsyncWebClient, file: dict[str, Any]) -> dict[str, Any]:
    """The file's full record. Events may carry only id, name and mimetype, and Slack Connect channels
    only a stub, so ask files.info when needed."""
    if not needs_info(file):
        return file
    try:
        resp = await read(client, "files.info", file=file["id"])
    except SlackApiError as err:
        if (scoped := scope_error(err, "files.info refused to describe a shared file")):
            raise scoped from err
        raise InputError(messages.SLACK_FILE_UNAVAILABLE,
                         f"files.info {file.get('id')}: {api_error(err)}") from err
    return {**file, **resp["file"]}


async def download(client: AsyncWebClient, file: dict[str, Any], *, token: str, max_bytes: int,
                   http: httpx.AsyncClient, api_url: str | None = None) -> Audio:
    """The file as core Audio.

    The token goes only to Slack's own file origin (scheme, host and port), never to where a remote
    file's URL points. Slack answers a fetch without the files:read scope with its sign-in page and 200.
    """
    info = await file_info(client, file)
    if is_external(info):
        raise InputError(messages.SLACK_FILE_EXTERNAL, f"file {info.get('id')} is an external file")
    if not is_audio_file(info):
        raise AudioError(messages.NOT_AUDIO)
    check_length(int(info.get("size") or 0), max_bytes)
    url = info.get("url_private_download") or info.get("url_private")
    if not url:
        raise InputError(messages.SLACK_FILE_UNAVAILABLE, f"file {info.get('id')} has no private URL")
    if origin(url) not in token_origins(api_url):
        raise InputError(messages.SLACK_FILE_EXTERNAL,
                         f"file {info.get('id')} is served from {urlsplit(url).netloc or '?'}, not Slack's file host")
    try:
        # httpx drops the Authorization header when a redirect leaves the origin, so the token stays put
        async with http.stream("GET", url, headers={"Authorization": f"Bearer {token}"},
                               follow_redirects=True) as resp:
            if resp.status_code != 200:
                raise InputError(messages.SLACK_FILE_UNAVAILABLE,
                                 f"download of {info.get('id')} answered HTTP {resp.status_code}")
            content_type = resp.headers.get("content-type", "")

            def sign_in_page(head: bytes) -> None:
                if _looks_like_html(content_type, head):
                    raise SlackScopeMissing("files:read", "served its sign-in page instead of a shared file")
            data = await read_capped(resp.aiter_bytes(), max_bytes, first=sign_in_page)
    except httpx.HTTPError as err:
        raise InputError(messages.SLACK_FILE_UNAVAILABLE,
                         f"download of {info.get('id')} failed: {type(err).__name__}") from err
    return Audio(data, info.get("name"), info.get("mimetype"))
