"""The commands that change or show a chat's state, not its audio: reset, usage, voice on/off.

One flow for every adapter: the allowed lists first (these cost nothing, so no budget or rate limit),
then the change, then the sentence to answer with.
"""
from __future__ import annotations

from . import messages
from .access import AccessPolicy, usage_text
from .errors import AccessRefused, VoiceUnavailable
from .history import HistoryStore
from .models import ChatKey, Sender
from .service import Assistant

WORDS = ("reset", "usage", "voice")


class ChatState:
    def __init__(self, assistant: Assistant, access: AccessPolicy, history: HistoryStore) -> None:
        self.assistant = assistant
        self.access = access
        self.history = history

    async def run(self, word: str, chat: ChatKey, sender: Sender, arg: str = "", *, private: bool,
                  prefix: str = "/") -> str | None:
        """What `word` (reset, usage, voice) says after doing it; None when a stranger was already told no.

        private: a one-to-one chat (admins see everyone's usage there); prefix: how the platform spells
        commands ("/" or "/earshot ")."""
        try:
            if word == "usage":
                return usage_text(await self.access.report(chat, sender, private=private))
            await self.access.check(chat, sender, spending=False)
        except AccessRefused as err:
            return None if err.silent else err.user_message
        if word == "reset":
            await self.history.reset(chat)   # the words only: usage survives, it is what budgets count
            return messages.RESET_DONE
        return await self._voice(chat, arg, prefix)

    async def _voice(self, chat: ChatKey, arg: str, prefix: str) -> str:
        """voice on [VOICE] | voice off: answers here come back spoken too, or text only."""
        words = arg.split()
        action = words[0].lower() if words else ""
        if action == "off":
            await self.assistant.voice_off(chat)
            return messages.VOICE_OFF
        if action != "on":
            return messages.VOICE_USAGE
        try:
            voice = await self.assistant.voice_on(chat, words[1] if len(words) > 1 else None)
        except VoiceUnavailable as err:
            return err.user_message
        said = messages.VOICE_ON.format(voice=voice)
        return said if prefix == "/" else said.replace("/voice off", f"`{prefix}voice off`")
