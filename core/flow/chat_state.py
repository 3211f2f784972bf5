"""The commands that change or show a chat's state, not its audio: reset, usage, voice on/off, lang.

One flow for every adapter: the allowed lists first (these cost nothing, so no budget or rate limit),
then the change, then the sentence to answer with, in the chat's language.
"""
from __future__ import annotations

from core.errors import AccessRefused, VoiceUnavailable
from core.flow.access import AccessPolicy, usage_text
from core.flow.digest_command import AdminCheck
from core.flow.service import Assistant
from core.model.catalog import SPOKEN_LANGUAGES
from core.store.history import HistoryStore
from core.values import ChatKey, Sender
from core.words import messages
from core.words.i18n import LANGUAGES, best_language, supported_language, translator

WORDS = ("reset", "usage", "voice", "lang", "spoken")
# what `lang` takes besides a language: back to each person's own app language (and `spoken`: detect it)
LANG_AUTO_WORDS = {"auto", "off", "reset", "default"}


def language_choices() -> str:
    """The languages /lang takes, as its replies list them: "en (English), de (Deutsch), …"."""
    return ", ".join(f"{lang.code} ({lang.native})" for lang in LANGUAGES.values())


class ChatState:
    def __init__(self, assistant: Assistant, access: AccessPolicy, history: HistoryStore) -> None:
        self.assistant = assistant
        self.access = access
        self.history = history

    async def language_for(self, chat: ChatKey, user_lang: str | None = None) -> str:
        """The language to speak in this chat: its /lang if one was set, else the asker's app language
        (Telegram's language_code, a Slack user's locale) when earshot speaks it, else English."""
        return await self.history.settings.lang(chat) or best_language(user_lang)

    async def run(self, word: str, chat: ChatKey, sender: Sender, arg: str = "", *, private: bool,
                  prefix: str = "/", lang: str | None = None, user_lang: str | None = None) -> str | None:
        """What `word` (reset, usage, voice, lang) says after doing it; None when a stranger was already told no.

        private: a one-to-one chat (admins see everyone's usage there); prefix: how the platform spells
        commands ("/" or "/earshot "); lang: the chat's language (`language_for`), what the answer is in;
        user_lang: the asker's app language, which `lang auto` goes back to."""
        try:
            if word == "usage":
                return usage_text(await self.access.report(chat, sender, private=private), lang=lang)
            await self.access.check(chat, sender, spending=False)
        except AccessRefused as err:
            return None if err.silent else err.user_text(lang)
        if word == "reset":
            await self.history.reset(chat)   # the words only: usage survives, it is what budgets count
            return messages.text(messages.RESET_DONE, lang)
        if word == "lang":
            return await self._lang(chat, arg, prefix, lang, user_lang)
        if word == "spoken":
            return await self._spoken(chat, arg, prefix, lang)
        return await self._voice(chat, arg, prefix, lang)

    async def _spoken(self, chat: ChatKey, arg: str, prefix: str, lang: str | None) -> str:
        """spoken: the language transcripts here expect; spoken CODE: tell the recognizer it with each one
        (auto-detection fails on short clips); spoken auto: let it detect the language again."""
        choices = ", ".join(SPOKEN_LANGUAGES)
        if self.assistant.recognizer is None:
            return messages.text(messages.SPOKEN_NO_RECOGNIZER, lang, model=self.assistant.settings.model)
        wanted = arg.strip().lower()
        if not wanted:
            current = await self.assistant.spoken(chat)
            if current is None:
                return messages.text(messages.SPOKEN_DETECTED, lang, prefix=prefix, languages=choices)
            return messages.text(messages.SPOKEN_CURRENT, lang, language=current, prefix=prefix)
        if wanted in LANG_AUTO_WORDS:
            await self.assistant.set_spoken(chat, None)
            return messages.text(messages.SPOKEN_AUTO, lang)
        if wanted not in SPOKEN_LANGUAGES:
            shown = wanted if len(wanted) <= 20 else wanted[:20] + "…"
            return messages.text(messages.SPOKEN_UNKNOWN, lang, code=shown, languages=choices)
        await self.assistant.set_spoken(chat, wanted)
        return messages.text(messages.SPOKEN_SET, lang, language=wanted, prefix=prefix)

    async def _lang(self, chat: ChatKey, arg: str, prefix: str, lang: str | None, user_lang: str | None) -> str:
        """lang: which language earshot speaks here; lang CODE: speak that from now on; lang auto: each
        person's app language again. Said in the language it leaves the chat in."""
        wanted = arg.strip()
        if not wanted:
            current = LANGUAGES[best_language(lang)]
            return messages.text(messages.LANG_CURRENT, current.code, language=current.native, prefix=prefix,
                                 languages=language_choices())
        if wanted.lower() in LANG_AUTO_WORDS:
            await self.history.settings.set_lang(chat, None)
            return messages.text(messages.LANG_AUTO, best_language(user_lang))
        code = supported_language(wanted)
        if code is None:
            shown = wanted if len(wanted) <= 20 else wanted[:20] + "…"
            return messages.text(messages.LANG_UNKNOWN, lang, code=shown, languages=language_choices())
        await self.history.settings.set_lang(chat, code)
        return messages.text(messages.LANG_SET, code, language=LANGUAGES[code].native)

    async def model(self, chat: ChatKey, sender: Sender, arg: str = "", *, private: bool, is_admin: AdminCheck,
                    prefix: str = "/", lang: str | None = None) -> str | None:
        """/model: the chat's model and the ones allowed (EARSHOT_MODELS); /model NAME: switch to it (a chat's
        admins, or earshot's; anyone in a one-to-one chat). None when a stranger was already told no."""
        try:
            await self.access.check(chat, sender, spending=False)
        except AccessRefused as err:
            return None if err.silent else err.user_text(lang)
        models = self.assistant.models
        wanted = arg.strip()
        if not wanted:
            return messages.text(messages.MODEL_CURRENT, lang, model=await self.assistant.chat_model(chat),
                                 models=", ".join(models), prefix=prefix)
        name = next((m for m in models if m.lower() == wanted.lower()), None)
        if name is None:
            shown = wanted if len(wanted) <= 40 else wanted[:40] + "…"
            return messages.text(messages.MODEL_UNKNOWN, lang, model=shown, models=", ".join(models))
        if not private and not self.access.is_admin(chat, sender) and not await is_admin():
            return messages.text(messages.MODEL_ADMINS_ONLY, lang)
        await self.assistant.use_model(chat, name)
        return messages.text(messages.MODEL_SET, lang, model=name)

    async def _voice(self, chat: ChatKey, arg: str, prefix: str, lang: str | None = None) -> str:
        """voice on [VOICE] | voice off: answers here come back spoken too, or text only."""
        t = translator(lang)
        words = arg.split()
        action = words[0].lower() if words else ""
        if action == "off":
            await self.assistant.voice_off(chat)
            return t.text(messages.VOICE_OFF)
        if action != "on":
            return t.text(messages.VOICE_USAGE)
        try:
            voice = await self.assistant.voice_on(chat, words[1] if len(words) > 1 else None)
        except VoiceUnavailable as err:
            return err.user_text(lang)
        said = t.text(messages.VOICE_ON, voice=voice)
        return said if prefix == "/" else said.replace("/voice off", f"`{prefix}voice off`")
