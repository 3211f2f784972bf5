"""mm:ss labels, and moving a chunk's own times to where the chunk sits in the whole recording."""
from __future__ import annotations

import re

_MMSS = re.compile(r"(?<![\d:])(?:(\d{1,2}):)?(\d{1,2}):([0-5]\d)(?![\d:])")


def mmss(seconds: float) -> str:
    """00:42, 12:05, or 1:02:03 past an hour."""
    s = int(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


def shift(text: str, offset: float) -> str:
    """Add `offset` seconds to every mm:ss (or h:mm:ss) time the model wrote for one chunk."""
    if offset < 1:
        return text

    def moved(match: re.Match[str]) -> str:
        h, m, s = match.groups()
        return mmss(int(h or 0) * 3600 + int(m) * 60 + int(s) + offset)

    return _MMSS.sub(moved, text)
