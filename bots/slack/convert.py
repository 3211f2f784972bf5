"""Slack payloads to plain values: which files are audio, who is talking, what was asked, where to answer."""
from __future__ import annotations

import re
from typing import Any

from core.flow.commands import Command, is_audio_name, parse_command, task_for_text
from core.values import ChatKey, Sender, Task

__all__ = ["Command", "Task", "parse_command", "task_for_text"]     # the words are core's, the same everywhere

PLATFORM = "slack"

# Slack's own clips are webm/mp4 with these subtypes; uploads are recognised by type or extension (core.flow.commands)
CLIP_SUBTYPES = {"slack_audio", "slack_video"}
_MENTION = re.compile(r"<@[A-Z0-9]+(?:\|[^>]*)?>")


def _text(value: Any) -> str:
    """A payload field that should be text. Slack sends strings; anything else counts as absent, so a
    malformed payload is answered like one without the field instead of failing the listener."""
    return value if isinstance(value, str) else ""


def strip_mentions(text: str | None) -> str:
    """The words of a message without the `<@U123>` mentions in it."""
    return " ".join(_MENTION.sub(" ", _text(text)).split())


def is_audio_file(f: dict[str, Any]) -> bool:
    if _text(f.get("subtype")) in CLIP_SUBTYPES:
        return True
    return is_audio_name(_text(f.get("name")), _text(f.get("mimetype")), _text(f.get("filetype")))


def is_stub(f: dict[str, Any]) -> bool:
    """A Slack Connect file: the event carries only its id; files.info says what it is."""
    return _text(f.get("file_access")) == "check_file_info"


def audio_files(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The message's audio files that can be fetched (they have an id), and Slack Connect stubs,
    which may be audio: files.info tells when they are fetched."""
    files = message.get("files")
    if not isinstance(files, list):
        return []
    return [f for f in files if isinstance(f, dict) and _text(f.get("id")) and (is_stub(f) or is_audio_file(f))]


def is_from_bot(message: dict[str, Any]) -> bool:
    """Messages from any bot, ourselves included: never answered."""
    if message.get("subtype") == "bot_message":
        return True
    return bool(message.get("bot_id") or message.get("bot_profile"))


def latest_audio(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest audio file among messages (any order), skipping bots' posts."""
    newest: tuple[float, dict[str, Any]] | None = None
    for m in messages:
        if not isinstance(m, dict) or is_from_bot(m):
            continue
        found = audio_files(m)
        if found:
            try:
                ts = float(_text(m.get("ts")) or 0)
            except ValueError:
                ts = 0.0
            if newest is None or ts > newest[0]:
                newest = (ts, found[-1])
    return newest[1] if newest else None


def sender_of(payload: dict[str, Any], body: dict[str, Any] | None = None) -> Sender:
    """Who sent an event or a slash command: the user's id and own workspace (in a Slack Connect channel
    that is not the workspace the app is installed in, so the user's team comes before the envelope's)."""
    def text(*keys: str, source: dict[str, Any] = payload) -> str | None:
        return next((v for k in keys if isinstance(v := source.get(k), str) and v), None)
    team = text("user_team", "team", "team_id") or text("team_id", source=body or {})
    return Sender(user_id=text("user", "user_id"), user_name=text("user_name"), team_id=team)


def chat_key(channel: str, thread_ts: str | None = None) -> ChatKey:
    return ChatKey(PLATFORM, channel, thread_ts)


def is_dm(event: dict[str, Any]) -> bool:
    return event.get("channel_type") == "im" or str(event.get("channel", "")).startswith("D")


def thread_of(event: dict[str, Any]) -> str | None:
    """The thread an answer to this message belongs in: its own thread, or the one it is already in
    (None, the channel itself, for an event that names neither)."""
    return _text(event.get("thread_ts")) or _text(event.get("ts")) or None
