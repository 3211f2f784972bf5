"""What a button under an answer about audio asks, written into the button and read back: one format for every
platform whose buttons carry a short string (Telegram's callback_data, Discord's custom_id).

The string is `e1:<task>:<token>[:<language>]`: the token is core.flow.audio_refs' opaque reference to the audio
(kept server-side, never the platform's file id), so it stays far below Telegram's 64 bytes and Discord's 100
characters. Translate with no language asks for a row of languages; a language button then asks for the
translation. Each adapter lays the buttons out in its own widgets (bots.telegram.buttons, bots.discord.render,
bots.whatsapp.render, bots.slack.blocks, whose action ids are its own) from the one table here, TASK_BUTTONS, with
labels in the chat's language (task_labels, language_labels).
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from core.config import QUICK_LANGUAGES
from core.flow.audio_refs import looks_like_token
from core.values import Task
from core.words import messages
from core.words.i18n import translator

VERSION = "e1"                    # a later format can coexist with buttons already in chats
CALLBACK_LIMIT = 64               # bytes Telegram keeps of callback_data (Discord keeps 100 characters)
# the buttons, in order, and their short codes
TASK_BUTTONS: tuple[tuple[Task, str, str], ...] = (     # labels: core.words.messages ids, said in the chat's language
    (Task.TRANSCRIBE, messages.BUTTON_TRANSCRIPT, "tx"),
    (Task.SUMMARIZE, messages.BUTTON_SUMMARY, "su"),
    (Task.SENTIMENT, messages.BUTTON_MOOD, "mo"),
    (Task.EVENTS, messages.BUTTON_SOUNDS, "ev"),
    (Task.TRANSLATE, messages.BUTTON_TRANSLATE, "tr"),
)
# (code in the string, the language as the translate prompt names it)
LANGUAGES = QUICK_LANGUAGES
_CODES = {code: task for task, _, code in TASK_BUTTONS}
_TASK_CODES = {task: code for task, _, code in TASK_BUTTONS}


def task_labels(lang: str | None, leave_out: Collection[Task] = ()) -> list[tuple[Task, str]]:
    """The task buttons in order, but those left out, each with its label in the chat's language `lang`."""
    t = translator(lang)
    return [(task, t.text(label)) for task, label, _ in TASK_BUTTONS if task not in leave_out]


def language_labels(lang: str | None, languages: Sequence[tuple[str, str]] = LANGUAGES) -> list[tuple[str, str]]:
    """(code, the language's name said in the chat's language `lang`) for each language a Translate menu offers."""
    t = translator(lang)
    return [(code, t.text(messages.LANGUAGE_NAMES.get(code, name))) for code, name in languages]


@dataclass(frozen=True, slots=True)
class ButtonPress:
    """What a tapped button asks: a task on the audio behind `token`; Translate with no language opens the row."""

    token: str
    task: Task
    language: str | None = None   # Translate: the target language's name ("Spanish")

    @property
    def choose_language(self) -> bool:
        return self.task is Task.TRANSLATE and self.language is None


def callback_data(token: str, task: Task, language: str | None = None) -> str:
    """The string of one button; `language` is a code from LANGUAGES."""
    if not looks_like_token(token):
        raise ValueError("not an audio reference token")
    parts = [VERSION, _TASK_CODES[task], token] + ([language] if language else [])
    data = ":".join(parts)
    if len(data.encode()) > CALLBACK_LIMIT:
        raise ValueError("callback_data over 64 bytes")
    return data


def parse_callback(data: str | None, languages: Sequence[tuple[str, str]] = LANGUAGES) -> ButtonPress | None:
    """A button's string back into what it asks; None for anything not ours (or from an older format)."""
    parts = (data or "").split(":")
    if len(parts) not in (3, 4) or parts[0] != VERSION or parts[1] not in _CODES or not looks_like_token(parts[2]):
        return None
    task = _CODES[parts[1]]
    if len(parts) == 3:
        return ButtonPress(parts[2], task)
    name = dict(languages).get(parts[3])
    if task is not Task.TRANSLATE or name is None:
        return None
    return ButtonPress(parts[2], task, name)
