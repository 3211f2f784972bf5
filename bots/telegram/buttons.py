"""The row of inline buttons under an answer about audio: the other tasks for the same audio, one tap each.

callback_data is `e1:<task>:<token>[:<language>]`: the token is core.audio_refs' opaque reference to the audio
(kept server-side, never the file id), so it stays far below Telegram's 64 bytes. Translate first opens a second
row of languages; a language button then asks for the translation.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from core import messages
from core.audio_refs import looks_like_token
from core.config import QUICK_LANGUAGES
from core.i18n import translator
from core.models import Task

VERSION = "e1"                    # a later format can coexist with buttons already in chats
CALLBACK_LIMIT = 64               # bytes Telegram keeps of callback_data
# the buttons, in order, and their short codes in callback_data
TASK_BUTTONS: tuple[tuple[Task, str, str], ...] = (     # labels: core.messages ids, said in the chat's language
    (Task.TRANSCRIBE, messages.BUTTON_TRANSCRIPT, "tx"),
    (Task.SUMMARIZE, messages.BUTTON_SUMMARY, "su"),
    (Task.SENTIMENT, messages.BUTTON_MOOD, "mo"),
    (Task.EVENTS, messages.BUTTON_SOUNDS, "ev"),
    (Task.TRANSLATE, messages.BUTTON_TRANSLATE, "tr"),
)
# (code in callback_data, the language as the translate prompt names it)
LANGUAGES = QUICK_LANGUAGES
LANGUAGES_PER_ROW = 3
_CODES = {code: task for task, _, code in TASK_BUTTONS}
_TASK_CODES = {task: code for task, _, code in TASK_BUTTONS}


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
    """The callback_data of one button; `language` is a code from LANGUAGES."""
    if not looks_like_token(token):
        raise ValueError("not an audio reference token")
    parts = [VERSION, _TASK_CODES[task], token] + ([language] if language else [])
    data = ":".join(parts)
    if len(data.encode()) > CALLBACK_LIMIT:
        raise ValueError("callback_data over 64 bytes")
    return data


def task_keyboard(token: str, answered: Task | None = None, *, languages_open: bool = False,
                  languages: Sequence[tuple[str, str]] = LANGUAGES, lang: str | None = None) -> InlineKeyboardMarkup:
    """The buttons under an answer, in the chat's language `lang`: every task but the one just answered; with
    languages_open (Translate tapped), a second row of languages under them."""
    t = translator(lang)
    row = [InlineKeyboardButton(t.text(label), callback_data=callback_data(token, task))
           for task, label, _ in TASK_BUTTONS if task != answered]
    rows = [row]
    if languages_open:
        buttons = [InlineKeyboardButton(t.text(messages.LANGUAGE_NAMES.get(code, name)),
                                        callback_data=callback_data(token, Task.TRANSLATE, code))
                   for code, name in languages]
        rows += [buttons[i:i + LANGUAGES_PER_ROW] for i in range(0, len(buttons), LANGUAGES_PER_ROW)]
    return InlineKeyboardMarkup(rows)


def parse_callback(data: str | None, languages: Sequence[tuple[str, str]] = LANGUAGES) -> ButtonPress | None:
    """A button's callback_data back into what it asks; None for anything not ours (or from an older format)."""
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
