"""The digest command's words: what `digest …` (or `forget`) asks for, parsed once for every adapter.

    parse_digest("")                 -> a digest since the last one
    parse_digest("2h")               -> a digest of the last two hours (up to a year back)
    parse_digest("on") / ("off")     -> listening on or off
    parse_digest("daily 09:00 Europe/Berlin") / ("daily off")

Carrying the command out is core.flow.digest's (DigestService.run); this module knows no database.
"""
from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.words import messages
from core.words.amounts import DAY

MAX_PERIOD = 366 * DAY

_PERIOD = re.compile(r"^(\d{1,4})\s*(m|min|mins|minutes?|h|hours?|d|days?|w|weeks?)$")
_UNIT = {"m": 60, "h": 3600, "d": DAY, "w": 7 * DAY}
_DAILY = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")

Action = Literal["summary", "on", "off", "daily", "daily_off", "forget", "invalid"]
AdminCheck = Callable[[], Awaitable[bool | None]]     # the platform's word: True, False, or None (couldn't ask)


@dataclass(frozen=True, slots=True)
class DigestCommand:
    """What `digest …` (or `forget`) asks for, parsed once for both adapters."""

    action: Action
    period: float | None = None        # seconds back from now; None: since the last digest
    daily: str = ""                    # "HH:MM"
    tz: str = "UTC"
    problem: str | None = None         # for "invalid": the message template to answer with

    @property
    def needs_admin(self) -> bool:
        return self.action in ("on", "off", "daily", "daily_off", "forget")


FORGET = DigestCommand("forget")


def parse_digest(args: str | None) -> DigestCommand:
    """`""`, `on`, `off`, `daily HH:MM [zone]`, `daily off`, or a period like `2h`, `24h`, `7d`."""
    words = (args or "").strip().split()
    lowered = [w.lower() for w in words]
    if not words:
        return DigestCommand("summary")
    if lowered == ["on"] or lowered == ["off"]:
        return DigestCommand(lowered[0])  # type: ignore[arg-type]
    if lowered[0] == "daily":
        if lowered[1:] == ["off"]:
            return DigestCommand("daily_off")
        if len(words) in (2, 3) and (m := _DAILY.match(words[1])):
            zone = words[2] if len(words) == 3 else "UTC"
            if zone_of(zone) is None:
                return DigestCommand("invalid", tz=zone, problem=messages.DIGEST_BAD_ZONE)
            return DigestCommand("daily", daily=f"{int(m[1]):02d}:{m[2]}", tz=zone)
        return DigestCommand("invalid", problem=messages.DIGEST_USAGE)
    if len(words) <= 2 and (m := _PERIOD.match("".join(lowered))):
        seconds = int(m[1]) * _UNIT[m[2][0]]
        if seconds > 0:
            return DigestCommand("summary", period=min(seconds, MAX_PERIOD))
    return DigestCommand("invalid", problem=messages.DIGEST_USAGE)


_ZONE_NAME = re.compile(r"^[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*$")


def zone_of(name: str) -> ZoneInfo | None:
    """The IANA zone of that name, or None: a directory of the zone database ("Europe"), a name too long
    for the file system, or anything not shaped like a zone name is no zone."""
    if not name or len(name) > 64 or not _ZONE_NAME.match(name):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None
