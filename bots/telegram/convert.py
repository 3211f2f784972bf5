"""Telegram's door: a Message becomes one core.values.Incoming (`incoming`), once, as the update arrives; past it
the handlers, digests and jobs read that value, never the Message. The functions it is built from say which audio a
message carries, whose conversation it is and whom it addresses; MediaRef is how a job stores a file to fetch it."""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

from telegram import CallbackQuery, Message, MessageEntity

from core.audio.links import LinkedAudio
from core.flow.commands import is_audio_name
from core.values import CarriedAudio, ChatKey, Incoming, Sender

PLATFORM = "telegram"
GROUPS = ("group", "supergroup")


@dataclass(frozen=True, slots=True)
class MediaRef:
    """A file in a message, enough to fetch it later: also stored as the chat's latest audio."""

    file_id: str
    kind: str                      # voice, audio, video_note, video, document
    file_name: str | None = None
    mime_type: str | None = None
    file_size: int | None = None
    file_unique_id: str | None = None   # the same for a file forwarded anywhere: the answer cache's key

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, ref: str) -> MediaRef:
        return cls(**json.loads(ref))


def media_of(message: Message | None) -> MediaRef | None:
    """The audio a message carries (voice, audio, round video, video, audio document), or None.

    A GIF is none of them: Telegram sends it as `animation` plus a silent video/mp4 `document`."""
    if message is None or message.animation is not None:
        return None
    if message.voice:
        v = message.voice
        return MediaRef(v.file_id, "voice", "voice.ogg", v.mime_type or "audio/ogg", v.file_size, v.file_unique_id)
    if message.audio:
        a = message.audio
        return MediaRef(a.file_id, "audio", a.file_name, a.mime_type, a.file_size, a.file_unique_id)
    if message.video_note:
        n = message.video_note
        return MediaRef(n.file_id, "video_note", "video_note.mp4", "video/mp4", n.file_size, n.file_unique_id)
    if message.video:
        vid = message.video
        return MediaRef(vid.file_id, "video", vid.file_name, vid.mime_type, vid.file_size, vid.file_unique_id)
    if message.document and is_audio_name(message.document.file_name, message.document.mime_type):
        d = message.document
        return MediaRef(d.file_id, "document", d.file_name, d.mime_type, d.file_size, d.file_unique_id)
    return None


def link_media(link: LinkedAudio) -> MediaRef:
    """An audio link in a message, fetched like a file (core.audio.links); named after the URL's last segment."""
    return MediaRef(link.url, "link", link.name)


def original_name(media: MediaRef) -> str | None:
    """The name the user's file had; voice notes and round videos have none of their own."""
    return None if media.kind in ("voice", "video_note") else media.file_name


def topic_id(message: Message) -> int | None:
    """The forum topic to answer in; replies in ordinary groups also carry a thread id, which we ignore."""
    return message.message_thread_id if message.is_topic_message else None


def chat_key(message: Message) -> ChatKey:
    """One history per chat, and per topic in forum supergroups."""
    topic = topic_id(message)
    return ChatKey(PLATFORM, str(message.chat_id), str(topic) if topic is not None else None)


def user_language(message: Message) -> str | None:
    """The sender's Telegram app language (an IETF tag like "de" or "pt-br"), when Telegram tells it."""
    return message.from_user.language_code if message.from_user is not None else None


def sender_of(message: Message) -> Sender:
    """Who sent it, as access rules and budgets see them: the user's id and @username, the chat's @username.

    A message on behalf of a chat (an anonymous group admin, whose `from` is GroupAnonymousBot in every
    group; or a channel) is the chat's own: its sender_chat is the identity."""
    if message.sender_chat is not None:
        return Sender(user_id=str(message.sender_chat.id), user_name=message.sender_chat.username,
                      chat_name=message.chat.username)
    user = message.from_user
    return Sender(user_id=str(user.id) if user else None, user_name=user.username if user else None,
                  chat_name=message.chat.username)


def _entities(message: Message) -> dict[MessageEntity, str]:
    if message.text:
        return message.parse_entities()
    # entities with no words to point into (caption_entities without a caption) mean nothing
    return message.parse_caption_entities() if message.caption else {}


def mentions_bot(message: Message, bot_id: int, username: str) -> bool:
    handle = "@" + username.lower()
    for entity, value in _entities(message).items():
        if entity.type == MessageEntity.MENTION and value.lower() == handle:
            return True
        if entity.type == MessageEntity.TEXT_MENTION and entity.user and entity.user.id == bot_id:
            return True
    return False


def replied_by(message: Message) -> int | None:
    """Who sent the message this one replies to, if it replies to one."""
    reply = message.reply_to_message
    return reply.from_user.id if reply is not None and reply.from_user is not None else None


def is_addressed(message: Message, bot_id: int, username: str) -> bool:
    """Private chats always; groups only for a command, an @mention, or a reply to one of our messages."""
    if message.chat.type == "private":
        return True
    if replied_by(message) == bot_id:
        return True
    if command_of(message, username) is not None:
        return True
    return mentions_bot(message, bot_id, username)


def strip_mention(text: str | None, username: str) -> str:
    """The words without '@ourbot', so the model gets the question, not the address."""
    if not text:
        return ""
    # matched in place: str.lower() can change a string's length ("İ" -> "i̇") and shift every index
    handle = re.compile(re.escape("@" + username), re.IGNORECASE | re.ASCII)
    out = ""
    while out != text:            # again after each pass: removing one can join the halves of another
        out, text = text, handle.sub("", text)
    return " ".join(out.split())


def command_of(message: Message, username: str) -> tuple[str, str] | None:
    """(command, rest) for '/cmd rest' or '/cmd@ourbot rest' in the text or caption; None otherwise.

    Commands addressed to another bot ('/cmd@otherbot') are not ours.
    """
    words = (message.text or message.caption or "").strip()
    if not words.startswith("/"):
        return None
    head, _, rest = words.partition(" ")
    name, _, target = head[1:].partition("@")
    if target and target.lower() != username.lower():
        return None
    if not name:
        return None
    return name.lower(), rest.strip()


def carried(media: MediaRef) -> CarriedAudio:
    """A MediaRef as the core sees it: its serialized form (a job's file_ref), and what decides about it."""
    return CarriedAudio(media.dumps(), media.kind, media.file_name, media.mime_type, media.file_size,
                        media.file_unique_id)


def names_bot(message: Message, bot_id: int, username: str) -> bool:
    """An @mention of the bot, or a command addressed to it by name ('/cmd@ourbot')."""
    head = (message.text or message.caption or "").strip().partition(" ")[0]
    return (head.startswith("/") and head.partition("@")[2].lower() == username.lower()) \
        or mentions_bot(message, bot_id, username)


def incoming(message: Message, bot_id: int, username: str) -> Incoming:
    """The door: everything the handlers need from `message`, read once (`bot_id`, `username`: this bot's)."""
    media = media_of(message)
    replied = media_of(message.reply_to_message)
    topic = topic_id(message)
    who = message.sender_chat or message.from_user
    return Incoming(
        chat=chat_key(message), sender=sender_of(message), message_id=str(message.message_id),
        thread_id=str(topic) if topic is not None else None,
        words=strip_mention(message.text or message.caption, username), command=command_of(message, username),
        audio=(carried(media),) if media is not None else (),
        replied_audio=carried(replied) if replied is not None else None,
        # a document that isn't audio; a GIF (animation plus a silent mp4 document) is nothing to hear nor to refuse
        other_file=media is None and message.animation is None and message.document is not None,
        addressed=is_addressed(message, bot_id, username), private=message.chat.type == "private",
        replies_to_bot=replied_by(message) == bot_id, names_bot=names_bot(message, bot_id, username),
        group=message.chat.type in GROUPS, user_lang=user_language(message),
        sender_name=getattr(who, "title", None) or getattr(who, "full_name", None) or "someone",
        sent=message.date.timestamp() if message.date else None)


def incoming_tap(query: CallbackQuery) -> Incoming | None:
    """The door for a tap on a button under one of our messages: who tapped, in which chat (and forum topic, when
    Telegram still includes the message whole: .taps.Tapped), under which message (what the answer replies to);
    `words` are the button's callback_data. None for an inline message's buttons, which have no chat."""
    message, user = query.message, query.from_user
    if message is None:
        return None
    topic = topic_id(message) if isinstance(message, Message) and message.is_accessible else None
    thread = str(topic) if topic is not None else None
    return Incoming(chat=ChatKey(PLATFORM, str(message.chat.id), thread),
                    sender=Sender(str(user.id), user.username, chat_name=message.chat.username),
                    message_id=str(message.message_id), thread_id=thread, words=query.data or "",
                    private=message.chat.type == "private", group=message.chat.type in GROUPS,
                    user_lang=user.language_code)
