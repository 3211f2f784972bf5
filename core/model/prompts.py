"""Every word earshot says to the model, in one place.

Prompts are short on purpose: the free quota is small and every input token counts.
"""
from __future__ import annotations

from core.values import Task
from core.words.i18n import LANGUAGES, best_language

SYSTEM = "You are earshot, a helpful assistant that listens to audio people share in chats. Be concise."

# What to ask of one clip (or one ≤30 s chunk of a longer recording).
_CLIP = {
    Task.TRANSCRIBE: ("Transcribe the speech verbatim, in the language spoken. Output only the transcript. "
                      "If there is no speech, describe the sounds in [brackets]."),
    Task.SUMMARIZE: "Summarise what is said in a few short sentences or bullet points.",
    Task.SENTIMENT: ("Describe the speaker's mood and tone (for example calm, excited, tense), and the evidence "
                     "you hear for it: words, pitch, pace, volume, laughter."),
    Task.EVENTS: ("List the sounds, music and speech you hear, one per line, each starting with its time "
                  "as mm:ss."),
    Task.ASK: ("Answer this question about the audio. When you refer to a moment, give its time as mm:ss. "
               "Question: {text}"),
    Task.TRANSLATE: "Translate what is said into {text}. Output only the translation.",
    # voice chat on a model that can't take audio alone as the instruction
    Task.CHAT: "Reply to the speaker as in a conversation.",
}

# One part of a long recording, to be combined afterwards.
_PART = {
    Task.SUMMARIZE: "This is part of a longer recording. Summarise what is said in this part in a few short sentences.",
    Task.SENTIMENT: ("This is part of a longer recording. Describe the speaker's mood and tone in this part, "
                     "with evidence."),
    Task.ASK: ("This is part of a longer recording. Note anything in this part that helps answer the question, "
               "with times as mm:ss; say 'nothing relevant' if there is none. Question: {text}"),
    Task.CHAT: "This is part of a longer voice message. Write down what the speaker says or asks in this part.",
}

# Combining the parts of a long recording with one text-only call.
_COMBINE = {
    Task.SUMMARIZE: "Below are summaries of consecutive parts of one recording, each marked with its start time. "
                    "Write one summary of the whole recording.",
    Task.SENTIMENT: "Below are notes on the speaker's mood in consecutive parts of one recording, each marked with "
                    "its start time. Describe the mood and tone over the whole recording, with evidence and times.",
    Task.ASK: "Below are notes from consecutive parts of one recording, each marked with its start time. "
              "Answer the question from them, citing times as mm:ss. Question: {text}",
    Task.CHAT: "Below is what the speaker said in a long voice message, part by part with start times. "
               "Reply to the speaker as in a conversation.",
}

# models that ignore a system prompt while speaking get it as a first user turn, answered with this
ROLE_ACCEPTED = "Understood. I'll answer as earshot."

FOLLOW_UP_NOTE = "Earlier turns of this chat follow; a voice note appears as a short description."


def clip_instruction(task: Task, text: str | None, *, voice_chat: bool, lang: str | None = None) -> str | None:
    """The text item sent with one clip; None for voice chat, where the audio alone is the instruction.
    lang: the chat's language, which answers written for it follow (see `in_language`)."""
    if task is Task.CHAT and voice_chat:
        return None
    return in_language(_CLIP[task].format(text=text or ""), task, lang)


def part_instruction(task: Task, text: str | None, lang: str | None = None) -> str:
    """The text item sent with one chunk of a long recording."""
    template = _PART.get(task) or _CLIP[task]
    return in_language(template.format(text=text or ""), task, lang)


def combine_instruction(task: Task, text: str | None, parts: list[tuple[str, str]], lang: str | None = None) -> str:
    """One text-only request that joins per-part answers, each labelled with its mm:ss start."""
    body = "\n\n".join(f"[{mark}] {answer}" for mark, answer in parts)
    return in_language(_COMBINE[task].format(text=text or ""), task, lang) + "\n\n" + body


def needs_combining(task: Task) -> bool:
    """Transcripts, translations and event lists read fine stitched in order; the rest need one more call."""
    return task in _COMBINE


def describe_audio_turn(task: Task, seconds: float, text: str | None) -> str:
    """What history keeps in place of the audio itself."""
    what = {
        Task.CHAT: "sent a voice message",
        Task.ASK: f"asked about it: {text}",
        Task.TRANSLATE: f"asked for a translation into {text}",
        Task.TRANSCRIBE: "asked for a transcript",
        Task.SUMMARIZE: "asked for a summary",
        Task.SENTIMENT: "asked about the speaker's mood",
        Task.EVENTS: "asked what can be heard",
    }.get(task, "sent it")
    return f"[{seconds:.0f} s voice note] The user {what}."


# --- group digests (core.flow.digest): transcripts of a chat's voice notes, summarised ----------------
_DIGEST_ASK = ("the topics discussed, decisions made, questions left open, and action items with who said them. "
               "Write in the language most of the voice notes are in, and name people as given.")
DIGEST = ("Below are transcripts of a group chat's voice notes, oldest first, each with its time and sender. "
          "Write a short digest for the group: " + _DIGEST_ASK)
DIGEST_PART = ("Below are transcripts of some of a group chat's voice notes, oldest first, each with its time and "
               "sender. Write brief notes on this stretch, keeping times and names: " + _DIGEST_ASK)
DIGEST_MERGE = ("Below are notes on consecutive stretches of a group chat's voice notes, oldest first. Merge them "
                "into one set of brief notes, keeping times and names: " + _DIGEST_ASK)
DIGEST_COMBINE = ("Below are notes on consecutive stretches of a group chat's voice notes, oldest first. Combine "
                  "them into one short digest for the group: " + _DIGEST_ASK)


def digest_line(when: str, who: str, seconds: float, text: str) -> str:
    """One voice note as the digest prompts show it."""
    return f"[{when}] {who} ({seconds:.0f} s): {text}"


def digest_instruction(template: str, body: list[str]) -> str:
    return template + "\n\n" + "\n\n".join(body)


# --- the chat's language (/lang) ------------------------------------------------------------------------
# Answers written for the chat follow its language; transcripts keep the language spoken, translations name
# their own target, and a voice chat answers in the language it was spoken to in.
_IN_CHAT_LANGUAGE = {Task.SUMMARIZE, Task.SENTIMENT, Task.EVENTS, Task.ASK, Task.FOLLOW_UP}
_DIGEST_SPOKEN = "Write in the language most of the voice notes are in"


def language_key(task: Task, text: str | None, language: str | None) -> str:
    """A request's words with the language its answer is written in, for the answer cache's key: the same
    summary in German and in Japanese are two answers."""
    return in_language(text or "", task, language)


def in_language(instruction: str, task: Task | None, language: str | None) -> str:
    """The instruction, told to write in the chat's language when its answer follows it (task None: a digest).
    The prompt names the language in English ("Write in German."): models follow that better than a code."""
    if language is None or (task is not None and task not in _IN_CHAT_LANGUAGE):
        return instruction
    write = f"Write in {LANGUAGES[best_language(language)].english}"
    if _DIGEST_SPOKEN in instruction:
        return instruction.replace(_DIGEST_SPOKEN, write, 1)
    return f"{instruction}\n{write}."  # on its own line: a question or the parts' notes may end the text
