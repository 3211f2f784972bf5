"""What earshot does with each Slack event: DMs, @mentions and `/earshot`, turned into core Requests.

Each event or command is converted once, as it arrives (.convert.incoming_event, .incoming_command); past that the
listeners take the Incoming and use the Web API only to read more (a thread, the channel's history) and to answer.

Every answer goes through `_answer`, so errors are reported the same way everywhere: a user error is
told to the user in the thread; an operator error is logged with what to fix, and the user gets a
short apology.
"""
from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any

import httpx
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from core.app import Earshot
from core.errors import AccessRefused, EarshotError
from core.flow import intake
from core.flow.commands import DIGEST_WORDS, STATE_WORDS, command_in, with_question
from core.flow.redelivery import Redeliveries
from core.flow.runner import Reservation
from core.store.jobs import NewJob
from core.values import CarriedAudio, ChatKey, Incoming, Sender, Task
from core.words import help_texts, messages

from . import render
from .actions import SlackActions
from .convert import (
    PLATFORM,
    Command,
    carried,
    chat_key,
    incoming_command,
    incoming_event,
    is_from_bot,
    latest_audio,
    link_audio,
    parse_command,
    task_for_text,
)
from .files import scope_error
from .outbox import LISTENING, Destination
from .parts import SlackParts
from .webapi import api_error, read

log = logging.getLogger(__name__)

HISTORY_LOOKBACK = 100         # messages searched for the channel's latest audio
_ANSWERED_MESSAGE_SUBTYPES = {None, "file_share", "thread_broadcast"}


def _answer_thread(came: Incoming) -> str | None:
    """The thread an answer to this message belongs in: its own thread, or the one it is already in."""
    return came.thread_id or came.message_id or None


class Handlers(SlackParts):
    """The listeners, over what they share with .actions (.parts: the Web API client, earshot's parts, the outbox)."""

    def __init__(self, client: AsyncWebClient, app: Earshot, http: httpx.AsyncClient) -> None:
        super().__init__(client, app, http)
        # the parts of earshot the listeners use (core.app builds them)
        self.access, self.history, self.chat_state = app.access, app.history, app.chat_state
        # Slack retries events (maybe to another replica while the first still works on it): each is handled once
        self.once = Redeliveries(app.events, PLATFORM, app.locks)
        # answers are durable jobs (core.flow.runner): stored before Slack gets its ack, resumed after a crash
        self.jobs = app.jobs

    def help_text(self, lang: str | None, chat: ChatKey | None = None) -> str:
        group = chat is None or not chat.chat_id.startswith("D")      # D…: a DM, where digests don't work
        return help_texts.slack_help(lang, self.earshot.settings.retention_days, with_lang=True, group=group)

    async def start(self) -> None:
        """Resume what a previous process left unanswered; post scheduled digests (and keep retention)."""
        await self.earshot.start(PLATFORM, self.digests.post)

    def register(self, app: AsyncApp) -> None:
        app.event("message")(self.on_message)
        app.event("app_mention")(self.on_mention)
        app.command("/earshot")(self.on_command)
        SlackActions(self).register(app)    # shortcuts, the reaction, the Home tab, buttons (.actions)
        # Acknowledge everything else (Slack retries unacknowledged events) and do nothing.
        app.event(re.compile(".*"))(self._ignore)
        app.action(re.compile(".*"))(self._ack_only)
        app.error(self.on_error)

    async def drain(self, timeout: float) -> None:
        """Let listeners in progress store their jobs, then jobs at work finish (or give up after `timeout`
        seconds each; the runner holds both): jobs left unfinished resume on the next start."""
        await self.jobs.stop(grace=timeout)

    # ---- listeners ---------------------------------------------------------------------------------
    async def on_message(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        """A DM: audio gets an answer in its thread; text is a command or a follow-up. In a channel, audio is
        only heard for digests (mentions arrive as app_mention)."""
        if is_from_bot(event) or event.get("subtype") not in _ANSWERED_MESSAGE_SUBTYPES:
            return
        came = incoming_event(event, body)     # the door: once
        # one history per DM; the chat's place in line is taken before any await (core.flow.runner)
        with self.jobs.reserve(came.chat) as slot:
            if not came.private:
                await self._overhear(came, body.get("event_id"))
            else:
                async with self.once.only(body.get("event_id")) as first:
                    if first:
                        await self._dm(came, slot)

    async def _dm(self, came: Incoming, slot: Reservation) -> None:
        channel, chat = came.chat.chat_id, slot.chat
        text = came.words
        sender = came.sender
        file = came.last_audio
        key = f"{channel}:{came.message_id}"           # one job per message, whatever Slack redelivers
        dest = Destination(channel, _answer_thread(came))
        if file is not None:
            await self.history.remember_audio(chat, file.unique_id or "")
            task, arg = task_for_text(text)
            await self._answer(dest, chat, task, arg, file, sender, key=key, slot=slot)
        elif came.other_file:
            await self.outbox.say(dest, messages.text(messages.NOT_AUDIO, await self.lang_of(chat, sender)))
        elif (link := link_audio(text)) is not None:     # a link to an audio file: handled like an upload
            task, arg = task_for_text(link[1])
            await self._answer(dest, chat, task, arg, link[0], sender, key=key, slot=slot)
        elif (cmd := command_in(came)) is not None:
            await self._run_command(cmd, Destination(channel, came.thread_id), chat, sender, key=key, slot=slot)
        elif text:
            await self._answer(Destination(channel, came.thread_id), chat, Task.FOLLOW_UP, text,
                               None, sender, key=key, slot=slot)

    async def on_mention(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        """An @mention in a channel: answer about its audio, or the latest audio in its thread."""
        if is_from_bot(event):
            return                                     # bots are never answered
        came = incoming_event(event, body)             # the door: once
        if came.private:
            return                                     # DMs arrive as message.im
        dest = Destination(came.chat.chat_id, _answer_thread(came))
        with self.jobs.reserve(came.chat) as slot:    # one history per thread
            async with self.once.only(body.get("event_id")) as first:
                if first:
                    await self._mention(came, dest, slot)

    async def _mention(self, came: Incoming, dest: Destination, slot: Reservation) -> None:
        text, cmd = came.words, command_in(came)
        sender = came.sender
        key = f"{dest.channel}:{came.message_id}"
        try:
            file = await self._mention_audio(came)
        except EarshotError as err:
            await self.outbox.report(dest, err, None, await self.lang_of(slot.chat, sender))
            return
        if not came.audio and (link := link_audio(text)) is not None:
            (file, text), cmd = link, parse_command(link[1], strict=True)     # the words after the link
        if cmd is not None and cmd.task is None:
            await self._run_command(cmd, dest, slot.chat, sender, key=key, slot=slot)
        elif file is None:
            await self.outbox.say(dest, messages.text(messages.NO_AUDIO_YET, await self.lang_of(slot.chat, sender)))
        else:
            if file.unique_id:
                await self.history.remember_audio(chat_key(dest.channel), file.unique_id)
            task, arg = task_for_text(text)
            await self._answer(dest, slot.chat, task, arg, file, sender, key=key, slot=slot)

    async def on_command(self, ack: AsyncAck, command: dict[str, Any]) -> None:
        """`/earshot <task> [args]`: acknowledge at once (Slack drops acks after 3 s), then work."""
        came = incoming_command(command)      # the door: once
        cmd = command_in(came)
        assert cmd is not None
        with self.jobs.reserve(came.chat) as slot:  # its place, before any await
            await self._command(ack, came, cmd, slot)

    async def _command(self, ack: AsyncAck, came: Incoming, cmd: Command, slot: Reservation) -> None:
        channel, chat = came.chat.chat_id, slot.chat
        sender = came.sender
        lang = await self.lang_of(chat, sender)       # users.info once per person, then remembered
        if cmd.word in ("", "help"):
            await ack(self.help_text(lang, chat))
            return
        try:   # strangers are told once, in the ack, and nothing is fetched or spent for them
            await self.access.check(chat, sender, spending=cmd.task is not None)
        except AccessRefused as err:
            await ack("" if err.silent else err.user_text(lang))     # an empty ack shows nothing
            return
        if cmd.word in DIGEST_WORDS:
            await self.digests.on_command(ack, came, cmd, lang)
            return
        if cmd.word in STATE_WORDS:    # local database: well inside 3 s
            await ack(await self._chat_state(cmd.word, chat, sender, cmd.arg, lang) or "")
            return
        if cmd.task is None:
            unknown = messages.text(messages.UNKNOWN_COMMAND, lang, command=render.escape(cmd.word))
            await ack(f"{unknown}\n\n{self.help_text(lang, chat)}")
            return
        if cmd.task is Task.TRANSLATE and not cmd.arg:
            await ack(messages.text(messages.NEED_LANGUAGE, lang))
            return
        await ack(messages.text(LISTENING, lang))
        dest = Destination(channel, None, came.respond_to)
        await self._run_command(cmd, dest, chat, sender, header=True, slot=slot, lang=lang,
                                key="command:" + (came.message_id or uuid.uuid4().hex))

    async def on_error(self, error: Exception, body: dict[str, Any] | None = None) -> None:
        # Bolt calls this for anything a listener lets escape; log it, keep serving.
        kind = (body or {}).get("type") or (body or {}).get("command") or "request"
        log.error("unhandled error in a Slack %s: %s", kind, type(error).__name__, exc_info=error)

    async def _ignore(self) -> None:
        return None

    async def _ack_only(self, ack: AsyncAck) -> None:
        await ack()

    # ---- shared steps ------------------------------------------------------------------------------
    async def _run_command(self, cmd: Command, dest: Destination, chat: ChatKey, sender: Sender, *,
                           header: bool = False, key: str | None = None, slot: Reservation | None = None,
                           lang: str | None = None) -> None:
        """A named command, from `/earshot` or typed in a DM or mention, acting on the chat's latest audio."""
        lang = lang or await self.lang_of(chat, sender)
        if cmd.word in ("", "help"):
            await self.outbox.say(dest, self.help_text(lang, chat), markdown=True)
        elif cmd.word in DIGEST_WORDS:
            await self.digests.in_chat(cmd, dest, sender, lang)
        elif cmd.word in STATE_WORDS:
            if (said := await self._chat_state(cmd.word, chat, sender, cmd.arg, lang)) is not None:
                await self.outbox.say(dest, said)
        elif cmd.task is not None:
            task, arg = with_question(cmd.task, cmd.arg)
            try:
                file = await self._channel_audio(dest.channel, chat)
            except EarshotError as err:
                await self.outbox.report(dest, err, None, lang)
                return
            if file is None:      # a slash command hears it alone (ephemeral), not the whole channel
                said = messages.text(messages.NO_AUDIO_YET, lang)
                if dest.response_url:
                    await self.outbox.respond(dest.response_url, render.messages(said, plain=True)[0], ephemeral=True)
                else:
                    await self.outbox.say(dest, said)
                return
            top = None
            if header:   # in a channel, say who asked what about which file
                asked = render.escape(f"/earshot {cmd.word} {cmd.arg}".strip())
                who = f"<@{sender.user_id}> " if sender.user_id else ""
                top = f"{who}`{asked}` · {render.escape(file.name or file.unique_id or '')}"
            await self._answer(dest, chat, task, arg, file, sender, header=top, key=key, slot=slot, lang=lang)

    async def _chat_state(self, word: str, chat: ChatKey, sender: Sender, arg: str, lang: str) -> str | None:
        """What reset, usage, voice, lang or model says (core.flow.chat_state); None when a stranger was already
        told no."""
        if word == "model":      # switching it: workspace admins and owners, or EARSHOT_ADMIN_USERS
            return await self.chat_state.model(chat, sender, arg, private=chat.chat_id.startswith("D"),
                                               is_admin=lambda: self.digests.is_admin(sender), prefix="/earshot ",
                                               lang=lang)
        return await self.chat_state.run(word, chat, sender, arg, private=chat.chat_id.startswith("D"),
                                         prefix="/earshot ", lang=lang,
                                         user_lang=await self.digests.locale(sender.user_id))

    async def _answer(self, dest: Destination, chat: ChatKey, task: Task, text: str | None,
                      file: CarriedAudio | None, sender: Sender, *, header: str | None = None,
                      key: str | None = None, slot: Reservation | None = None, lang: str | None = None) -> None:
        """Store the request as a job (before the listener returns, so before Slack's ack); the runner
        fetches the file, asks the model and answers through _fetch, _attend and _deliver_job."""
        lang = lang or await self.lang_of(chat, sender)
        if not await intake.admitted(self.access, chat, sender, task, text, has_audio=file is not None, lang=lang,
                                     say=lambda said: self.outbox.say(dest, said)):    # before fetching the file
            return
        key = key or "once:" + uuid.uuid4().hex
        if dest.response_url:
            self.job_callbacks.reply_through(key, dest.response_url)
        where = {"channel": dest.channel, "thread_ts": dest.thread_ts, "header": header}
        await self.jobs.submit(NewJob(
            key=key, chat=chat, task=task, message_ref=json.dumps(where), text=text, sender=sender,
            file_ref=file.ref if file is not None else None, lang=lang), slot)

    async def _overhear(self, came: Incoming, event_id: str | None) -> None:
        """A clip or audio file posted in a channel with digests on: transcribed quietly, nothing said."""
        if not came.audio or not came.chat.chat_id:
            return
        if not await self.digests.heard_in(came.chat, came.sender):
            return
        async with self.once.only(event_id) as first:
            if first:
                for job in await self.digests.listen_jobs(came):
                    await self.jobs.submit(job)    # the runner fetches each file (files.info first for stubs)

    async def _mention_audio(self, came: Incoming) -> CarriedAudio | None:
        if came.audio:
            return came.last_audio
        if not came.thread_id:
            return None
        try:
            resp = await read(self.client, "conversations.replies", channel=came.chat.chat_id,
                              ts=came.thread_id, limit=200)
        except SlackApiError as err:
            if (scoped := scope_error(err, "refused to read a thread")):
                raise scoped from err
            log.warning("conversations.replies failed: %s", api_error(err))
            return None
        found = latest_audio(resp.get("messages") or [])
        return carried(found) if found else None

    async def _channel_audio(self, channel: str, chat: ChatKey) -> CarriedAudio | None:
        """The most recent audio in a channel: its history, else the last one we saw there."""
        try:
            resp = await read(self.client, "conversations.history", channel=channel, limit=HISTORY_LOOKBACK)
            found = latest_audio(resp.get("messages") or [])
            if found:
                return carried(found)
        except SlackApiError as err:
            # not a member of the channel, say: fall back to what we remember
            if (scoped := scope_error(err, "refused to read channel history")):
                log.error("operator action needed: %s", scoped.operator_message)
            else:
                log.info("conversations.history of %s failed: %s", channel, api_error(err))
        ref = await self.history.latest_audio(chat)
        return carried({"id": ref}) if ref else None

