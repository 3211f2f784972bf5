"""Slack payloads to plain values: which files are audio, who is talking, what was asked, where to answer."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from core.models import ChatKey, Task

PLATFORM = "slack"

# Slack's own clips are webm/mp4 with these subtypes; uploads are recognised by type or extension.
CLIP_SUBTYPES = {"slack_audio", "slack_video"}
AUDIO_FILETYPES = {"mp3", "m4a", "mp4", "wav", "ogg", "oga", "opus", "flac", "aac", "amr", "webm", "3gp",
                   "3gpp", "aiff", "aif", "wma", "mov", "mkv", "m4v", "caf"}

# Words that name a task, in slash commands, mentions and DMs. The argument is the rest of the line.
TASK_WORDS: dict[str, Task] = {
    "transcribe": Task.TRANSCRIBE, "summarize": Task.SUMMARIZE, "summarise": Task.SUMMARIZE,
    "sentiment": Task.SENTIMENT, "events": Task.EVENTS, "ask": Task.ASK, "translate": Task.TRANSLATE,
}
STATE_WORDS = {"reset", "usage", "help"}
LATER_WORDS = {"digest", "forget"}      # in the contract, but not built yet

_MENTION = re.compile(r"<@[A-Z0-9]+(?:\|[^>]*)?>")


@dataclass(frozen=True, slots=True)
class Command:
    word: str                  # the command as typed, lower case
    arg: str                   # the rest of the text, stripped
    task: Task | None = None   # None for reset/usage/help and unknown words


def parse_command(text: str | None, *, strict: bool = False) -> Command | None:
    """The command a line of text names, if its first word is one.

    strict=False (slash commands) always returns a Command, unknown words included;
    strict=True (free text in DMs and mentions) returns None unless the first word is a known command.
    """
    text = (text or "").strip()
    word, _, arg = text.partition(" ")
    word = word.lower().rstrip(":,")
    arg = arg.strip()
    if word in TASK_WORDS:
        return Command(word, arg, TASK_WORDS[word])
    if word in STATE_WORDS | LATER_WORDS:
        # a DM that merely starts with "help me…" is a question, not the help command
        if strict and arg:
            return None
        return Command(word, arg)
    return None if strict else Command(word, arg)


def task_for_text(text: str) -> tuple[Task, str | None]:
    """What a message sent *with* audio asks: a named task, a question, or (no text) a voice chat."""
    text = text.strip()
    if not text:
        return Task.CHAT, None
    cmd = parse_command(text, strict=True)
    if cmd and cmd.task:
        if cmd.task is Task.ASK:
            return (Task.ASK, cmd.arg) if cmd.arg else (Task.CHAT, None)
        return cmd.task, cmd.arg or None
    return Task.ASK, text


def strip_mentions(text: str | None) -> str:
    """The words of a message without the `<@U123>` mentions in it."""
    return " ".join(_MENTION.sub(" ", text or "").split())


def is_audio_file(f: dict[str, Any]) -> bool:
    if f.get("subtype") in CLIP_SUBTYPES:
        return True
    mime = (f.get("mimetype") or "").lower()
    if mime.startswith(("audio/", "video/")):
        return True
    ext = (f.get("name") or "").rsplit(".", 1)[-1].lower() if "." in (f.get("name") or "") else ""
    return (f.get("filetype") or "").lower() in AUDIO_FILETYPES or ext in AUDIO_FILETYPES


def audio_files(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in message.get("files") or [] if isinstance(f, dict) and is_audio_file(f)]


def is_from_bot(message: dict[str, Any]) -> bool:
    """Messages from any bot, ourselves included: never answered."""
    if message.get("subtype") == "bot_message":
        return True
    return bool(message.get("bot_id") or message.get("bot_profile"))


def latest_audio(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest audio file among messages (any order), skipping bots' posts."""
    newest: tuple[float, dict[str, Any]] | None = None
    for m in messages:
        if is_from_bot(m):
            continue
        found = audio_files(m)
        if found:
            ts = float(m.get("ts") or 0)
            if newest is None or ts > newest[0]:
                newest = (ts, found[-1])
    return newest[1] if newest else None


def chat_key(channel: str, thread_ts: str | None = None) -> ChatKey:
    return ChatKey(PLATFORM, channel, thread_ts)


def is_dm(event: dict[str, Any]) -> bool:
    return event.get("channel_type") == "im" or str(event.get("channel", "")).startswith("D")


def thread_of(event: dict[str, Any]) -> str:
    """The thread an answer to this message belongs in: its own thread, or the one it is already in."""
    return str(event.get("thread_ts") or event["ts"])
