"""Group digests in Slack: `/earshot digest …` and `/earshot forget`, quiet listening in opted-in channels,
scheduled posts. Thin glue over core.digest: who is an admin (users.info), who sent a clip, where to post.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncAck
from slack_sdk.errors import SlackApiError

from core import messages
from core.digest import FORGET, DigestCommand, parse_command
from core.digest import help_text as digest_help
from core.errors import AccessRefused, EarshotError
from core.models import ChatKey, Sender

from . import render
from .convert import PLATFORM, Command, audio_files, chat_key, is_dm, is_from_bot, sender_of
from .files import file_ref, scope_error
from .webapi import api_error, read

if TYPE_CHECKING:
    from .listeners import Destination, Handlers

log = logging.getLogger(__name__)

PREFIX = "/earshot "
NAMES_KEPT = 1000          # display names remembered per process


def help_text(retention_days: float) -> str:
    return digest_help(PREFIX, retention_days)


def _in_dm(channel: str) -> bool:
    return channel.startswith("D")


def _sent(event: dict[str, Any]) -> float:
    """When the message was posted: its ts ("1712345678.000200"), else now."""
    try:
        return float(event.get("ts") or time.time())
    except (TypeError, ValueError):
        return time.time()


class SlackDigests:
    def __init__(self, handlers: Handlers) -> None:
        self.h = handlers
        self.digests = handlers.assistant.digests
        self._names: dict[str, str] = {}

    def start(self) -> None:
        """Post scheduled digests in their channels (core.digest runs the schedule)."""
        self.digests.start_schedule(PLATFORM, self._post)

    # --- listening --------------------------------------------------------------------------------
    async def overhear(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        """A clip or audio file posted in a channel with digests on: transcribed quietly, nothing said."""
        files = audio_files(event)
        channel = event.get("channel")
        if not files or not isinstance(channel, str) or is_dm(event) or is_from_bot(event):
            return
        chat = chat_key(channel)
        if not await self.digests.listening(chat) or not await self.h._first_delivery(body):
            return
        async with self.h._handling(body):
            sender = sender_of(event, body)
            try:   # strangers and senders over a budget: skipped quietly, nothing downloaded
                await self.h.assistant.access.check(chat, sender, quietly=True)
            except AccessRefused:
                log.debug("not listening to a clip in %s: refused", channel)
                return
            name = await self._name(sender.user_id)
            for f in files:
                # a durable job: the runner fetches the file (files.info first for stubs) and stores the note
                await self.h.jobs.submit(self.digests.listen_job(
                    chat, key=f"{channel}:{event.get('ts')}:{f['id']}", file_ref=file_ref(f), sent=_sent(event),
                    sender=sender, name=name, source_id=str(f.get("id") or "")))

    # --- commands ---------------------------------------------------------------------------------
    async def on_command(self, ack: AsyncAck, command: dict[str, Any], cmd: Command) -> None:
        """`/earshot digest …` or `/earshot forget`: refusals go to the asker alone; the rest to the channel."""
        from .listeners import Destination
        channel = command["channel_id"]
        digest = FORGET if cmd.word == "forget" else parse_command(cmd.arg)
        sender = sender_of(command)
        refusal = await self._refusal(channel, digest, sender)
        if refusal is not None:
            await ack(refusal)
            return
        if digest.action == "invalid":     # how to write it: for the asker's eyes only
            await ack(await self.digests.respond(chat_key(channel), digest, prefix=PREFIX))
            return
        await ack(messages.DIGEST_WORKING if digest.action == "summary" else "")
        with self.h._tracked():
            await self._run(Destination(channel, None, command.get("response_url") or None), digest, sender)

    async def in_chat(self, cmd: Command, dest: Destination, sender: Sender) -> None:
        """`digest …` or `forget` typed to earshot in a mention (or a DM, where it only explains)."""
        digest = FORGET if cmd.word == "forget" else parse_command(cmd.arg)
        refusal = await self._refusal(dest.channel, digest, sender)
        if refusal is not None:
            if refusal:                # "": a stranger already told no
                await self.h._say(dest, refusal)
            return
        await self._run(dest, digest, sender)

    async def _refusal(self, channel: str, digest: DigestCommand, sender: Sender) -> str | None:
        """Why this can't be done here or by this person; None when it can."""
        if _in_dm(channel):
            return messages.DIGEST_GROUPS_ONLY.format(prefix=PREFIX)
        if digest.action == "invalid":
            return None
        chat = chat_key(channel)
        try:
            await self.h.assistant.check_access(chat, sender, spending=digest.action == "summary")
        except AccessRefused as err:
            return "" if err.silent else err.user_message
        if digest.needs_admin and not (admin := await self._is_admin(chat, sender)):
            return messages.DIGEST_ADMIN_UNKNOWN if admin is None else messages.DIGEST_ADMINS_ONLY
        return None

    async def _run(self, dest: Destination, digest: DigestCommand, sender: Sender) -> None:
        try:
            text = await self.digests.respond(chat_key(dest.channel), digest, prefix=PREFIX, sender=sender)
        except EarshotError as err:
            await self.h._report(dest, err, None)
            return
        # a digest is the model's Markdown under our header; the other answers are our plain sentences
        await self.h._say(dest, text, markdown=digest.action == "summary")

    # --- who --------------------------------------------------------------------------------------
    async def _user(self, user_id: str) -> dict[str, Any] | None:
        try:
            resp = await read(self.h.client, "users.info", user=user_id)
        except SlackApiError as err:
            if (scoped := scope_error(err, "refused users.info")):
                log.error("operator action needed: %s", scoped.operator_message)
            else:
                log.warning("users.info %s failed: %s", user_id, api_error(err))
            return None
        user = resp.get("user") or {}
        self._remember(user_id, user)
        return user

    async def _is_admin(self, chat: ChatKey, sender: Sender) -> bool | None:
        """A workspace admin or owner (or one of earshot's own admins); None if Slack wouldn't say."""
        if not sender.user_id:
            return False
        if self.h.assistant.access.is_admin(chat, sender):
            return True
        user = await self._user(sender.user_id)
        if user is None:
            return None
        return bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))

    async def _name(self, user_id: str | None) -> str:
        """How digests call a person: their display name, else their id."""
        if not user_id:
            return "someone"
        if user_id not in self._names:
            await self._user(user_id)
        return self._names.get(user_id, user_id)

    def _remember(self, user_id: str, user: dict[str, Any]) -> None:
        profile = user.get("profile") or {}
        name = (profile.get("display_name") or profile.get("real_name") or user.get("real_name")
                or user.get("name"))
        if name:
            if len(self._names) >= NAMES_KEPT:
                self._names.pop(next(iter(self._names)))
            self._names[user_id] = name

    # --- scheduled digests ------------------------------------------------------------------------
    async def _post(self, chat: ChatKey, text: str) -> None:
        from .listeners import Destination
        await self.h._deliver(Destination(chat.chat_id, chat.thread_id), render.messages(text), None)
