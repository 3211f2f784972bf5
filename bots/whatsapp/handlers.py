"""What earshot does with each WhatsApp message: thin glue from the Incoming values of the door
(.convert) to core jobs.

Audio, video and audio documents are answered (a voice note alone like a Telegram private chat: a reply to it);
text is a command, `/` optional, or a follow-up question; a tap on the buttons under an answer asks the same audio
something else; anything else gets one polite line. Every request passes core's door (core.flow.taps.submit_tap:
access, rate limit, the request's checks) before anything is downloaded, and becomes a durable job stored before
Meta gets its 200. Immediate replies (help, a refusal, a setting changed) go out without holding that 200 up.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from core.app import Earshot
from core.errors import AccessRefused, AudioExpired
from core.flow.commands import DIGEST_WORDS, STATE_WORDS, Command, command_in, task_for_text, with_question
from core.flow.digest import FORGET, parse_digest
from core.flow.redelivery import Redeliveries
from core.flow.runner import Reservation
from core.flow.taps import Tap, submit_tap
from core.values import ChatKey, Incoming, Task
from core.words import help_texts, messages

from ..buttons import parse_callback
from . import render
from .convert import PLATFORM, messages_in, statuses_in
from .graph import Graph
from .jobs import WhatsAppJobs
from .outbox import Outbox

log = logging.getLogger(__name__)

PREFIX = "/"        # how answers spell commands: WhatsApp takes them with or without it


class WhatsAppHandlers:
    def __init__(self, app: Earshot, graph: Graph) -> None:
        self.earshot = app
        self.access, self.history, self.chat_state = app.access, app.history, app.chat_state
        self.jobs = app.jobs
        self.phone_number_id = graph.phone_number_id
        self.outbox = Outbox(graph)
        self.job_callbacks = WhatsAppJobs(app.jobs, self.outbox, app.settings, app.audio_refs)
        # Meta redelivers a webhook it saw no 200 for (for up to 7 days): each message is handled once
        self.once = Redeliveries(app.events, PLATFORM, app.locks)

    async def start(self) -> None:
        """Resume what a previous process left unanswered; scheduled digests post through `post`."""
        await self.earshot.start(PLATFORM, self.post)

    async def stop(self, grace: float) -> None:
        await self.jobs.stop(grace=grace)
        await self.outbox.drain(grace)

    async def post(self, chat: ChatKey, text: str) -> None:
        """A scheduled digest: only within 24 hours of the user's last message (else it is logged, not sent)."""
        if not self.outbox.window_open(chat.chat_id):
            log.info("digest for %s not sent: outside WhatsApp's 24-hour window", chat.chat_id)
            return
        await self.outbox.say(chat.chat_id, text)

    # --- a webhook payload -----------------------------------------------------------------------
    async def handle(self, payload: Any) -> None:
        """Everything a signed payload holds; returns once each message is a stored job (or was answered)."""
        for status in statuses_in(payload, self.phone_number_id):
            if status.status == "failed":
                log.warning("WhatsApp could not deliver message %s to %s: %s", status.wamid, status.wa_id,
                            "; ".join(status.errors) or "no reason given")
        for msg in messages_in(payload, self.phone_number_id):
            # the 24-hour window opens when the user wrote (the door always reads when)
            self.outbox.heard(msg.chat.chat_id, msg.sent if msg.sent is not None else time.time())
            with self.jobs.reserve(msg.chat) as slot:      # the chat's place in line, before the first await
                async with self.once.only(msg.message_id) as first:
                    if first:
                        await slot.earlier_settled()       # the chat's earlier messages are stored
                        await self._message(msg, slot)

    async def _message(self, msg: Incoming, slot: Reservation) -> None:
        lang = await self.chat_state.language_for(msg.chat)
        if (audio := msg.last_audio) is not None:        # a voice note, a video, an audio document or link
            await self.history.remember_audio(msg.chat, audio.ref)
            await self._task(msg, slot, *task_for_text(msg.words), audio.ref, lang)
        elif msg.tap is not None:
            await self._tap(msg, msg.tap, slot, lang)
        elif msg.other_file:
            if await self._allowed(msg, lang):
                self._say(msg, messages.text(messages.WHATSAPP_NOT_AUDIO, lang))
        else:
            await self._text(msg, slot, lang)

    async def _text(self, msg: Incoming, slot: Reservation, lang: str) -> None:
        cmd = command_in(msg)
        if cmd is None:
            await self._task(msg, slot, Task.FOLLOW_UP, msg.words, None, lang)
        elif cmd.task is not None:
            await self._task(msg, slot, *with_question(cmd.task, cmd.arg), await self.history.latest_audio(msg.chat),
                             lang)
        else:
            await self._command(msg, cmd, lang)

    async def _command(self, msg: Incoming, cmd: Command, lang: str) -> None:
        """help, the chat's settings (reset, usage, voice, lang, model…), digest and forget."""
        chat, sender = msg.chat, msg.sender
        said: str | None
        if cmd.word in ("", "help") or cmd.word not in STATE_WORDS | DIGEST_WORDS:
            said = help_texts.whatsapp_help(lang)
        elif cmd.word in DIGEST_WORDS:
            command = FORGET if cmd.word == "forget" else parse_digest(cmd.arg)
            said = await self.earshot.digests.run(chat, command, sender, group=False, is_admin=_not_admin,
                                                  prefix=PREFIX, lang=lang)
        elif cmd.word == "model":
            said = await self.chat_state.model(chat, sender, cmd.arg, private=True, is_admin=_not_admin,
                                               prefix=PREFIX, lang=lang)
        else:
            said = await self.chat_state.run(cmd.word, chat, sender, cmd.arg, private=True, prefix=PREFIX, lang=lang)
        if said:
            self._say(msg, said)

    async def _tap(self, msg: Incoming, tap: str, slot: Reservation, lang: str) -> None:
        """A button or list row under an answer: the same audio, asked something else."""
        press = parse_callback(tap)
        if press is None:
            self._say(msg, messages.text(messages.AUDIO_EXPIRED, lang))
            return
        try:
            ref = await self.earshot.audio_refs.resolve(press.token, msg.chat)
        except AudioExpired as err:
            self._say(msg, err.user_text(lang))
            return
        if press.choose_language:
            if await self._allowed(msg, lang):
                languages = render.language_list(press.token, lang)
                self.outbox.soon(self.outbox.send(msg.chat.chat_id, languages), "languages")
            return
        await self._task(msg, slot, press.task, press.language, ref.ref, lang)

    # --- the one path to the core ---------------------------------------------------------------
    async def _task(self, msg: Incoming, slot: Reservation, task: Task, text: str | None, file_ref: str | None,
                    lang: str) -> None:
        """A job for the request, once core's door let it through (nothing is downloaded before)."""
        tap = Tap(key=msg.message_id, chat=msg.chat, sender=msg.sender, task=task, message_ref=msg.message_id,
                  text=text, lang=lang)
        await submit_tap(self.access, self.jobs, tap, file_ref, slot, say=self._saying(msg))

    async def _allowed(self, msg: Incoming, lang: str) -> bool:
        """On the allowed lists (what costs nothing); a stranger is told once."""
        try:
            await self.access.check(msg.chat, msg.sender, spending=False)
        except AccessRefused as err:
            if not err.silent:
                self._say(msg, err.user_text(lang))
            return False
        return True

    def _say(self, msg: Incoming, text: str) -> None:
        self.outbox.say_soon(msg.chat.chat_id, text, reply_to=msg.message_id)

    def _saying(self, msg: Incoming) -> Any:
        async def say(text: str) -> None:
            self._say(msg, text)
        return say


async def _not_admin() -> bool:
    """WhatsApp chats are one-to-one: nobody is a chat admin (earshot's own admins pass before this is asked)."""
    return False
