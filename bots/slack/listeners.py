"""What earshot does with each Slack event: DMs, @mentions and `/earshot`, turned into core Requests.

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
from core.audio.links import split_link
from core.errors import AccessRefused, EarshotError
from core.flow import intake
from core.flow.commands import DIGEST_WORDS, STATE_WORDS, with_question
from core.flow.redelivery import Redeliveries
from core.flow.runner import Reservation
from core.store.jobs import NewJob
from core.values import ChatKey, Sender, Task
from core.words import help_texts, messages

from . import render
from .actions import SlackActions
from .convert import (
    PLATFORM,
    Command,
    audio_files,
    chat_key,
    is_dm,
    is_from_bot,
    latest_audio,
    parse_command,
    sender_of,
    strip_mentions,
    task_for_text,
    thread_of,
)
from .digests import SlackDigests
from .files import file_ref, scope_error
from .jobs import SlackJobs
from .outbox import LISTENING, Destination, Outbox
from .webapi import api_error, read

log = logging.getLogger(__name__)

HISTORY_LOOKBACK = 100         # messages searched for the channel's latest audio
_ANSWERED_MESSAGE_SUBTYPES = {None, "file_share", "thread_broadcast"}

class Handlers:
    """The listeners, holding what they share: the Web API client, earshot's parts (core.app), the outbox."""

    def __init__(self, client: AsyncWebClient, app: Earshot, http: httpx.AsyncClient) -> None:
        self.client, self.earshot = client, app
        # the parts of earshot the listeners use (core.app builds them)
        self.access, self.history, self.chat_state = app.access, app.history, app.chat_state
        # Slack retries events (maybe to another replica while the first still works on it): each is handled once
        self.once = Redeliveries(app.events, PLATFORM, app.locks)
        self.outbox = Outbox(client, http)
        # answers are durable jobs (core.flow.runner): stored before Slack gets its ack, resumed after a crash;
        # the runner's callbacks for them are in .jobs
        self.jobs = app.jobs
        self.job_callbacks = SlackJobs(app.jobs, self.outbox, app.settings, app.audio_refs)
        self.digests = SlackDigests(app.digests, self.outbox)   # `/earshot digest`, quiet listening in channels

    def help_text(self, lang: str | None, chat: ChatKey | None = None) -> str:
        group = chat is None or not chat.chat_id.startswith("D")      # D…: a DM, where digests don't work
        return help_texts.slack_help(lang, self.earshot.settings.retention_days, with_lang=True, group=group)

    async def lang_of(self, chat: ChatKey, sender: Sender) -> str:
        """The language to answer in: the chat's /earshot lang, else the asker's Slack locale (users.info)."""
        return await self.chat_state.language_for(chat, await self.digests.locale(sender.user_id))

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
        # one history per DM; the chat's place in line is taken before any await (core.flow.runner)
        with self.jobs.reserve(chat_key(str(event.get("channel")))) as slot:
            if not is_dm(event):
                await self._overhear(event, body)
            else:
                async with self.once.only(body.get("event_id")) as first:
                    if first:
                        await self._dm(event, body, slot)

    async def _dm(self, event: dict[str, Any], body: dict[str, Any], slot: Reservation) -> None:
        channel, chat = event["channel"], slot.chat
        text = strip_mentions(event.get("text"))
        sender = sender_of(event, body)
        files = audio_files(event)
        key = f"{channel}:{event.get('ts')}"           # one job per message, whatever Slack redelivers
        dest = Destination(channel, thread_of(event))
        if files:
            await self.history.remember_audio(chat, files[-1]["id"])
            task, arg = task_for_text(text)
            await self._answer(dest, chat, task, arg, files[-1], sender, key=key, slot=slot)
        elif event.get("files"):
            await self.outbox.say(dest, messages.text(messages.NOT_AUDIO, await self.lang_of(chat, sender)))
        elif (link := link_file(text)) is not None:     # a link to an audio file: handled like an upload
            task, arg = task_for_text(link.pop("rest"))
            await self._answer(dest, chat, task, arg, link, sender, key=key, slot=slot)
        elif (cmd := parse_command(text, strict=True)) is not None:
            await self._run_command(cmd, Destination(channel, event.get("thread_ts")), chat, sender, key=key,
                                    slot=slot)
        elif text:
            await self._answer(Destination(channel, event.get("thread_ts")), chat, Task.FOLLOW_UP, text,
                               None, sender, key=key, slot=slot)

    async def on_mention(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        """An @mention in a channel: answer about its audio, or the latest audio in its thread."""
        if is_dm(event) or is_from_bot(event):
            return                                     # DMs arrive as message.im; bots are never answered
        dest = Destination(event["channel"], thread_of(event))
        with self.jobs.reserve(chat_key(dest.channel, dest.thread_ts)) as slot:    # one history per thread
            async with self.once.only(body.get("event_id")) as first:
                if first:
                    await self._mention(event, body, dest, slot)

    async def _mention(self, event: dict[str, Any], body: dict[str, Any], dest: Destination,
                       slot: Reservation) -> None:
        text = strip_mentions(event.get("text"))
        sender = sender_of(event, body)
        key = f"{dest.channel}:{event.get('ts')}"
        try:
            file = await self._mention_audio(event)
        except EarshotError as err:
            await self.outbox.report(dest, err, None, await self.lang_of(slot.chat, sender))
            return
        if not audio_files(event) and (link := link_file(text)) is not None:
            file, text = link, link.pop("rest")
        cmd = parse_command(text, strict=True)
        if cmd is not None and cmd.task is None:
            await self._run_command(cmd, dest, slot.chat, sender, key=key, slot=slot)
        elif file is None:
            await self.outbox.say(dest, messages.text(messages.NO_AUDIO_YET, await self.lang_of(slot.chat, sender)))
        else:
            if "id" in file:
                await self.history.remember_audio(chat_key(dest.channel), file["id"])
            task, arg = task_for_text(text)
            await self._answer(dest, slot.chat, task, arg, file, sender, key=key, slot=slot)

    async def on_command(self, ack: AsyncAck, command: dict[str, Any]) -> None:
        """`/earshot <task> [args]`: acknowledge at once (Slack drops acks after 3 s), then work."""
        cmd = parse_command(command.get("text"))
        assert cmd is not None
        with self.jobs.reserve(chat_key(command["channel_id"])) as slot:  # its place, before any await
            await self._command(ack, command, cmd, slot)

    async def _command(self, ack: AsyncAck, command: dict[str, Any], cmd: Command, slot: Reservation) -> None:
        channel, chat = command["channel_id"], slot.chat
        sender = sender_of(command)
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
            await self.digests.on_command(ack, command, cmd, lang)
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
        dest = Destination(channel, None, command.get("response_url") or None)
        await self._run_command(cmd, dest, chat, sender, header=True, slot=slot, lang=lang,
                                key="command:" + (command.get("trigger_id") or uuid.uuid4().hex))

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
                top = f"{who}`{asked}` · {render.escape(file.get('name') or file['id'])}"
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
                      file: dict[str, Any] | None, sender: Sender, *, header: str | None = None,
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
            file_ref=file_ref(file) if file is not None else None, lang=lang), slot)

    async def _overhear(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        """A clip or audio file posted in a channel with digests on: transcribed quietly, nothing said."""
        files = audio_files(event)
        channel = event.get("channel")
        if not files or not isinstance(channel, str) or is_from_bot(event):
            return
        if not await self.digests.heard_in(chat_key(channel), sender_of(event, body)):
            return
        async with self.once.only(body.get("event_id")) as first:
            if first:
                for job in await self.digests.listen_jobs(event, body, files):
                    await self.jobs.submit(job)    # the runner fetches each file (files.info first for stubs)

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
        ref = await self.history.latest_audio(chat)
        return {"id": ref} if ref else None


def link_file(text: str) -> dict[str, Any] | None:
    """A message that starts with a link, as a file reference to fetch (core.audio.links); "rest": the words
    after it."""
    link = split_link(text)
    return {"link": link.url, "name": link.name, "rest": link.rest} if link else None
