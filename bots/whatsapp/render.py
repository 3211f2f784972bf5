"""Answers as WhatsApp messages: text cut to 4096 characters, the buttons under an answer, voice notes, files.

WhatsApp formats `*bold*`, `_italic_` and `~strike~` and needs nothing escaped; model answers use Markdown, so
`**bold**` and `# headings` become `*bold*`. Pure functions returning the message part of a send (`{"type": …}`);
bots.whatsapp.graph adds the recipient and the quoted message.

The buttons under an answer about audio ask the same audio something else: WhatsApp allows three reply buttons
(titles up to 20 characters), so two other tasks and Translate, which opens a list message of languages. A
button's id is `wa1:<task>:<token>[:<language code>]`: the token is core.flow.audio_refs' reference to the audio
(bound to the chat), never the media id.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.config import QUICK_LANGUAGES
from core.flow.audio_refs import looks_like_token
from core.flow.taps import TASK_CHOICES
from core.values import Task
from core.words import messages
from core.words.text import split_text

MESSAGE_LIMIT = 4096          # characters of a text message's body
BODY_LIMIT = 1024             # an interactive message's body
BUTTONS = 3                   # reply buttons per message
TITLE_LIMIT = 20              # a reply button's title
ROW_TITLE_LIMIT = 24          # a list row's title
VERSION = "wa1"
TASK_BUTTONS = TASK_CHOICES
TRANSLATE_TITLE = "Translate"
LANGUAGES = QUICK_LANGUAGES
_TASKS = {task.value: task for task, _ in TASK_BUTTONS} | {Task.TRANSLATE.value: Task.TRANSLATE}

_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.MULTILINE)


def to_whatsapp(text: str) -> str:
    """Markdown's `**bold**` and `# heading` as WhatsApp's `*bold*`."""
    return _BOLD.sub(r"*\1*", _HEADING.sub(r"**\1**", text))


def pieces(text: str, *, markdown: bool = True) -> list[str]:
    """The text in messages of at most MESSAGE_LIMIT characters, cut at natural breaks (core.words.text)."""
    return split_text(to_whatsapp(text) if markdown else text, MESSAGE_LIMIT) or ["…"]


def text_message(body: str) -> dict[str, Any]:
    return {"type": "text", "text": {"body": body, "preview_url": False}}


def audio_message(media_id: str) -> dict[str, Any]:
    """An uploaded OGG/Opus file: shown as a voice note."""
    return {"type": "audio", "audio": {"id": media_id}}


def document_message(media_id: str, filename: str, caption: str | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {"id": media_id, "filename": filename}
    if caption:
        document["caption"] = caption
    return {"type": "document", "document": document}


# --- the buttons under an answer ----------------------------------------------------------------
def button_id(token: str, task: Task, language: str | None = None) -> str:
    if not looks_like_token(token):
        raise ValueError("not an audio reference token")
    return ":".join([VERSION, task.value, token, *([language] if language else [])])


@dataclass(frozen=True, slots=True)
class Press:
    """What a tapped button or list row asks: `task` of the audio behind `token`; Translate without a language
    opens the list of languages."""

    token: str
    task: Task
    language: str | None = None   # Translate: the language's name as prompted ("Spanish")

    @property
    def choose_language(self) -> bool:
        return self.task is Task.TRANSLATE and self.language is None


def parse_press(tap: str | None, languages: Sequence[tuple[str, str]] = LANGUAGES) -> Press | None:
    """A button's or row's id back into what it asks; None for anything not ours."""
    parts = (tap or "").split(":")
    if len(parts) not in (3, 4) or parts[0] != VERSION or parts[1] not in _TASKS or not looks_like_token(parts[2]):
        return None
    task = _TASKS[parts[1]]
    if len(parts) == 3:
        return Press(parts[2], task)
    name = dict(languages).get(parts[3])
    return Press(parts[2], task, name) if task is Task.TRANSLATE and name else None


def answer_buttons(token: str, answered: Task | None, lang: str | None) -> dict[str, Any]:
    """Reply buttons under an answer about audio: other tasks, and Translate unless that was the answer."""
    others = [(task, title) for task, title in TASK_BUTTONS if task != answered]
    choices = others[:BUTTONS] if answered is Task.TRANSLATE else [*others[:BUTTONS - 1],
                                                                   (Task.TRANSLATE, TRANSLATE_TITLE)]
    buttons = [{"type": "reply", "reply": {"id": button_id(token, task), "title": title[:TITLE_LIMIT]}}
               for task, title in choices]
    return {"type": "interactive", "interactive": {
        "type": "button", "body": {"text": messages.text(messages.WHATSAPP_MORE, lang)[:BODY_LIMIT]},
        "action": {"buttons": buttons}}}


def language_list(token: str, lang: str | None,
                  languages: Sequence[tuple[str, str]] = LANGUAGES) -> dict[str, Any]:
    """A list message of languages (Translate tapped): one row each, at most ten."""
    rows = [{"id": button_id(token, Task.TRANSLATE, code), "title": name[:ROW_TITLE_LIMIT]}
            for code, name in languages[:10]]
    return {"type": "interactive", "interactive": {
        "type": "list", "body": {"text": messages.text(messages.WHATSAPP_TRANSLATE_INTO, lang)},
        "action": {"button": messages.text(messages.WHATSAPP_LANGUAGES, lang)[:TITLE_LIMIT],
                   "sections": [{"title": TRANSLATE_TITLE, "rows": rows}]}}}
