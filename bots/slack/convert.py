"""Slack's door: an event (a DM, an @mention, a channel message) or a slash command becomes one core.values.Incoming
(`incoming_event`, `incoming_command`), once, as it arrives; past it the listeners and digests read that value,
never the payload. The functions it is built from say which files are audio, who is talking, what was asked."""
from __future__ import annotations

import json
import re
from typing import Any

from core.audio.links import split_link
from core.flow.commands import Command, is_audio_name, parse_command, task_for_text
from core.values import CarriedAudio, ChatKey, Incoming, Sender, Task

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


KEPT = ("id", "name", "mimetype", "filetype", "subtype", "size", "url_private", "url_private_download",
        "mode", "file_access", "is_external",
        "link")   # not Slack's: an audio link a user sent (core.audio.links fetches it, never with the token)


def file_ref(file: dict[str, Any]) -> str:
    """What a job stores to fetch the file again (.files.download takes it back)."""
    return json.dumps({k: file[k] for k in KEPT if k in file})


def carried(file: dict[str, Any]) -> CarriedAudio:
    """A file of a message (or a stub, or an audio link) as the core sees it; its id is what a chat remembers as
    its latest audio and the answer cache's key."""
    size = file.get("size")
    return CarriedAudio(file_ref(file), "link" if "link" in file else _text(file.get("subtype")) or "file",
                        _text(file.get("name")) or None, _text(file.get("mimetype")) or None,
                        size if isinstance(size, int) else None, _text(file.get("id")) or None)


def link_audio(text: str) -> tuple[CarriedAudio, str] | None:
    """Words that start with a link, as audio to fetch (core.audio.links) and the words after it."""
    link = split_link(text)
    return (carried({"link": link.url, "name": link.name}), link.rest) if link else None


def _sent(event: dict[str, Any]) -> float | None:
    try:
        return float(_text(event.get("ts")))
    except ValueError:
        return None


def incoming_event(event: dict[str, Any], body: dict[str, Any]) -> Incoming:
    """The door for a `message` or `app_mention` event (`body`: its envelope). A DM and a channel keep one history
    each; a mention, one per thread."""
    channel, private = _text(event.get("channel")), is_dm(event)
    mention = event.get("type") == "app_mention"
    words = strip_mentions(event.get("text"))
    cmd = parse_command(words, strict=True)
    audio = tuple(carried(f) for f in audio_files(event))
    return Incoming(
        chat=chat_key(channel, thread_of(event)) if mention else chat_key(channel), sender=sender_of(event, body),
        message_id=_text(event.get("ts")), thread_id=_text(event.get("thread_ts")) or None, words=words,
        command=(cmd.word, cmd.arg) if cmd else None, audio=audio,
        other_file=not audio and bool(event.get("files")), addressed=private or mention, private=private,
        group=not private, sent=_sent(event))


def incoming_command(command: dict[str, Any]) -> Incoming:
    """The door for a slash command (`/earshot <words>`): always a command, answered through its response_url."""
    channel = _text(command.get("channel_id"))
    cmd = parse_command(command.get("text"))
    assert cmd is not None                        # a slash command always names one (maybe unknown, maybe "")
    return Incoming(chat=chat_key(channel), sender=sender_of(command), message_id=_text(command.get("trigger_id")),
                    words=" ".join(_text(command.get("text")).split()), command=(cmd.word, cmd.arg),
                    private=channel.startswith("D"), group=not channel.startswith("D"),
                    respond_to=_text(command.get("response_url")) or None)
