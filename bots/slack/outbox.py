"""Sending to Slack: where an answer goes, the "Listening…" status, and posting with one way of handling
Slack's refusals (a slash command's response_url when the bot can't post; retry or give up for jobs).
Used by the listeners, the digests and the job callbacks alike."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from core.errors import EarshotError
from core.flow.progress import StatusLine, Throttle
from core.store.jobs import Pieces, Undeliverable
from core.values import Progress
from core.words import messages

from . import render
from .files import scope_error
from .webapi import api_error

log = logging.getLogger(__name__)

LISTENING = messages.LISTENING
# Web API errors that mean "the bot can't post here", so a slash command answers through response_url
CANNOT_POST = {"not_in_channel", "channel_not_found", "is_archived", "restricted_action", "cannot_dm_bot"}
# Web API errors worth another try when delivering an answer
PASSING = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}


@dataclass(frozen=True, slots=True)
class Destination:
    """Where an answer goes: a channel, maybe a thread, and for slash commands a response_url fallback."""

    channel: str
    thread_ts: str | None = None
    response_url: str | None = None
    ephemeral: bool = False            # through response_url, shown only to the asker (a message shortcut)


class Status:
    """A "Listening…" message for long work (what it says and how often: core.flow.progress), edited as chunks
    finish and finally replaced by the answer."""

    def __init__(self, client: AsyncWebClient, dest: Destination, throttle: Throttle,
                 lang: str | None = None) -> None:
        self._client = client
        self._dest = dest
        self.ts: str | None = None
        self.line = StatusLine(throttle, dest.channel, render.SECTION_LIMIT, render.split, lang)

    async def progress(self, p: Progress) -> None:
        if (text := self.line.next(p, showing=self.ts is not None)) is None:
            return
        payload = render.messages(text, plain=p.partial is None)[0]
        try:
            if self.ts is None:
                resp = await self._client.chat_postMessage(channel=self._dest.channel,
                                                             thread_ts=self._dest.thread_ts, **payload)
                self.ts = resp["ts"]
            else:
                await self._client.chat_update(channel=self._dest.channel, ts=self.ts, **payload)
            self.line.shown = text
        except SlackApiError as err:
            # progress is a courtesy: never let it stop the answer
            log.warning("status message not posted: %s", api_error(err))


class Outbox:
    """Posts to Slack through the Web API client, and to response_urls through a plain HTTP pool."""

    def __init__(self, client: AsyncWebClient, http: httpx.AsyncClient) -> None:
        self.client = client
        self.http = http

    async def report(self, dest: Destination, err: EarshotError, status: Status | None,
                     lang: str | None = None) -> None:
        if err.silent:   # refused again: the user has been told already
            return
        if err.operator:
            log.error("operator action needed: %s", err.operator_message)
        else:
            log.info("told the user: %s (%s)", err.user_message, err.operator_message)
        await self.deliver(dest, render.messages(err.user_text(lang), plain=True), status)

    async def say(self, dest: Destination, text: str, *, markdown: bool = False) -> None:
        await self.deliver(dest, render.messages(text, plain=not markdown), None)

    async def deliver(self, dest: Destination, payloads: list[dict[str, Any]],
                      status: Status | None, *, pieces: Pieces | None = None) -> None:
        """Post the payloads in order; the first replaces the status message if there is one.

        pieces: for a job's answer, what an earlier try posted (core.store.jobs.Deliveries). Failures then raise, so
        the job runner retries (a passing fault) or gives up (Undeliverable), and a retry resumes after the
        payloads already posted instead of repeating them. Without it a failure is logged and the rest dropped.
        """
        for i, payload in enumerate(payloads):
            replacing = status if i == 0 else None
            if pieces is not None:
                await pieces.send(lambda p=payload, r=replacing: self._post(  # type: ignore[misc]
                    dest, p, r, raising=True))
            elif not await self._post(dest, payload, replacing, raising=False):
                return

    async def _post(self, dest: Destination, payload: dict[str, Any], status: Status | None, *,
                    raising: bool) -> bool:
        """One message (in place of the status message, if given); False when it failed and not `raising`."""
        try:
            if status is not None and status.ts is not None:
                try:
                    await self.client.chat_update(channel=dest.channel, ts=status.ts, **payload)
                    return True
                except SlackApiError as err:
                    log.warning("could not replace the status message: %s", api_error(err))
            await self.client.chat_postMessage(channel=dest.channel, thread_ts=dest.thread_ts,
                                               unfurl_links=False, unfurl_media=False, **payload)
        except SlackApiError as err:
            error = api_error(err)
            if dest.response_url and error in CANNOT_POST:
                await self.respond(dest.response_url, payload, ephemeral=dest.ephemeral)
                return True
            scoped = scope_error(err, "refused to post an answer")
            log.error("posting to Slack failed: %s", scoped.operator_message if scoped else error)
            if not raising:
                return False
            if error in PASSING or err.response.status_code >= 500:
                raise RuntimeError(f"Slack answered {error}") from None
            raise Undeliverable(f"Slack answered {error}") from None
        except Exception as err:   # a network failure must not crash the listener
            log.error("posting to Slack failed: %s", type(err).__name__)
            if not raising:
                return False
            raise RuntimeError(f"posting to Slack failed: {type(err).__name__}") from None
        return True

    async def respond(self, response_url: str, payload: dict[str, Any], *, ephemeral: bool = False) -> None:
        """Answer a slash command through its response_url (valid 30 minutes, 5 uses)."""
        kind = "ephemeral" if ephemeral else "in_channel"
        try:
            r = await self.http.post(response_url, json={"response_type": kind, **payload})
            if r.status_code >= 400:
                log.error("response_url answered HTTP %d", r.status_code)
        except httpx.HTTPError as err:
            log.error("response_url failed: %s", type(err).__name__)
