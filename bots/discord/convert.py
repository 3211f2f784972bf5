"""Discord messages and interactions -> core terms: which audio a message carries, whose conversation it is,
who is asking, what a stored job's file and destination are. Converted once, at the door."""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

import discord

from core.audio.links import LinkedAudio
from core.flow.commands import is_audio_name
from core.values import ChatKey, Sender

PLATFORM = "discord"


@dataclass(frozen=True, slots=True)
class FileRef:
    """An attachment (or an audio link), enough to fetch it again: what a job and the chat's latest audio store.

    Discord's attachment URLs are signed CDN links that need no token; they expire after a day or so."""

    url: str
    name: str | None = None
    content_type: str | None = None
    size: int | None = None
    id: str | None = None          # the attachment's id: the answer cache's key for it
    voice: bool = False            # a voice message (IS_VOICE_MESSAGE), as opposed to a file
    link: bool = False             # an audio link a user sent (core.audio.links fetches it, with its SSRF guards)

    def dumps(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v not in (None, False)}, separators=(",", ":"))

    @classmethod
    def loads(cls, ref: str) -> FileRef:
        data = json.loads(ref)
        return cls(**{k: data[k] for k in cls.__slots__ if k in data})


@dataclass(frozen=True, slots=True)
class Where:
    """Where a job's answer goes: the channel, the message it replies to (if any), and whether the asker came
    through an interaction (its token is kept in memory only, never stored: see .jobs)."""

    channel: int
    reply_to: int | None = None

    def dumps(self) -> str:
        return json.dumps({"channel": str(self.channel), "reply_to": str(self.reply_to) if self.reply_to else None})

    @classmethod
    def loads(cls, ref: str) -> Where:
        data = json.loads(ref)
        return cls(int(data["channel"]), int(data["reply_to"]) if data.get("reply_to") else None)


def is_audio(attachment: discord.Attachment) -> bool:
    """A voice message's clip, or an audio or video file (by type or name)."""
    return attachment.is_voice_message() or is_audio_name(attachment.filename, attachment.content_type)


def file_of(attachment: discord.Attachment) -> FileRef:
    return FileRef(attachment.url, attachment.filename, attachment.content_type, attachment.size,
                   str(attachment.id), attachment.is_voice_message())


def audio_of(message: discord.Message | None) -> FileRef | None:
    """The message's last audio attachment, or None."""
    if message is None:
        return None
    found = [a for a in message.attachments if is_audio(a)]
    return file_of(found[-1]) if found else None


def link_file(link: LinkedAudio) -> FileRef:
    return FileRef(link.url, link.name, link=True)


def replied_to(message: discord.Message) -> discord.Message | None:
    """The message this one replies to, as Discord sent it along (None when deleted or not resolved)."""
    ref = message.reference
    resolved = ref.resolved if ref is not None else None
    return resolved if isinstance(resolved, discord.Message) else None


def chat_key(channel_id: int) -> ChatKey:
    """One history per channel: a DM, a server's text channel, or a thread (which is a channel of its own)."""
    return ChatKey(PLATFORM, str(channel_id))


def sender_of(user: discord.abc.User, guild_id: int | None) -> Sender:
    """Who asks, as the allowed lists see them: the user's id, and the server as the 'team' (so a server's id
    in EARSHOT_ALLOWED_USERS lets its members in)."""
    return Sender(user_id=str(user.id), user_name=user.name, team_id=str(guild_id) if guild_id else None)


def strip_mentions(text: str | None, bot_id: int) -> str:
    """The words without `<@bot>` (or `<@!bot>`), so the model gets the question, not the address."""
    return " ".join(re.sub(rf"<@!?{bot_id}>", " ", text or "").split())


def mentions(message: discord.Message, bot_id: int) -> bool:
    """The message names the bot itself: a reply to one of its messages pings it too, which is not a mention."""
    return bool(re.search(rf"<@!?{bot_id}>", message.content or ""))


def locale_of(value: Any) -> str | None:
    """discord.Locale ("en-US", "de", "zh-CN") as a language tag earshot can match, or None."""
    text = str(value.value if isinstance(value, discord.Locale) else value or "")
    return text or None
