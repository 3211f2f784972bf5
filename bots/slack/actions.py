"""Acting where the audio is, in Slack: message shortcuts, the transcript reaction, the Home tab and the buttons
under answers. Payloads are parsed by .interactions, views built by .blocks; a tap becomes a job through
core.flow.taps (the same door, budgets and durable jobs as `/earshot`)."""
from __future__ import annotations

import contextlib
import json
import logging
import re
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError

from core.errors import AccessRefused, AudioExpired
from core.flow.taps import Tap, submit_tap
from core.values import ChatKey, Sender, Task
from core.words import messages

from .blocks import HomeSettings, home_view
from .convert import PLATFORM, audio_files, file_ref, sender_of
from .convert import chat_key as convo_key
from .interactions import (
    SHORTCUTS,
    HomeChange,
    TaskButton,
    parse_block_actions,
    parse_home_opened,
    parse_reaction,
    parse_shortcut,
)
from .outbox import Destination
from .parts import SlackParts
from .webapi import api_error, read

log = logging.getLogger(__name__)


def chat_of(channel: str, thread_ts: str | None) -> ChatKey:
    """The conversation an answer in this thread belongs to: one per DM, one per thread in a channel (as the
    listeners keep them)."""
    return convo_key(channel) if channel.startswith("D") else convo_key(channel, thread_ts)


def _where(channel: str, thread_ts: str | None) -> str:
    return json.dumps({"channel": channel, "thread_ts": thread_ts, "header": None})


class SlackActions:
    """The listeners for shortcuts, reactions, the Home tab and answer buttons, over the message listeners' parts."""

    def __init__(self, handlers: SlackParts) -> None:
        self.handlers = handlers
        self.earshot = handlers.earshot
        self.client = handlers.client

    def register(self, app: AsyncApp) -> None:
        """Before the listeners that acknowledge everything else (Bolt runs the first that matches)."""
        for callback_id in SHORTCUTS:
            app.shortcut(callback_id)(self.on_shortcut)
        app.event("reaction_added")(self.on_reaction)
        app.event("app_home_opened")(self.on_home_opened)
        app.action({"type": "block_actions", "action_id": re.compile("^earshot_")})(self.on_action)

    # ---- message shortcuts -----------------------------------------------------------------------------
    async def on_shortcut(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        shortcut = parse_shortcut(body)
        if shortcut is None:
            return
        chat = chat_of(shortcut.channel_id, shortcut.thread_ts)
        sender = Sender(user_id=shortcut.user_id, team_id=shortcut.team_id)
        if not shortcut.audio:
            said = messages.text(messages.NOT_AUDIO, await self.handlers.lang_of(chat, sender))
            await self._ephemeral(shortcut.channel_id, shortcut.user_id, said, shortcut.thread_ts,
                                  shortcut.response_url)
            return
        with self.earshot.jobs.reserve(chat) as slot:
            key = f"shortcut:{shortcut.trigger_id or shortcut.message_ts}"
            if shortcut.response_url:      # the app can't post in the channel: only to the user
                self.handlers.job_callbacks.reply_through(key, shortcut.response_url, ephemeral=True)
            tap = Tap(key, chat, sender, shortcut.task, _where(shortcut.channel_id, shortcut.thread_ts),
                      lang=await self.handlers.lang_of(chat, sender))
            await submit_tap(self.earshot.access, self.earshot.jobs, tap, shortcut.audio[-1].ref,
                             slot, say=lambda said: self._ephemeral(shortcut.channel_id, shortcut.user_id, said,
                                                                    shortcut.thread_ts, shortcut.response_url))

    # ---- the transcript reaction -----------------------------------------------------------------------
    async def on_reaction(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        """The reaction on a message with a clip: its transcript in the thread, once per message however many
        react (the job's key is the message). The message is claimed only once a reactor's request was
        accepted: one refused (a stranger, over their rate limit or budget) leaves it to the next person."""
        reaction = parse_reaction(event, self.earshot.settings.slack_reaction)
        if reaction is None or await self.earshot.events.seen(PLATFORM, reaction.once_key):
            return
        message = await self._message(reaction.channel_id, reaction.message_ts)
        files = audio_files(message or {})
        if message is None or not files:
            return                      # the reaction means something else there: nothing to say
        thread = message.get("thread_ts") or reaction.message_ts
        chat = chat_of(reaction.channel_id, thread)
        with self.earshot.jobs.reserve(chat) as slot:
            sender = sender_of(event, body)     # the event names no team: the envelope's, as for messages
            tap = Tap(reaction.once_key, chat, sender, Task.TRANSCRIBE, _where(reaction.channel_id, thread),
                      lang=await self.handlers.lang_of(chat, sender))
            job = await submit_tap(self.earshot.access, self.earshot.jobs, tap, file_ref(files[-1]), slot,
                                   say=lambda said: self._ephemeral(reaction.channel_id, reaction.user_id, said,
                                                                    thread))
        if job is not None:
            await self.earshot.events.claim(PLATFORM, reaction.once_key)

    async def _message(self, channel: str, ts: str) -> dict[str, Any] | None:
        """The reacted message, files and all (reactions.get: reactions:read)."""
        try:
            resp = await read(self.client, "reactions.get", channel=channel, timestamp=ts, full=True)
        except SlackApiError as err:
            log.warning("reactions.get of %s failed: %s", channel, api_error(err))
            return None
        message = resp.get("message")
        return message if isinstance(message, dict) else None

    # ---- the Home tab ----------------------------------------------------------------------------------
    async def on_home_opened(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        opened = parse_home_opened(event)
        if opened is not None and opened.channel_id:
            sender = sender_of(event, body)     # the event names no team: the envelope's, as for messages
            await self._publish(Sender(opened.user_id, team_id=sender.team_id), opened.channel_id, opened.view_hash)

    async def _publish(self, sender: Sender, channel: str, view_hash: str | None = None) -> None:
        """The Home tab for `sender`: today's usage and the settings of their DM with earshot (`channel`)."""
        if not sender.user_id:
            return
        chat = convo_key(channel)
        report = None                    # a stranger still sees what earshot is, not numbers
        if self.earshot.access.allowed(chat, sender):
            # asked only of someone allowed: a stranger's one refusal of the day is kept for when they ask
            with contextlib.suppress(AccessRefused):
                report = await self.earshot.access.report(chat, sender, private=True)
        voice = await self.earshot.history.settings.voice(chat)
        lang = await self.earshot.history.settings.lang(chat)
        spoken = await self.earshot.history.settings.spoken(chat)
        view = home_view(report, HomeSettings(voice is not None, lang, voice, spoken),
                         reaction=self.earshot.settings.slack_reaction)
        view["private_metadata"] = channel       # which DM the settings belong to, when a control is used
        try:
            await self.client.views_publish(user_id=sender.user_id, view=view, hash=view_hash)
        except SlackApiError as err:
            log.warning("views.publish for the Home tab failed: %s", api_error(err))

    async def _home_change(self, change: HomeChange, body: dict[str, Any]) -> None:
        channel = str((body.get("view") or {}).get("private_metadata") or "")
        if not channel.startswith("D"):
            return
        chat, sender = convo_key(channel), Sender(user_id=change.user_id, team_id=change.team_id)
        if change.setting == "voice":
            said = await self.earshot.chat_state.run("voice", chat, sender, change.value or "off", private=True,
                                                     prefix="/earshot ")
            if said and change.value == "on" and await self.earshot.history.settings.voice(chat) is None:
                await self.handlers.outbox.say(Destination(channel), said)   # why not (this model can't speak)
        else:
            await self.earshot.chat_state.run("lang", chat, sender, change.value or "auto", private=True,
                                              prefix="/earshot ")
        await self._publish(sender, channel)

    # ---- buttons under answers, and the Home tab's controls ---------------------------------------------
    async def on_action(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        for action in parse_block_actions(body):
            if isinstance(action, HomeChange):
                await self._home_change(action, body)
            else:
                await self._button(action, str(body.get("trigger_id") or action.message_ts))

    async def _button(self, button: TaskButton, trigger: str) -> None:
        chat = chat_of(button.channel_id, button.thread_ts)
        with self.earshot.jobs.reserve(chat) as slot:
            sender = Sender(user_id=button.user_id, team_id=button.team_id)
            lang = await self.handlers.lang_of(chat, sender)
            try:
                ref = await self.earshot.audio_refs.resolve(button.token, chat)
            except AudioExpired as err:
                await self._ephemeral(button.channel_id, button.user_id, err.user_text(lang), button.thread_ts,
                                      button.response_url)
                return
            tap = Tap(f"action:{trigger}", chat, sender, button.task, _where(button.channel_id, button.thread_ts),
                      text=button.language, lang=lang)
            await submit_tap(self.earshot.access, self.earshot.jobs, tap, ref.ref, slot,
                             say=lambda said: self._ephemeral(button.channel_id, button.user_id, said,
                                                              button.thread_ts, button.response_url))

    # ---- telling one person ------------------------------------------------------------------------------
    async def _ephemeral(self, channel: str, user: str, text: str, thread_ts: str | None = None,
                         response_url: str | None = None) -> None:
        """Only `user` sees it: chat.postEphemeral, else (the app isn't in the channel) the response_url."""
        try:
            await self.client.chat_postEphemeral(channel=channel, user=user, text=text, thread_ts=thread_ts)
            return
        except SlackApiError as err:
            log.info("chat.postEphemeral in %s failed: %s", channel, api_error(err))
        if response_url:
            try:
                await self.handlers.outbox.http.post(response_url, json={"response_type": "ephemeral", "text": text})
            except Exception as err:     # a courtesy note: never let it fail the listener
                log.warning("response_url failed: %s", type(err).__name__)
