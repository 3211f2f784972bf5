"""Answers as WhatsApp messages: text cut to 4096 characters, the buttons under an answer, voice notes, files.

WhatsApp formats `*bold*`, `_italic_` and `~strike~` and needs nothing escaped; model answers use Markdown, so
`**bold**` and `# headings` become `*bold*`. Pure functions returning the message part of a send (`{"type": …}`);
bots.whatsapp.graph adds the recipient and the quoted message.

The buttons under an answer about audio ask the same audio something else: WhatsApp allows three reply buttons
(titles up to 20 characters), so two other tasks and Translate, which opens a list message of languages. The
buttons, their labels (said in the chat's language) and their ids are every platform's (bots.buttons): an id is
`e1:<task>:<token>[:<language code>]`, the token core.flow.audio_refs' reference to the audio (bound to the
chat), never the media id; bots.buttons.parse_callback reads a tapped id back.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from core.values import Task
from core.words import messages
from core.words.i18n import translator
from core.words.text import split_text

from ..buttons import LANGUAGES, TASK_BUTTONS, callback_data, language_labels

MESSAGE_LIMIT = 4096          # characters of a text message's body
BODY_LIMIT = 1024             # an interactive message's body
BUTTONS = 3                   # reply buttons per message
TITLE_LIMIT = 20              # a reply button's title
ROW_TITLE_LIMIT = 24          # a list row's title
ROWS = 10                     # rows of a list message

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
def answer_buttons(token: str, answered: Task | None, lang: str | None) -> dict[str, Any]:
    """Reply buttons under an answer about audio, in the chat's language `lang`: the first other tasks, and
    Translate unless that was the answer (then three other tasks)."""
    t = translator(lang)
    others = [(task, label) for task, label, _ in TASK_BUTTONS if task not in (answered, Task.TRANSLATE)]
    translate = [(task, label) for task, label, _ in TASK_BUTTONS if task is Task.TRANSLATE]
    choices = others[:BUTTONS] if answered is Task.TRANSLATE else others[:BUTTONS - 1] + translate
    buttons = [{"type": "reply", "reply": {"id": callback_data(token, task), "title": t.text(label)[:TITLE_LIMIT]}}
               for task, label in choices]
    return {"type": "interactive", "interactive": {
        "type": "button", "body": {"text": t.text(messages.WHATSAPP_MORE)[:BODY_LIMIT]},
        "action": {"buttons": buttons}}}


def language_list(token: str, lang: str | None,
                  languages: Sequence[tuple[str, str]] = LANGUAGES) -> dict[str, Any]:
    """A list message of languages (Translate tapped), in the chat's language: one row each, at most ten."""
    t = translator(lang)
    rows = [{"id": callback_data(token, Task.TRANSLATE, code), "title": name[:ROW_TITLE_LIMIT]}
            for code, name in language_labels(lang, languages[:ROWS])]
    return {"type": "interactive", "interactive": {
        "type": "list", "body": {"text": t.text(messages.WHATSAPP_TRANSLATE_INTO)},
        "action": {"button": t.text(messages.WHATSAPP_LANGUAGES)[:TITLE_LIMIT],
                   "sections": [{"title": t.text(messages.BUTTON_TRANSLATE)[:ROW_TITLE_LIMIT], "rows": rows}]}}}
