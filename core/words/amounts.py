"""Lengths of time and counts as people say them, in every message earshot writes, in the chat's language."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from core.words import messages
from core.words.i18n import Localized

DAY = 86400.0


def count(n: float, word: str) -> str:
    """'1 voice note', '3 minutes', '1.5 days' (English only: the messages' own plurals are for chats)."""
    return f"{n:g} {word}" + ("" if n == 1 else "s")


def duration(seconds: float, lang: str | None = None) -> str:
    """A length: "30 minutes", "1 hour", "90 seconds", "2.5 minutes"."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return messages.count(messages.HOURS, seconds / 3600, lang)
    if seconds >= 60 and seconds % 60 == 0:
        return messages.count(messages.MINUTES, seconds / 60, lang)
    if seconds >= 120:
        return messages.count(messages.MINUTES, round(seconds / 60, 1), lang)
    return messages.count(messages.SECONDS, round(seconds, 1), lang)


def period(seconds: float, lang: str | None = None) -> str:
    """A span looked back over, in its largest whole unit: "1 week", "2 days", "90 minutes"."""
    for forms, size in ((messages.WEEKS, 7 * DAY), (messages.DAYS, DAY), (messages.HOURS, 3600.0),
                        (messages.MINUTES, 60.0)):
        if seconds >= size and seconds % size == 0:
            return messages.count(forms, int(seconds // size), lang)
    return messages.count(messages.MINUTES, math.ceil(seconds / 60), lang)


def wait(seconds: float, lang: str | None = None) -> str:
    """How long until something, short: '3 h 20 min', '12 min', '40 s'."""
    seconds = max(1, int(seconds + 0.999))
    if seconds < 60:
        return messages.text(messages.WAIT_SECONDS, lang, n=seconds)
    minutes = (seconds + 59) // 60
    if minutes < 60:
        return messages.text(messages.WAIT_MINUTES, lang, n=minutes)
    hours, minutes = divmod(minutes, 60)
    if minutes:
        return messages.text(messages.WAIT_HOURS_MINUTES, lang, hours=hours, minutes=minutes)
    return messages.text(messages.WAIT_HOURS, lang, hours=hours)


def rounded(seconds: float, lang: str | None = None) -> str:
    """A length rounded to the unit that reads best: '24 hours', '60 minutes', '45 seconds'."""
    if seconds >= 7200:
        return messages.count(messages.HOURS, round(seconds / 3600), lang)
    if seconds >= 120:
        return messages.count(messages.MINUTES, round(seconds / 60), lang)
    return messages.count(messages.SECONDS, max(1, round(seconds)), lang)


def days(n: float, lang: str | None = None) -> str:
    """'7 days', for how long things are kept."""
    return messages.count(messages.DAYS, n, lang)


@dataclass(frozen=True, slots=True)
class Span(Localized):
    """A length kept unsaid inside an error or a stored message, said in each chat's language when shown:
    `Span(wait, 600)` is "10 min" in English, "10分" in Japanese."""

    say: Callable[[float, str | None], str]
    seconds: float

    def said(self, lang: str | None) -> str:
        return self.say(self.seconds, lang)
