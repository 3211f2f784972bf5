"""Block Kit built from core data: the task buttons under an answer, and the Home tab.

Pure functions returning JSON-ready dicts. Button values carry core.flow.audio_refs tokens (never file ids); the
action_ids here are what bots/slack/interactions.py parses back.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.flow.access import UsageReport, usage_text
from core.flow.audio_refs import looks_like_token
from core.values import Task

from ..buttons import LANGUAGES, language_labels, task_labels
from .render import escape

TASK_ACTION_PREFIX = "earshot_task_"          # + task value: a button under an answer
TRANSLATE_ACTION = "earshot_translate"        # the language menu under an answer; option values "<token>:<code>"
HOME_VOICE_ACTION = "earshot_home_voice"      # radio buttons: spoken answers on / off
HOME_LANGUAGE_ACTION = "earshot_home_language"  # menu: the language answers are written in
HOME_BLOCKS = 100                             # Slack's limit for a Home tab view
ID_LIMIT = 255                                # block_id and action_id
AUTO_LANGUAGE = "auto"                        # the language menu's "as spoken" option


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _md(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def _option(label: str, value: str) -> dict[str, Any]:
    return {"text": _plain(label), "value": value}


def answer_actions(token: str, answered: Task | None = None, *,
                   languages: Sequence[tuple[str, str]] = LANGUAGES, lang: str | None = None) -> dict[str, Any]:
    """The actions block under an answer about audio, in the chat's language `lang`: the other tasks as buttons,
    and Translate as a language menu (one pick asks for the translation). Append it to the answer's last
    message's blocks. The tasks and labels are every platform's (bots.buttons); the action ids are Slack's."""
    if not looks_like_token(token):
        raise ValueError("not an audio reference token")
    labels = dict(task_labels(lang))
    elements: list[dict[str, Any]] = [
        {"type": "button", "action_id": TASK_ACTION_PREFIX + task.value, "text": _plain(label), "value": token}
        for task, label in labels.items() if task not in (answered, Task.TRANSLATE)]
    if answered != Task.TRANSLATE:
        elements.append({"type": "static_select", "action_id": TRANSLATE_ACTION,
                         "placeholder": _plain(labels[Task.TRANSLATE]),
                         "options": [_option(name, f"{token}:{code}")
                                     for code, name in language_labels(lang, languages)]})
    return {"type": "actions", "block_id": f"earshot_answer_{token}", "elements": elements}


@dataclass(frozen=True, slots=True)
class HomeSettings:
    """The settings a user may change from the Home tab, as they stand."""

    spoken: bool                   # answers also spoken as audio (models that speak)
    language: str | None = None    # a code from LANGUAGES; None: answers in the language spoken
    voice: str | None = None       # the voice spoken answers use, shown beside the switch
    spoken_language: str | None = None   # /spoken: the language transcripts expect; None: detected


def home_view(report: UsageReport | None, settings: HomeSettings, *, reaction: str = "memo",
              languages: Sequence[tuple[str, str]] = LANGUAGES) -> dict[str, Any]:
    """The Home tab: what earshot does, how to use it, today's usage and what is left, and the settings."""
    how = "\n".join((
        "• *Send a clip* in a DM, or *@mention* earshot with one in a channel: it answers in the thread.",
        "• On any message with a clip: *More actions (⋮) → Transcribe with earshot* or *Summarize with earshot*.",
        f"• React with :{reaction}: to a clip to get its transcript in the thread, once however many react.",
        "• `/earshot transcribe`, `summarize`, `sentiment`, `events`, `ask <question>`, `translate <language>` "
        "act on the latest audio in the channel; `/earshot help` lists the rest.",
        "• Under each answer, buttons ask the same audio something else.",
    ))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "block_id": "earshot_home_title", "text": _plain("earshot")},
        {"type": "section", "block_id": "earshot_home_what", "text": _md(
            "Listens to voice clips, audio and video files, and answers about them: transcripts, summaries, "
            "the speaker's mood, sounds and music, translations, and answers to your questions.")},
        {"type": "section", "block_id": "earshot_home_how", "text": _md("*How to use it*\n" + how)},
        {"type": "divider", "block_id": "earshot_home_div1"},
    ]
    if report is not None:
        blocks.append({"type": "section", "block_id": "earshot_home_usage",
                       "text": _md("*Your usage today*\n" + escape(usage_text(report)))})
        blocks.append({"type": "divider", "block_id": "earshot_home_div2"})
    on, off = _option("Spoken and written", "on"), _option("Written only", "off")
    voice_label = f"Spoken answers ({escape(settings.voice)})" if settings.voice else "Spoken answers"
    blocks.append({"type": "section", "block_id": "earshot_home_voice", "text": _md(f"*{voice_label}*"),
                   "accessory": {"type": "radio_buttons", "action_id": HOME_VOICE_ACTION, "options": [on, off],
                                 "initial_option": on if settings.spoken else off}})
    language_options = [_option("As spoken", AUTO_LANGUAGE), *(_option(name, code) for code, name in languages)]
    current = next((o for o in language_options if o["value"] == (settings.language or AUTO_LANGUAGE)),
                   language_options[0])
    blocks.append({"type": "section", "block_id": "earshot_home_language", "text": _md("*Language of answers*"),
                   "accessory": {"type": "static_select", "action_id": HOME_LANGUAGE_ACTION,
                                 "options": language_options, "initial_option": current}})
    pinned = f"`{escape(settings.spoken_language)}`" if settings.spoken_language else "detected by the recognizer"
    blocks.append({"type": "context", "block_id": "earshot_home_spoken",
                   "elements": [_md(f"*Language spoken in your clips:* {pinned} · `/earshot spoken <code>` or "
                                    "`/earshot spoken auto`")]})
    return {"type": "home", "callback_id": "earshot_home", "blocks": blocks}
