"""What earshot does with each Slack event: DMs, @mentions and `/earshot`, turned into core Requests.

Every answer goes through `_answer`, so errors are reported the same way everywhere: a user error is
told to the user in the thread; an operator error is logged with what to fix, and the user gets a
short apology.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import httpx
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from core import messages
from core.config import Settings
from core.errors import EarshotError
from core.models import ChatKey, Progress, Request, Task
from core.service import Assistant

from . import render
from .convert import (LATER_WORDS, PLATFORM, Command, audio_files, chat_key, is_dm, is_from_bot,
                      latest_audio, parse_command, strip_mentions, task_for_text, thread_of)
from .files import download, scope_error
from .webapi import api_error, read

log = logging.getLogger(__name__)

LISTENING = "Listening…"
STATUS_INTERVAL = 1.0          # seconds between status edits: chat.update is rate limited
HISTORY_LOOKBACK = 100         # messages searched for the channel's latest audio
# Web API errors that mean "the bot can't post here", so a slash command answers through response_url
_CANNOT_POST = {"not_in_channel", "channel_not_found", "is_archived", "restricted_action", "cannot_dm_bot"}
_ANSWERED_MESSAGE_SUBTYPES = {None, "file_share", "thread_broadcast"}

HELP = """*earshot* listens to audio and answers about it.
• *In a DM:* send a voice clip or an audio file (mp3, m4a, wav, ogg, flac…), maybe with a question; \
type to follow up.
• *In a channel:* @mention me with an audio file, or in a thread that has one.
• `/earshot transcribe` · `summarize` · `sentiment` · `events` — about the latest audio here
• `/earshot ask <question>` · `/earshot translate <language>`
• `/earshot reset` forgets this conversation · `/earshot usage` shows today's tokens"""


@dataclass(frozen=True, slots=True)
class Destination:
    """Where an answer goes: a channel, maybe a thread, and for slash commands a response_url fallback."""

    channel: str
    thread_ts: str | None = None
    response_url: str | None = None


class Status:
    """A "Listening…" message for long work, edited as chunks finish and finally replaced by the answer."""

    def __init__(self, handlers: "Handlers", dest: Destination) -> None:
        self._h = handlers
        self._dest = dest
        self.ts: str | None = None
        self._last = 0.0

    async def progress(self, p: Progress) -> None:
        now = time.monotonic()
        if now - self._last < STATUS_INTERVAL or (p.total <= 1 and p.partial is None):
            return
        self._last = now
        text = f"{LISTENING} {p.done}/{p.total} parts done" if p.partial is None else p.partial
        payload = render.messages(text, plain=p.partial is None)[0]
        try:
            if self.ts is None:
                resp = await self._h.client.chat_postMessage(channel=self._dest.channel,
                                                             thread_ts=self._dest.thread_ts, **payload)
                self.ts = resp["ts"]
            else:
                await self._h.client.chat_update(channel=self._dest.channel, ts=self.ts, **payload)
        except SlackApiError as err:
            # progress is a courtesy: never let it stop the answer
            log.warning("status message not posted: %s", api_error(err))


class Handlers:
    """The listeners, holding what they share: the Web API client, the Assistant, an HTTP pool for files."""

    def __init__(self, client: AsyncWebClient, assistant: Assistant, settings: Settings,
                 http: httpx.AsyncClient) -> None:
        self.client = client
        self.assistant = assistant
        self.settings = settings
        self.http = http
        self._inflight: set[asyncio.Task[Any]] = set()

    def register(self, app: AsyncApp) -> None:
        app.event("message")(self.on_message)
        app.event("app_mention")(self.on_mention)
        app.command("/earshot")(self.on_command)
        # Acknowledge everything else (Slack retries unacknowledged events) and do nothing.
        app.event(re.compile(".*"))(self._ignore)
        app.action(re.compile(".*"))(self._ack_only)
        app.error(self.on_error)

    async def drain(self, timeout: float) -> None:
        """Let answers in progress finish (or give up after `timeout` seconds) before shutting down."""
        pending = {t for t in self._inflight if not t.done()}
        if pending:
            log.info("waiting for %d answer(s) in progress", len(pending))
            await asyncio.wait(pending, timeout=timeout)

    # ---- listeners ---------------------------------------------------------------------------------
    async def on_message(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        """A DM: audio gets an answer in its thread; text is a command or a follow-up."""
        if not is_dm(event) or is_from_bot(event) or event.get("subtype") not in _ANSWERED_MESSAGE_SUBTYPES:
            return
        if not await self._first_delivery(body):
            return
        channel = event["channel"]
        chat = chat_key(channel)                       # one history per DM
        text = strip_mentions(event.get("text"))
        user = event.get("user")
        files = audio_files(event)
        with self._tracked():
            if files:
                await self.assistant.remember_audio(chat, files[-1]["id"])
                task, arg = task_for_text(text)
                await self._answer(Destination(channel, thread_of(event)), chat, task, arg, files[-1], user)
            elif event.get("files"):
                await self._say(Destination(channel, thread_of(event)), messages.NOT_AUDIO)
            elif (cmd := parse_command(text, strict=True)) is not None:
                await self._run_command(cmd, Destination(channel, event.get("thread_ts")), chat, user)
            elif text:
                await self._answer(Destination(channel, event.get("thread_ts")), chat, Task.FOLLOW_UP, text,
                                   None, user)

    async def on_mention(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        """An @mention in a channel: answer about its audio, or the latest audio in its thread."""
        if is_dm(event) or is_from_bot(event):
            return                                     # DMs arrive as message.im; bots are never answered
        if not await self._first_delivery(body):
            return
        channel = event["channel"]
        dest = Destination(channel, thread_of(event))
        chat = chat_key(channel, dest.thread_ts)       # one history per thread
        text = strip_mentions(event.get("text"))
        user = event.get("user")
        with self._tracked():
            try:
                file = await self._mention_audio(event)
            except EarshotError as err:
                await self._report(dest, err, None)
                return
            cmd = parse_command(text, strict=True)
            if cmd is not None and cmd.task is None:
                await self._run_command(cmd, dest, chat, user)
                return
            if file is None:
                await self._say(dest, messages.NO_AUDIO_YET)
                return
            await self.assistant.remember_audio(chat_key(channel), file["id"])
            task, arg = task_for_text(text)
            await self._answer(dest, chat, task, arg, file, user)

    async def on_command(self, ack: AsyncAck, command: dict[str, Any]) -> None:
        """`/earshot <task> [args]`: acknowledge at once (Slack drops acks after 3 s), then work."""
        cmd = parse_command(command.get("text"))
        assert cmd is not None
        channel = command["channel_id"]
        chat = chat_key(channel)
        if cmd.word in ("", "help"):
            await ack(HELP)
            return
        if cmd.word in LATER_WORDS:
            await ack(messages.SLACK_NOT_YET.format(word=cmd.word))
            return
        if cmd.word in ("reset", "usage"):
            await ack(await self._chat_state(cmd.word, chat))    # local SQLite: well inside the 3 s
            return
        if cmd.task is None:
            await ack(f"I don't know `/earshot {render.escape(cmd.word)}`.\n\n{HELP}")
            return
        if cmd.task is Task.TRANSLATE and not cmd.arg:
            await ack(messages.NEED_LANGUAGE)
            return
        await ack(LISTENING)
        dest = Destination(channel, None, command.get("response_url") or None)
        with self._tracked():
            await self._run_command(cmd, dest, chat, command.get("user_id"), header=True)

    async def on_error(self, error: Exception, body: dict[str, Any] | None = None) -> None:
        # Bolt calls this for anything a listener lets escape; log it, keep serving.
        kind = (body or {}).get("type") or (body or {}).get("command") or "request"
        log.error("unhandled error in a Slack %s: %s", kind, type(error).__name__, exc_info=error)

    async def _ignore(self) -> None:
        return None

    async def _ack_only(self, ack: AsyncAck) -> None:
        await ack()

    # ---- shared steps ------------------------------------------------------------------------------
    async def _run_command(self, cmd: Command, dest: Destination, chat: ChatKey, user: str | None, *,
                           header: bool = False) -> None:
        """A named command, from `/earshot` or typed in a DM or mention, acting on the chat's latest audio."""
        if cmd.word in ("", "help"):
            await self._say(dest, HELP, markdown=True)
        elif cmd.word in LATER_WORDS:
            await self._say(dest, messages.SLACK_NOT_YET.format(word=cmd.word), markdown=True)
        elif cmd.word in ("reset", "usage"):
            await self._say(dest, await self._chat_state(cmd.word, chat))
        elif cmd.task is not None:
            task, arg = cmd.task, cmd.arg or None
            if task is Task.ASK and not arg:
                task = Task.CHAT
            try:
                file = await self._channel_audio(dest.channel, chat)
            except EarshotError as err:
                await self._report(dest, err, None)
                return
            if file is None:
                await self._say(dest, messages.NO_AUDIO_YET)
                return
            top = None
            if header:   # in a channel, say who asked what about which file
                asked = render.escape(f"/earshot {cmd.word} {cmd.arg}".strip())
                who = f"<@{user}> " if user else ""
                top = f"{who}`{asked}` · {render.escape(file.get('name') or file['id'])}"
            await self._answer(dest, chat, task, arg, file, user, header=top)

    async def _chat_state(self, word: str, chat: ChatKey) -> str:
        if word == "reset":
            await self.assistant.reset(chat)
            return "Done: I've forgotten our conversation here."
        u = await self.assistant.usage(chat)
        return (f"Today here: {u.total:,} tokens ({u.audio_tokens:,} audio, {u.input_tokens:,} in, "
                f"{u.output_tokens:,} out).")

    async def _answer(self, dest: Destination, chat: ChatKey, task: Task, text: str | None,
                      file: dict[str, Any] | None, user: str | None, *, header: str | None = None) -> None:
        status = Status(self, dest)
        try:
            audio = None
            if file is not None:
                audio = await download(self.client, file, token=self.client.token or "",
                                       max_bytes=self.settings.max_file_bytes, http=self.http)
            reply = await self.assistant.handle(Request(chat, task, audio=audio, text=text, user_id=user),
                                                progress=status.progress)
        except EarshotError as err:
            await self._report(dest, err, status)
            return
        except Exception:
            log.exception("answering a Slack %s failed", task.value)
            await self._deliver(dest, render.messages(messages.INTERNAL, plain=True), status)
            return
        await self._deliver(dest, render.messages(reply.text, header=header), status)

    async def _report(self, dest: Destination, err: EarshotError, status: Status | None) -> None:
        if err.operator:
            log.error("operator action needed: %s", err.operator_message)
        else:
            log.info("told the user: %s (%s)", err.user_message, err.operator_message)
        await self._deliver(dest, render.messages(err.user_message, plain=True), status)

    async def _say(self, dest: Destination, text: str, *, markdown: bool = False) -> None:
        await self._deliver(dest, render.messages(text, plain=not markdown), None)

    async def _deliver(self, dest: Destination, payloads: list[dict[str, Any]],
                       status: Status | None) -> None:
        """Post the payloads in order; the first replaces the status message if there is one."""
        for i, payload in enumerate(payloads):
            try:
                if i == 0 and status is not None and status.ts is not None:
                    try:
                        await self.client.chat_update(channel=dest.channel, ts=status.ts, **payload)
                        continue
                    except SlackApiError as err:
                        log.warning("could not replace the status message: %s", api_error(err))
                await self.client.chat_postMessage(channel=dest.channel, thread_ts=dest.thread_ts,
                                                   unfurl_links=False, unfurl_media=False, **payload)
            except SlackApiError as err:
                error = api_error(err)
                if dest.response_url and error in _CANNOT_POST:
                    await self._respond(dest.response_url, payload)
                    continue
                scoped = scope_error(err, "refused to post an answer")
                log.error("posting to Slack failed: %s", scoped.operator_message if scoped else error)
                return
            except Exception as err:   # a network failure must not crash the listener
                log.error("posting to Slack failed: %s", type(err).__name__)
                return

    async def _respond(self, response_url: str, payload: dict[str, Any]) -> None:
        """Answer a slash command through its response_url (valid 30 minutes, 5 uses)."""
        try:
            r = await self.http.post(response_url, json={"response_type": "in_channel", **payload})
            if r.status_code >= 400:
                log.error("response_url answered HTTP %d", r.status_code)
        except httpx.HTTPError as err:
            log.error("response_url failed: %s", type(err).__name__)

    async def _first_delivery(self, body: dict[str, Any]) -> bool:
        """False for an event already handled (Slack retries; we may have restarted since)."""
        event_id = body.get("event_id")
        if not event_id:
            return True
        if await self.assistant.claim_event(PLATFORM, str(event_id)):
            return True
        log.info("skipping repeated delivery of %s", event_id)
        return False

    async def _mention_audio(self, event: dict[str, Any]) -> dict[str, Any] | None:
        files = audio_files(event)
        if files:
            return files[-1]
        if not event.get("thread_ts"):
            return None
        try:
            resp = await read(self.client, "conversations.replies", channel=event["channel"],
                              ts=event["thread_ts"], limit=200)
        except SlackApiError as err:
            if (scoped := scope_error(err, "refused to read a thread")):
                raise scoped from err
            log.warning("conversations.replies failed: %s", api_error(err))
            return None
        return latest_audio(resp.get("messages") or [])

    async def _channel_audio(self, channel: str, chat: ChatKey) -> dict[str, Any] | None:
        """The most recent audio in a channel: its history, else the last one we saw there."""
        try:
            resp = await read(self.client, "conversations.history", channel=channel, limit=HISTORY_LOOKBACK)
            found = latest_audio(resp.get("messages") or [])
            if found:
                return found
        except SlackApiError as err:
            # not a member of the channel, say: fall back to what we remember
            if (scoped := scope_error(err, "refused to read channel history")):
                log.error("operator action needed: %s", scoped.operator_message)
            else:
                log.info("conversations.history of %s failed: %s", channel, api_error(err))
        ref = await self.assistant.latest_audio(chat)
        return {"id": ref} if ref else None

    def _tracked(self) -> "_Tracked":
        return _Tracked(self._inflight)


class _Tracked:
    """Registers the running listener task so shutdown can wait for it."""

    def __init__(self, tasks: set[asyncio.Task[Any]]) -> None:
        self._tasks = tasks
        self._task = asyncio.current_task()

    def __enter__(self) -> None:
        if self._task is not None:
            self._tasks.add(self._task)

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._tasks.discard(self._task)
