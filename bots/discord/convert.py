"""Discord messages and interactions -> core terms: which audio a message carries, whose conversation it is,
who is asking, what a stored job's file and destination are. Converted once, at the door."""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

import discord

from core.audio.links import LinkedAudio
from core.flow.commands import is_audio_name, parse_command
from core.values import CarriedAudio, ChatKey, Incoming, Sender

PLATFORM = "discord"
MANAGE_GUILD = "manage_guild"


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


def can_manage(user: discord.abc.User) -> bool:
    """Manage Server, as the member's permissions in the server say."""
    perms = getattr(user, "guild_permissions", None)
    return bool(getattr(perms, MANAGE_GUILD, False))


def carried(ref: FileRef, *, voice: bool = False) -> CarriedAudio:
    """A FileRef as the core sees it; `voice`: the message is a voice message (what auto transcripts hear)."""
    return CarriedAudio(ref.dumps(), "voice" if voice else "link" if ref.link else "file", ref.name,
                        ref.content_type, ref.size, ref.id)


def incoming(message: discord.Message, bot_id: int) -> Incoming:
    """The door for a message (`bot_id`: earshot's own user id). In a DM the words are the message as written; in a
    server, without the mentions of earshot."""
    media, replied = audio_of(message), replied_to(message)
    replied_media = audio_of(replied)
    guild = message.guild
    words = strip_mentions(message.content, bot_id) if guild is not None else (message.content or "").strip()
    cmd = parse_command(words.lstrip("/"), strict=True)
    to_bot = replied is not None and replied.author.id == bot_id
    return Incoming(
        chat=chat_key(message.channel.id), sender=sender_of(message.author, guild.id if guild else None),
        message_id=str(message.id), words=words, command=(cmd.word, cmd.arg) if cmd else None,
        audio=(carried(media, voice=message.flags.voice),) if media is not None else (),
        replied_audio=carried(replied_media, voice=replied.flags.voice) if replied and replied_media else None,
        other_file=media is None and bool(message.attachments),
        addressed=guild is None or mentions(message, bot_id) or to_bot, replies_to_bot=to_bot,
        private=guild is None, group=guild is not None,
        user_lang=locale_of(guild.preferred_locale) if guild else None,     # a message tells no user's locale
        sender_name=message.author.display_name, sender_admin=can_manage(message.author),
        sent=message.created_at.timestamp())
