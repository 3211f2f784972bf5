"""The row of inline buttons under an answer about audio: the other tasks for the same audio, one tap each.

callback_data is `e1:<task>:<token>[:<language>]`: the token is core.flow.audio_refs' opaque reference to the audio
(kept server-side, never the file id), so it stays far below Telegram's 64 bytes. Translate first opens a second
row of languages; a language button then asks for the translation.
"""
from __future__ import annotations

from collections.abc import Sequence

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from core.values import Task

# the format is every platform's (bots.buttons); re-exported for the Telegram adapter's modules and tests
from ..buttons import (
    CALLBACK_LIMIT,
    LANGUAGES,
    TASK_BUTTONS,
    VERSION,
    ButtonPress,
    callback_data,
    language_labels,
    parse_callback,
    task_labels,
)

__all__ = ["CALLBACK_LIMIT", "LANGUAGES", "LANGUAGES_PER_ROW", "TASK_BUTTONS", "VERSION", "ButtonPress",
           "callback_data", "parse_callback", "task_keyboard"]

LANGUAGES_PER_ROW = 3


def task_keyboard(token: str, answered: Task | None = None, *, languages_open: bool = False,
                  languages: Sequence[tuple[str, str]] = LANGUAGES, lang: str | None = None) -> InlineKeyboardMarkup:
    """The buttons under an answer, in the chat's language `lang`: every task but the one just answered; with
    languages_open (Translate tapped), a second row of languages under them."""
    row = [InlineKeyboardButton(label, callback_data=callback_data(token, task))
           for task, label in task_labels(lang, leave_out=(answered,) if answered else ())]
    rows = [row]
    if languages_open:
        buttons = [InlineKeyboardButton(name, callback_data=callback_data(token, Task.TRANSLATE, code))
                   for code, name in language_labels(lang, languages)]
        rows += [buttons[i:i + LANGUAGES_PER_ROW] for i in range(0, len(buttons), LANGUAGES_PER_ROW)]
    return InlineKeyboardMarkup(rows)
