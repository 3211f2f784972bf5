"""What earshot does with each Discord event: messages (DMs, mentions and replies in servers, voice messages in
channels with auto transcripts or digests on), `/earshot` and the message commands, and the buttons under
answers. Thin glue: converted at the door (.convert), through the same door as every platform (core.flow.intake,
core.flow.taps), into durable jobs (core.flow.runner) that .jobs answers.

Interactions must be acknowledged within 3 s: the allowed lists are checked first (a local lookup: a stranger
is told once, in a message only they see, and nothing of theirs is downloaded), then the interaction is
deferred ("earshot is thinking…") and answered by followups, by the job's delivery or at once."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import discord
import httpx

from core.app import Earshot
from core.audio.links import split_link
from core.errors import AccessRefused, AudioExpired
from core.flow import intake
from core.flow.commands import (
    DIGEST_WORDS,
    STATE_WORDS,
    TASK_WORDS,
    Command,
    command_in,
    task_for_text,
    with_question,
)
from core.flow.digest import FORGET, parse_digest
from core.flow.redelivery import Redeliveries
from core.flow.runner import Reservation
from core.flow.taps import Tap, submit_tap
from core.store.jobs import NewJob
from core.values import CarriedAudio, ChatKey, Incoming, Sender, Task
from core.words import help_texts, messages

from ..buttons import LANGUAGES, parse_callback
from .convert import (
    MANAGE_GUILD,
    PLATFORM,
    FileRef,
    Where,
    audio_of,
    carried,
    chat_key,
    file_of,
    incoming,
    is_audio,
    link_file,
    locale_of,
    sender_of,
)
from .jobs import DiscordJobs
from .render import NO_PINGS, pieces

log = logging.getLogger(__name__)

PREFIX = help_texts.DISCORD_PREFIX
HISTORY_LOOKBACK = 50          # messages searched for a channel's latest audio when none is remembered

Say = Callable[[str], Awaitable[None]]


class DiscordHandlers:
    """Turns Discord events into core requests; `client` is set by the bot once it is built (.app)."""

    def __init__(self, app: Earshot, http: httpx.AsyncClient) -> None:
        self.earshot = app
        self.access, self.history, self.chat_state, self.digests = app.access, app.history, app.chat_state, app.digests
        self.jobs = app.jobs
        self.once = Redeliveries(app.events, PLATFORM, app.locks)
        self.job_callbacks = DiscordJobs(app.jobs, app.settings, app.audio_refs, http)
        self.client: discord.Client | None = None
        # shutting down: events that arrive now are left alone (the Gateway has no acknowledgements to withhold)
        self.closing = False

    def attach(self, client: discord.Client) -> None:
        self.client = client
        self.job_callbacks.client = client

    @property
    def bot_id(self) -> int:
        assert self.client is not None and self.client.user is not None
        return self.client.user.id

    def help_text(self, lang: str | None) -> str:
        return help_texts.discord_help(lang, self.earshot.settings.retention_days)

    async def lang_of(self, chat: ChatKey, locale: Any) -> str:
        """The chat's `/earshot lang`, else the asker's Discord language (an interaction's locale; for a message,
        its server's preferred locale), else English."""
        return await self.chat_state.language_for(chat, locale_of(locale))

    # --- messages --------------------------------------------------------------------------------------
    async def on_message(self, message: discord.Message) -> None:
        if self.closing or message.author.bot or self.client is None or self.client.user is None:
            return                    # bots, earshot itself included (Discord echoes its own messages)
        came = incoming(message, self.bot_id)     # the door: once; `message` is kept only to reply to it
        with self.jobs.reserve(came.chat) as slot:   # its place in line, before any await
            # Discord may dispatch a message again (events replayed on a RESUME): handled once, by its id
            async with self.once.only(f"message:{message.id}") as first:
                if not first:
                    return
                await slot.earlier_settled()
                if came.private:
                    await self._direct(message, came, slot)
                else:
                    await self._in_server(message, came, slot)

    async def _direct(self, message: discord.Message, came: Incoming, slot: Reservation) -> None:
        """A DM: audio is answered as a reply to it; a typed command runs; other text follows up."""
        text = came.words
        media = came.last_audio
        if media is None and came.other_file:
            await self._reply(message, messages.text(messages.NOT_AUDIO, await self._message_lang(came, slot)))
            return
        if media is None and (link := split_link(text)) is not None:
            media, text = carried(link_file(link)), link.rest
        if media is not None:
            await self.history.remember_audio(slot.chat, media.ref)
            await self._task(message, came, slot, *task_for_text(text), media)
        elif (cmd := command_in(came)) is not None:
            await self._typed(message, came, slot, cmd)
        elif text:
            await self._task(message, came, slot, Task.FOLLOW_UP, text, None)

    async def _in_server(self, message: discord.Message, came: Incoming, slot: Reservation) -> None:
        """In a server: audio is remembered (and heard for digests, or transcribed when the channel has auto
        transcripts on); earshot answers when mentioned, or in a reply to one of its messages."""
        media = came.last_audio
        if media is not None:
            await self.history.remember_audio(slot.chat, media.ref)
            await self._overhear(came, media)
            if not came.addressed and media.kind == "voice" and await self.history.settings.auto(slot.chat):
                await self._task(message, came, slot, Task.TRANSCRIBE, None, media)
                return
        if not came.addressed:
            return
        text = came.words
        if media is None and not came.replies_to_bot:
            media = came.replied_audio
        if media is None and (link := split_link(text)) is not None:
            media, text = carried(link_file(link)), link.rest
        if media is not None:
            await self._task(message, came, slot, *task_for_text(text), media)
        elif (cmd := command_in(came)) is not None:
            await self._typed(message, came, slot, cmd)
        elif text:
            await self._task(message, came, slot, Task.FOLLOW_UP, text, None)
        else:
            await self._reply(message, self.help_text(await self._message_lang(came, slot)))

    async def _overhear(self, came: Incoming, media: CarriedAudio) -> None:
        """A voice message or clip in a channel with digests on: transcribed quietly, nothing said."""
        if not await self.digests.may_hear(came.chat, came.sender):
            return
        await self.jobs.submit(self.digests.listen_job(
            came.chat, key=f"heard:{came.message_id}", file_ref=media.ref, sent=came.sent or 0.0,
            sender=came.sender, name=came.sender_name or "someone", source_id=came.message_id))

    async def _typed(self, message: discord.Message, came: Incoming, slot: Reservation, cmd: Command) -> None:
        """A command word typed in a DM or a mention ("transcribe", "usage"…): the same as `/earshot` would do."""
        lang = await self._message_lang(came, slot)
        if cmd.task is not None:
            media = came.replied_audio or await self._latest_audio(slot.chat, message.channel)
            task, arg = with_question(cmd.task, cmd.arg)
            await self._task(message, came, slot, task, arg, media)
            return
        said = await self._command_text(cmd.word, cmd.arg, slot.chat, came.sender, lang, guild=came.group,
                                        is_admin=bool(came.sender_admin), user_lang=None)
        if said:
            await self._reply(message, said)

    async def _task(self, message: discord.Message, came: Incoming, slot: Reservation, task: Task,
                    text: str | None, media: CarriedAudio | None) -> None:
        """The one path from a message to the core: the door (access, rate limit, the request's checks), then a
        durable job that answers as a reply to the message."""
        chat = slot.chat
        lang = await self._message_lang(came, slot)
        if not await intake.admitted(self.access, chat, came.sender, task, text, has_audio=media is not None,
                                     lang=lang, say=lambda said: self._reply(message, said)):
            return        # before anything is downloaded
        await self.jobs.submit(NewJob(
            key=f"m:{came.message_id}", chat=chat, task=task,
            message_ref=Where(int(came.chat.chat_id), int(came.message_id)).dumps(),
            file_ref=media.ref if media else None, text=text, sender=came.sender, lang=lang), slot)

    async def _message_lang(self, came: Incoming, slot: Reservation) -> str:
        return await self.chat_state.language_for(slot.chat, came.user_lang)

    async def _reply(self, message: discord.Message, text: str) -> None:
        for i, piece in enumerate(pieces(text)):
            try:
                if i == 0:
                    await message.reply(piece, mention_author=False, allowed_mentions=NO_PINGS)
                else:
                    await message.channel.send(piece, allowed_mentions=NO_PINGS)
            except discord.HTTPException as err:
                log.warning("could not answer in channel %s: %s", message.channel.id, err.status)
                return

    async def _latest_audio(self, chat: ChatKey, channel: Any) -> CarriedAudio | None:
        """The chat's latest audio: the one remembered, else the newest in the channel's recent history."""
        if (ref := await self.history.latest_audio(chat)) is not None:
            return carried(FileRef.loads(ref))
        try:
            async for earlier in channel.history(limit=HISTORY_LOOKBACK):
                if not earlier.author.bot and (found := audio_of(earlier)) is not None:
                    return carried(found)
        except (discord.HTTPException, AttributeError) as err:   # no Read Message History here
            log.info("could not read the history of channel %s: %s", chat.chat_id, type(err).__name__)
        return None

    # --- words that change or show a chat's state --------------------------------------------------------
    async def _command_text(self, word: str, arg: str, chat: ChatKey, sender: Sender, lang: str, *, guild: bool,
                            is_admin: bool, user_lang: str | None) -> str | None:
        """What help, usage, lang, voice, spoken, reset, digest, forget or auto say after doing it (None: a
        stranger already told no)."""
        if word in ("", "help"):
            return self.help_text(lang)
        if word == "auto":
            return await self._auto(chat, sender, arg, lang, guild=guild, is_admin=is_admin)
        if word in DIGEST_WORDS:
            command = FORGET if word == "forget" else parse_digest(arg)

            async def admin() -> bool:
                return is_admin
            return await self.digests.run(chat, command, sender, group=guild, is_admin=admin, prefix=PREFIX,
                                          lang=lang)
        if word in STATE_WORDS and word != "model":
            return await self.chat_state.run(word, chat, sender, arg, private=not guild, prefix=PREFIX, lang=lang,
                                             user_lang=user_lang)
        return messages.text(messages.UNKNOWN_COMMAND, lang, command=word) + "\n\n" + self.help_text(lang)

    async def _auto(self, chat: ChatKey, sender: Sender, arg: str, lang: str, *, guild: bool,
                    is_admin: bool) -> str | None:
        """`auto on|off`: transcribe every voice message in this channel (Manage Server, or EARSHOT_ADMIN_USERS)."""
        try:
            await self.access.check(chat, sender, spending=False)
        except AccessRefused as err:
            return None if err.silent else err.user_text(lang)
        if not guild:
            return messages.text(messages.AUTO_IN_DM, lang)
        state = arg.strip().lower()
        if state not in ("on", "off"):
            on = await self.history.settings.auto(chat)
            return messages.text(messages.AUTO_IS_ON if on else messages.AUTO_IS_OFF, lang)
        if not (is_admin or self.access.is_admin(chat, sender)):
            return messages.text(messages.AUTO_ADMINS_ONLY, lang)
        await self.history.settings.set_auto(chat, state == "on")
        return messages.text(messages.AUTO_ON if state == "on" else messages.AUTO_OFF, lang)

    # --- interactions: /earshot, the message commands, the buttons ---------------------------------------
    async def slash(self, interaction: discord.Interaction, word: str, arg: str = "",
                    attachment: discord.Attachment | None = None) -> None:
        """`/earshot <word>`: acknowledged (deferred) at once after the allowed lists, answered by followups."""
        if self.closing:
            return
        chat, sender = chat_key(_channel_id(interaction)), sender_of(interaction.user, interaction.guild_id)
        with self.jobs.reserve(chat) as slot:
            lang = await self.lang_of(chat, interaction.locale)
            if word != "help" and not await self._let_in(interaction, chat, sender, lang):
                return
            await interaction.response.defer(thinking=True)
            await slot.earlier_settled()       # after what came before it in this channel, like a message
            if word not in TASK_WORDS:
                said = await self._command_text(word, arg, chat, sender, lang, guild=interaction.guild_id is not None,
                                                is_admin=_can_manage(interaction),
                                                user_lang=locale_of(interaction.locale))
                await self._followup(interaction, said or "…")
                return
            if attachment is not None and not is_audio(attachment):
                await self._followup(interaction, messages.text(messages.NOT_AUDIO, lang))
                return
            media = carried(file_of(attachment)) if attachment is not None \
                else await self._latest_audio(chat, interaction.channel)
            if attachment is not None and media is not None:
                await self.history.remember_audio(chat, media.ref)
            task, text = with_question(TASK_WORDS[word], arg)
            await self._interaction_job(interaction, slot, task, text, media, sender, lang, Where(chat_id_int(chat)))

    async def message_command(self, interaction: discord.Interaction, message: discord.Message, task: Task) -> None:
        """"Transcribe with earshot" / "Summarize with earshot" on a message: answered as a reply to it."""
        if self.closing:
            return
        chat, sender = chat_key(_channel_id(interaction)), sender_of(interaction.user, interaction.guild_id)
        with self.jobs.reserve(chat) as slot:
            lang = await self.lang_of(chat, interaction.locale)
            found = audio_of(message)
            media = carried(found) if found is not None else None
            if media is None:
                await interaction.response.send_message(messages.text(messages.NOT_AUDIO, lang), ephemeral=True)
                return
            if not await self._let_in(interaction, chat, sender, lang):
                return
            await interaction.response.defer(thinking=True)
            await self.history.remember_audio(chat, media.ref)
            await self._interaction_job(interaction, slot, task, None, media, sender, lang,
                                        Where(chat_id_int(chat), message.id))

    async def on_component(self, interaction: discord.Interaction) -> None:
        """A button under an answer (another task on the same audio) or the language menu (a translation)."""
        data: dict[str, Any] = dict(interaction.data or {})
        press = parse_callback(str(data.get("custom_id") or ""))
        if press is None:
            return                               # not earshot's
        language = press.language
        if press.choose_language:
            values = data.get("values") or []
            language = dict(LANGUAGES).get(str(values[0])) if values else None
            if language is None:
                return
        chat, sender = chat_key(_channel_id(interaction)), sender_of(interaction.user, interaction.guild_id)
        with self.jobs.reserve(chat) as slot:
            lang = await self.lang_of(chat, interaction.locale)
            if not await self._let_in(interaction, chat, sender, lang):
                return
            try:
                ref = await self.earshot.audio_refs.resolve(press.token, chat)
            except AudioExpired as err:
                await interaction.response.send_message(err.user_text(lang), ephemeral=True)
                return
            await interaction.response.defer(thinking=True)
            key = f"i:{interaction.id}"
            self.job_callbacks.reply_through(key, interaction)
            answered = interaction.message.id if interaction.message is not None else None
            tap = Tap(key, chat, sender, press.task, Where(chat_id_int(chat), answered).dumps(), text=language,
                      lang=lang)
            await slot.earlier_settled()
            await submit_tap(self.access, self.jobs, tap, ref.ref, slot,
                             say=lambda said: self._followup(interaction, said))

    async def _interaction_job(self, interaction: discord.Interaction, slot: Reservation, task: Task,
                               text: str | None, media: CarriedAudio | None, sender: Sender, lang: str,
                               where: Where) -> None:
        if not await intake.admitted(self.access, slot.chat, sender, task, text, has_audio=media is not None,
                                     lang=lang, say=lambda said: self._followup(interaction, said)):
            return
        key = f"i:{interaction.id}"
        self.job_callbacks.reply_through(key, interaction)   # its token: memory only
        await slot.earlier_settled()
        await self.jobs.submit(NewJob(key=key, chat=slot.chat, task=task, message_ref=where.dumps(),
                                      file_ref=media.ref if media else None, text=text, sender=sender,
                                      lang=lang), slot)

    async def _let_in(self, interaction: discord.Interaction, chat: ChatKey, sender: Sender, lang: str) -> bool:
        """The allowed lists, before the interaction is even deferred: a stranger is told once, only they see it;
        afterwards the interaction is closed without a word."""
        try:
            await self.access.check(chat, sender, spending=False)
            return True
        except AccessRefused as err:
            if err.silent:
                await interaction.response.defer(ephemeral=True, thinking=True)
                await interaction.delete_original_response()
            else:
                await interaction.response.send_message(err.user_text(lang), ephemeral=True)
            return False

    async def _followup(self, interaction: discord.Interaction, text: str) -> None:
        for piece in pieces(text):
            await interaction.followup.send(piece, allowed_mentions=NO_PINGS, wait=True)

    # --- scheduled digests ----------------------------------------------------------------------------------
    async def post(self, chat: ChatKey, text: str) -> None:
        """A scheduled digest, in its channel (core.flow.digest runs the schedule)."""
        assert self.client is not None
        channel = self.client.get_partial_messageable(int(chat.chat_id))
        for piece in pieces(text):
            await channel.send(piece, allowed_mentions=NO_PINGS)

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        """Anything a command let escape: logged; the asker gets a short apology."""
        log.error("failed to handle an interaction", exc_info=error)
        text = messages.text(messages.INTERNAL, locale_of(interaction.locale))
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException as err:
            log.warning("could not apologise: %s", err.status)


def _channel_id(interaction: discord.Interaction) -> int:
    assert interaction.channel_id is not None
    return interaction.channel_id


def chat_id_int(chat: ChatKey) -> int:
    return int(chat.chat_id)


def _can_manage(interaction: discord.Interaction) -> bool:
    """Manage Server, as Discord computed it for the asker in this channel."""
    return bool(getattr(interaction.permissions, MANAGE_GUILD, False))


__all__ = ["PLATFORM", "DiscordHandlers"]
