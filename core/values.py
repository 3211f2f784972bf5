"""The data that crosses the core/adapter seam: plain frozen dataclasses, no platform types."""
from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


class Task(enum.StrEnum):
    CHAT = "chat"              # voice chat: the audio alone is the instruction
    ASK = "ask"                # a question about the audio
    TRANSCRIBE = "transcribe"
    SUMMARIZE = "summarize"
    SENTIMENT = "sentiment"
    EVENTS = "events"
    TRANSLATE = "translate"
    FOLLOW_UP = "follow_up"    # text only, answered from the chat's history
    LISTEN = "listen"          # a group's voice note heard for digests: stored, never answered (core.flow.digest)


# tasks whose answers carry mm:ss marks the model wrote, moved to where each chunk sits in the recording
TIMED = frozenset({Task.EVENTS, Task.ASK, Task.SENTIMENT})


@dataclass(frozen=True, slots=True)
class ChatKey:
    """One conversation history: a chat, or a thread inside it."""

    platform: str              # "telegram", "slack", "cli"
    chat_id: str
    thread_id: str | None = None


@dataclass(frozen=True, slots=True)
class Audio:
    """Audio exactly as the user sent it; the core decodes and normalises it."""

    data: bytes
    filename: str | None = None
    mime_type: str | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """One user turn, stripped of platform types."""

    chat: ChatKey
    task: Task
    audio: Audio | None = None
    text: str | None = None    # the question, the target language, or a follow-up message
    user_id: str | None = None
    user_name: str | None = None   # Telegram @username (without the @); shown to admins, matched by access rules
    team_id: str | None = None     # Slack workspace of the user
    chat_name: str | None = None   # Telegram public chat @username (without the @)
    retry: bool = False            # a durable job's later attempt (core.flow.runner): not a new request to rate-limit
    voice: str | None = None       # speak the answer in this voice (else the chat's /voice setting decides)
    audio_id: str | None = None    # the platform's stable id of the audio's content (Telegram file_unique_id)
    admitted: bool = False         # the adapter applied the rate limit when it accepted it (core.flow.runner jobs)
    lang: str | None = None        # the chat's language (core.flow.chat_state.language_for): answers written in it
    spoken: str | None = None      # the language spoken in the audio, for the recognizer (CLI --spoken; else
                                   # the chat's /spoken; None: the recognizer detects it)

    @property
    def sender(self) -> Sender:
        return Sender(self.user_id, self.user_name, self.team_id, self.chat_name)


@dataclass(frozen=True, slots=True)
class Sender:
    """Who is asking, as the platform tells it: what access rules, budgets and rate limits are about."""

    user_id: str | None = None
    user_name: str | None = None
    team_id: str | None = None
    chat_name: str | None = None


@dataclass(frozen=True, slots=True)
class CarriedAudio:
    """Audio a message carries (a file, a voice note, a link to one), as the adapter's door saw it: enough to fetch
    it later. `ref` is the adapter's own serialized reference, stored as a job's file_ref and read back only by that
    adapter's fetch; the rest is what the core and the adapter's handlers decide by."""

    ref: str
    kind: str | None = None          # the platform's word for it: voice, audio, video_note, document, link, clip…
    name: str | None = None
    mime_type: str | None = None
    size: int | None = None
    unique_id: str | None = None     # the platform's stable id of the content (the answer cache's key)


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message (or slash command) as it came in, converted once at the adapter's door (bots/<platform>/convert.py):
    who sent it, where, what it says and which audio it carries. Past the door nothing reads the platform's own
    objects again; the handlers, digest listeners, access and job submission take this value."""

    chat: ChatKey                    # the history it belongs to
    sender: Sender
    message_id: str                  # the platform's id of the message, what an answer replies to
    thread_id: str | None = None     # the thread or topic it was posted in (may differ from chat.thread_id)
    words: str = ""                  # the text or caption, mentions of the bot taken out
    command: tuple[str, str] | None = None   # (name, rest) when the words are a command to the bot
    audio: tuple[CarriedAudio, ...] = ()     # the audio it carries, in order (usually one)
    replied_audio: CarriedAudio | None = None   # the audio of the message it replies to
    other_file: bool = False         # it carries a file that is not audio
    addressed: bool = True           # spoken to the bot: a private chat, a command, a mention, a reply to the bot
    replies_to_bot: bool = False     # it answers one of the bot's own messages
    names_bot: bool = False          # the bot is named in it: an @mention, or a command addressed /cmd@bot
    private: bool = False            # a one-to-one chat with the bot
    group: bool = False              # a group or channel, where digests listen
    user_lang: str | None = None     # the sender's app language, when the platform tells it (IETF tag)
    sender_name: str | None = None   # how a digest names the sender
    sender_admin: bool | None = None   # the event itself says whether the sender administers the chat (None: ask)
    sent: float | None = None        # when it was posted (Unix time)
    respond_to: str | None = None    # where the platform lets an answer go besides the chat (Slack's response_url)
    tap: str | None = None           # a button tapped under one of earshot's messages, its id (callback data), when
    #                                  the platform delivers the tap as a message of the chat (WhatsApp's replies)

    @property
    def last_audio(self) -> CarriedAudio | None:
        return self.audio[-1] if self.audio else None


@dataclass(frozen=True, slots=True)
class Usage:
    audio_tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    # the audio figure (and with it the input's split) is earshot's estimate from the audio's length at the
    # model's rate: the server (vLLM) counts audio inside its prompt tokens without saying how many
    estimated: bool = False

    @property
    def total(self) -> int:
        return self.audio_tokens + self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.audio_tokens + other.audio_tokens, self.input_tokens + other.input_tokens,
                     self.output_tokens + other.output_tokens, self.estimated or other.estimated)

    def with_audio_estimate(self, audio_tokens: int) -> Usage:
        """This usage with `audio_tokens` (an estimate) taken out of the input tokens it was counted in,
        when the server reported none."""
        if self.audio_tokens or not audio_tokens:
            return self
        audio = min(audio_tokens, self.input_tokens) if self.input_tokens else audio_tokens
        return Usage(audio, max(0, self.input_tokens - audio), self.output_tokens, True)


@dataclass(frozen=True, slots=True)
class Part:
    """The model's answer for one chunk of the audio."""

    start: float               # seconds into the original audio
    end: float
    text: str


@dataclass(frozen=True, slots=True)
class Reply:
    """What to tell the user. Adapters decide how to render it."""

    text: str
    task: Task
    parts: tuple[Part, ...] = ()
    usage: Usage = field(default_factory=Usage)
    duration: float | None = None    # seconds of audio the answer covers
    request_ids: tuple[str, ...] = ()
    speech: Speech | None = None     # the answer spoken, when the chat asked for voice and the model speaks
    cached: bool = False             # answered from core.store.answer_cache: no model call, no tokens
    language: str | None = None      # the language the recognizer heard (transcripts by EARSHOT_ASR_MODEL)
    emotion: str | None = None       # the speaker's emotion the recognizer reports


@dataclass(frozen=True, slots=True)
class Speech:
    """A spoken answer, ready to send as a voice note."""

    ogg: bytes                       # OGG/Opus
    seconds: float
    voice: str


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a long request has got: chunks answered out of the total, and partial text if streaming."""

    done: int
    total: int
    partial: str | None = None


ProgressCallback = Callable[[Progress], Awaitable[None]]
