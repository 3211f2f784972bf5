"""Group digests in Slack: `/earshot digest …` and `/earshot forget`, quiet listening in opted-in channels,
scheduled posts. Thin glue over core.flow.digest: who is an admin (users.info), who sent a clip, where to post.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from slack_bolt.async_app import AsyncAck
from slack_sdk.errors import SlackApiError

from core.flow.digest import FORGET, DigestCommand, DigestService, parse_digest
from core.store.jobs import NewJob
from core.values import ChatKey, Incoming, Sender
from core.words import messages

from . import render
from .convert import Command, chat_key
from .files import scope_error
from .outbox import Destination, Outbox
from .webapi import api_error, read

log = logging.getLogger(__name__)

PREFIX = "/earshot "
NAMES_KEPT = 1000          # display names remembered per process


def _in_dm(channel: str) -> bool:
    return channel.startswith("D")


class SlackDigests:
    """The Slack side of core.flow.digest's DigestService: names and admins from users.info, answers by the outbox."""

    def __init__(self, digests: DigestService, outbox: Outbox) -> None:
        self.digests = digests
        self.outbox = outbox
        self.client = outbox.client
        self._names: dict[str, str] = {}
        self._locales: dict[str, str | None] = {}

    # --- listening --------------------------------------------------------------------------------
    async def heard_in(self, chat: ChatKey, sender: Sender) -> bool:
        """Digests are on in the channel and the sender may be heard (checked quietly, nothing downloaded)."""
        return await self.digests.may_hear(chat, sender)

    async def listen_jobs(self, message: Incoming) -> list[NewJob]:
        """A job per audio file of a channel message, to transcribe quietly (the runner fetches each)."""
        channel, sender = message.chat.chat_id, message.sender
        name = await self._name(sender.user_id)
        sent = message.sent or time.time()       # when it was posted (its ts), else now
        return [self.digests.listen_job(
            chat_key(channel), key=f"{channel}:{message.message_id}:{f.unique_id}", file_ref=f.ref, sent=sent,
            sender=sender, name=name, source_id=f.unique_id or "") for f in message.audio]

    # --- commands ---------------------------------------------------------------------------------
    async def on_command(self, ack: AsyncAck, command: Incoming, cmd: Command, lang: str | None = None) -> None:
        """`/earshot digest …` or `/earshot forget`: refusals go to the asker alone; the rest to the channel."""
        channel = command.chat.chat_id
        digest = FORGET if cmd.word == "forget" else parse_digest(cmd.arg)
        sender = command.sender
        refusal = await self._refusal(channel, digest, sender, lang)
        if refusal is not None:
            await ack(refusal)
            return
        if digest.action == "invalid":     # how to write it: for the asker's eyes only
            await ack(await self.digests.respond(chat_key(channel), digest, prefix=PREFIX, lang=lang))
            return
        await ack(messages.text(messages.DIGEST_WORKING, lang) if digest.action == "summary" else "")
        await self._run(Destination(channel, None, command.respond_to), digest, sender, lang)

    async def in_chat(self, cmd: Command, dest: Destination, sender: Sender, lang: str | None = None) -> None:
        """`digest …` or `forget` typed to earshot in a mention (or a DM, where it only explains)."""
        digest = FORGET if cmd.word == "forget" else parse_digest(cmd.arg)
        text = await self.digests.run(chat_key(dest.channel), digest, sender, group=not _in_dm(dest.channel),
                                      prefix=PREFIX, is_admin=lambda: self._is_admin(sender), lang=lang)
        if text is not None:
            await self.outbox.say(dest, text, markdown=digest.action == "summary")

    async def _refusal(self, channel: str, digest: DigestCommand, sender: Sender,
                       lang: str | None = None) -> str | None:
        """Why this can't be done here or by this person (core.flow.digest decides); None when it can."""
        return await self.digests.refusal(chat_key(channel), digest, sender, group=not _in_dm(channel), prefix=PREFIX,
                                          is_admin=lambda: self._is_admin(sender), lang=lang)

    async def _run(self, dest: Destination, digest: DigestCommand, sender: Sender, lang: str | None = None) -> None:
        text = await self.digests.answer(chat_key(dest.channel), digest, sender, prefix=PREFIX, lang=lang)
        if text is not None:
            # a digest is the model's Markdown under our header; the other answers are our plain sentences
            await self.outbox.say(dest, text, markdown=digest.action == "summary")

    # --- who --------------------------------------------------------------------------------------
    async def _user(self, user_id: str) -> dict[str, Any] | None:
        try:
            resp = await read(self.client, "users.info", user=user_id, include_locale="true")
        except SlackApiError as err:
            if (scoped := scope_error(err, "refused users.info")):
                log.error("operator action needed: %s", scoped.operator_message)
            else:
                log.warning("users.info %s failed: %s", user_id, api_error(err))
            return None
        user = resp.get("user") or {}
        self._remember(user_id, user)
        return user

    async def is_admin(self, sender: Sender) -> bool | None:
        return await self._is_admin(sender)

    async def _is_admin(self, sender: Sender) -> bool | None:
        """A workspace admin or owner; None if Slack wouldn't say."""
        if not sender.user_id:
            return False
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

    async def locale(self, user_id: str | None) -> str | None:
        """The language a person's Slack is in ("fr-FR"), for what earshot says to them; None if unknown."""
        if not user_id:
            return None
        if user_id not in self._locales:
            if await self._user(user_id) is None:
                self._locales[user_id] = None     # Slack wouldn't say: English, and not asked again each time
        return self._locales.get(user_id)

    def _remember(self, user_id: str, user: dict[str, Any]) -> None:
        if len(self._locales) >= NAMES_KEPT:
            self._locales.pop(next(iter(self._locales)))
        self._locales[user_id] = user.get("locale") or None
        profile = user.get("profile") or {}
        name = (profile.get("display_name") or profile.get("real_name") or user.get("real_name")
                or user.get("name"))
        if name:
            if len(self._names) >= NAMES_KEPT:
                self._names.pop(next(iter(self._names)))
            self._names[user_id] = name

    # --- scheduled digests ------------------------------------------------------------------------
    async def post(self, chat: ChatKey, text: str) -> None:
        """A scheduled digest, in its channel (core.flow.digest runs the schedule)."""
        await self.outbox.deliver(Destination(chat.chat_id, chat.thread_id), render.messages(text), None)
