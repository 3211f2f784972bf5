"""What a chat is shown while a long answer is worked on, and how often: the status line both adapters edit.

A status is edited at most about once a second per chat (Telegram's own limit for a chat; Slack's
chat.update is rate limited too); surplus updates are dropped, since only the latest matters. Quick answers
arrive whole: a streamed preview appears only once the wait is noticeable.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Hashable

from core.values import Progress
from core.words import messages
from core.words.text import split_text

EDIT_INTERVAL = 1.0
STREAM_AFTER = 1.5
STREAM_TAIL = " …"


Split = Callable[[str, int], list[str]]     # the platform's cut of a text into messages of at most a limit


def status_text(progress: Progress, limit: int, split: Split = split_text, lang: str | None = None) -> str:
    """'Listening… part 2 of 5', '… all 5 parts heard, writing the answer', or the answer so far; our own
    words in `lang` (the job's language)."""
    if progress.partial:
        pieces = split(progress.partial, limit - len(STREAM_TAIL))
        return (pieces[0] if pieces else "") + STREAM_TAIL
    if progress.done < progress.total:
        return messages.text(messages.LISTENING_PART, lang, part=progress.done + 1, total=progress.total)
    return messages.text(messages.LISTENING_WRITING, lang, total=progress.total)


class Throttle:
    """When each chat may next see an edit; shared by every job in the process."""

    def __init__(self, interval: float = EDIT_INTERVAL) -> None:
        self.interval = interval
        self._next: dict[Hashable, float] = {}

    def take(self, chat: Hashable) -> bool:
        now = time.monotonic()
        if now < self._next.get(chat, 0.0):
            return False
        self._next[chat] = now + self.interval
        return True

    def back_off(self, chat: Hashable, seconds: float) -> None:
        self._next[chat] = time.monotonic() + seconds


class StatusLine:
    """One job's status line: what to show next, if anything (the adapter sends or edits it)."""

    def __init__(self, throttle: Throttle, chat: Hashable, limit: int, split: Split = split_text,
                 lang: str | None = None) -> None:
        self.throttle, self.chat, self.limit, self.split, self.lang = throttle, chat, limit, split, lang
        self.shown = ""
        self._started = time.monotonic()

    def next(self, progress: Progress, *, showing: bool) -> str | None:
        """The text to show now; None when nothing new, too soon, or a quick answer's preview."""
        if progress.partial and not showing and time.monotonic() - self._started < STREAM_AFTER:
            return None
        text = status_text(progress, self.limit, self.split, self.lang)
        if text == self.shown or not self.throttle.take(self.chat):
            return None
        return text
