"""The words people use with earshot, the same on every platform, and the checks a request must pass.

Adapters parse their platform's updates into these terms; nothing here knows Telegram or Slack.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from core.errors import NeedsAudio, NeedsText
from core.flow.digest_command import parse_digest
from core.values import Incoming, Task
from core.words import messages

# words that name a task about audio, aliases included; the argument is the rest of the line
TASK_WORDS: dict[str, Task] = {
    "transcribe": Task.TRANSCRIBE, "summarize": Task.SUMMARIZE, "summarise": Task.SUMMARIZE,
    "sentiment": Task.SENTIMENT, "events": Task.EVENTS, "ask": Task.ASK, "translate": Task.TRANSLATE,
}
STATE_WORDS = {"reset", "usage", "help", "voice", "lang", "model", "spoken"}   # chat state, nothing heard
DIGEST_WORDS = {"digest", "forget"}                    # group digests (core.flow.digest)

# audio sent "as a file": recognised by MIME type or, since clients often send octet-stream, by extension
AUDIO_EXTENSIONS = {"mp3", "m4a", "m4b", "mp4", "m4v", "aac", "wav", "flac", "ogg", "oga", "opus", "amr", "wma",
                    "webm", "weba", "3gp", "3gpp", "mka", "mkv", "mov", "aiff", "aif", "caf"}
AUDIO_MIME_PREFIXES = ("audio/", "video/")
AUDIO_MIMES = {"application/ogg", "application/x-ogg"}


def is_audio_name(file_name: str | None, mime_type: str | None = None, file_type: str | None = None) -> bool:
    """Audio (or video with a sound track) by MIME type, the platform's file type, or the name's extension."""
    mime = (mime_type or "").lower()
    if mime.startswith(AUDIO_MIME_PREFIXES) or mime in AUDIO_MIMES:
        return True
    ext = PurePosixPath(file_name or "").suffix.lower().lstrip(".")
    return ext in AUDIO_EXTENSIONS or (file_type or "").lower() in AUDIO_EXTENSIONS


def with_question(task: Task, text: str | None) -> tuple[Task, str | None]:
    """"ask" with no question is a voice chat about the audio; other tasks keep their (maybe empty) argument."""
    text = (text or "").strip() or None
    if task is Task.ASK and text is None:
        return Task.CHAT, None
    return task, text


def check_request(task: Task, text: str | None, has_audio: bool) -> None:
    """Refuse what can't work before anything is spent: NeedsText or NeedsAudio with what to do."""
    words = (text or "").strip()
    if task is Task.FOLLOW_UP and not words:
        raise NeedsText(messages.NOTHING_TO_FOLLOW)
    if task is Task.ASK and not words:
        raise NeedsText(messages.NEED_QUESTION)
    if task is Task.TRANSLATE and not words:
        raise NeedsText(messages.NEED_LANGUAGE)
    if task is not Task.FOLLOW_UP and not has_audio:
        raise NeedsAudio(messages.NO_AUDIO_YET)


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
    text = (text if isinstance(text, str) else "").strip()
    word, _, arg = text.partition(" ")
    word = word.lower().rstrip(":,")
    arg = arg.strip()
    if word in TASK_WORDS:
        return Command(word, arg, TASK_WORDS[word])
    if word in STATE_WORDS | DIGEST_WORDS:
        # a DM that merely starts with "help me…" is a question, not the help command
        # ("digest daily 09:00 Mars/Base" is still the command: its answer says what a zone looks like)
        if strict and arg and not (word == "digest" and (parse_digest(arg).action != "invalid"
                                                         or arg.lower().startswith("daily "))) \
                and not (word == "voice" and arg.split()[0].lower() in ("on", "off")) \
                and not (word in ("lang", "model", "spoken") and len(arg.split()) == 1):
            return None
        return Command(word, arg)
    return None if strict else Command(word, arg)


def command_in(message: Incoming) -> Command | None:
    """The command an adapter's door found in a message's words (Incoming.command), with the task it names."""
    return Command(message.command[0], message.command[1], TASK_WORDS.get(message.command[0])) \
        if message.command else None


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
