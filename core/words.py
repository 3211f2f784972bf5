"""Lengths of time and counts as people say them, in every message earshot writes."""
from __future__ import annotations

import math

DAY = 86400.0


def count(n: float, word: str) -> str:
    """'1 voice note', '3 minutes', '1.5 days'."""
    return f"{n:g} {word}" + ("" if n == 1 else "s")


def duration(seconds: float) -> str:
    """A length: "30 minutes", "1 hour", "90 seconds", "2.5 minutes"."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return count(seconds / 3600, "hour")
    if seconds >= 60 and seconds % 60 == 0:
        return count(seconds / 60, "minute")
    if seconds >= 120:
        return count(round(seconds / 60, 1), "minute")
    return count(round(seconds, 1), "second")


def period(seconds: float) -> str:
    """A span looked back over, in its largest whole unit: "1 week", "2 days", "90 minutes"."""
    for unit, size in (("week", 7 * DAY), ("day", DAY), ("hour", 3600.0), ("minute", 60.0)):
        if seconds >= size and seconds % size == 0:
            return count(int(seconds // size), unit)
    return f"{math.ceil(seconds / 60)} minutes"


def wait(seconds: float) -> str:
    """How long until something, short: '3 h 20 min', '12 min', '40 s'."""
    seconds = max(1, int(seconds + 0.999))
    if seconds < 60:
        return f"{seconds} s"
    minutes = (seconds + 59) // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def rounded(seconds: float) -> str:
    """A length rounded to the unit that reads best: '24 hours', '60 minutes', '45 seconds'."""
    if seconds >= 7200:
        return f"{round(seconds / 3600):g} hours"
    if seconds >= 120:
        return f"{round(seconds / 60):g} minutes"
    return f"{max(1, round(seconds))} seconds"
