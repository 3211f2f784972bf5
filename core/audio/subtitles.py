"""A transcript as files: plain text, SubRip (.srt), WebVTT (.vtt) and JSON cues.

Cue times are offsets in the original recording, never invented: each part of the answer covers a chunk
the audio was cut into (Part.start/end), and where the model wrote mm:ss marks inside a part ("[00:12]"),
those marks (already moved to the whole recording's time) split it further. No cue is longer than
MAX_CUE seconds: a longer span with no marks inside is cut at MAX_CUE boundaries, its words shared out
in order by their length — the only approximation, and only for models that hear more than 30 s at once.
"""
from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from core.audio.timestamps import mmss
from core.values import TIMED, Part, Reply, Task

MAX_CUE = 30.0
FORMATS = ("text", "srt", "vtt", "json")
# a mark the model wrote at the start of a line or in brackets: "[01:05]", "01:05 -", "(1:02:03)"
_MARK = re.compile(r"[\[(]?(?<![\d:])(?:(\d{1,2}):)?(\d{1,2}):([0-5]\d)(?![\d:])[\])]?\s*[-–:]?\s*")


@dataclass(frozen=True, slots=True)
class Cue:
    start: float
    end: float
    text: str


def cues(reply: Reply) -> list[Cue]:
    """The reply's transcript as timed cues of at most MAX_CUE seconds, in order."""
    parts = reply.parts or ((Part(0.0, reply.duration, reply.text),) if reply.duration else ())
    # core.flow.service moves the marks of timed tasks to the whole recording; a transcript's stay per part
    shifted = reply.task in TIMED
    out: list[Cue] = []
    for part in parts:
        for start, end, text in _marked(part, shifted):
            out.extend(_capped(start, end, text))
    return [c for c in out if c.text]


def _marked(part: Part, shifted: bool) -> list[tuple[float, float, str]]:
    """Split a part at mm:ss marks that fall inside it; the part's own span otherwise."""
    pieces: list[tuple[float, str]] = []
    last, at = 0, part.start
    for match in _MARK.finditer(part.text):
        h, m, s = match.groups()
        t = int(h or 0) * 3600 + int(m) * 60 + int(s) + (0 if shifted else part.start)
        if not (part.start - 1 <= t <= part.end):
            continue                                  # a time spoken in the audio, not a mark
        pieces.append((at, part.text[last:match.start()]))
        last, at = match.end(), max(float(t), part.start)
    pieces.append((at, part.text[last:]))
    pieces = [(t, " ".join(text.split())) for t, text in pieces]
    pieces = [(t, text) for t, text in pieces if text]
    return [(t, pieces[i + 1][0] if i + 1 < len(pieces) else part.end, text)
            for i, (t, text) in enumerate(pieces)]


def _capped(start: float, end: float, text: str) -> list[Cue]:
    span = end - start
    if span <= MAX_CUE:
        return [Cue(start, end, text)]
    n = math.ceil(span / MAX_CUE)
    words = text.split()
    total = sum(len(w) + 1 for w in words) or 1
    out, taken, i = [], 0, 0
    for k in range(n):
        share = [] if k < n - 1 else words[i:]
        while k < n - 1 and i < len(words) and taken + len(words[i]) + 1 <= total * (k + 1) / n:
            taken += len(words[i]) + 1
            share.append(words[i])
            i += 1
        out.append(Cue(start + k * span / n, start + (k + 1) * span / n, " ".join(share)))
    return out


def _clock(seconds: float, sep: str) -> str:
    ms = round(max(seconds, 0.0) * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


# cue text is what the model wrote: in either format it must stay text, on one line (a blank line ends a cue)
_ARROW = re.compile(r"-{2,}>")                   # what a SubRip reader takes for a timing line
_SRT_TAG = re.compile(r"<(?=/?[A-Za-z])|\{(?=\\)")    # the start of <i>, </font>, {\an8}: formatting to players


def vtt_text(text: str) -> str:
    """WebVTT cue text: &, < and > as character references (WebVTT's own escapes), so "<v Name>" or "<c>" stay
    words instead of a forged speaker or class, and "-->" (which ends a cue's text) can't appear."""
    return " ".join(html.escape(text, quote=False).split())


def srt_text(text: str) -> str:
    """SubRip cue text. The format has no escapes, so: "-->" becomes "->", and the opening bracket of anything
    players read as formatting (<i>, <font …>, {\\an8}) becomes a look-alike, so it shows as written."""
    text = _ARROW.sub("->", " ".join(text.split()))
    return _SRT_TAG.sub(lambda m: "‹" if m.group() == "<" else "❴", text)


def srt(reply: Reply) -> str:
    return "".join(f"{i}\n{_clock(c.start, ',')} --> {_clock(c.end, ',')}\n{srt_text(c.text)}\n\n"
                   for i, c in enumerate(cues(reply), 1))


def vtt(reply: Reply) -> str:
    body = "".join(f"{_clock(c.start, '.')} --> {_clock(c.end, '.')}\n{vtt_text(c.text)}\n\n" for c in cues(reply))
    return "WEBVTT\n\n" + body


def text(reply: Reply) -> str:
    """Plain text: the transcript as answered, with its mm:ss part marks."""
    return reply.text.strip() + "\n"


def cue_dicts(reply: Reply) -> list[dict]:
    return [{"start": round(c.start, 3), "end": round(c.end, 3), "offset": mmss(c.start), "text": c.text}
            for c in cues(reply)]


def as_json(reply: Reply) -> str:
    return json.dumps({"text": reply.text, "duration": reply.duration, "cues": cue_dicts(reply)},
                      ensure_ascii=False, indent=2) + "\n"


def render(reply: Reply, fmt: str) -> str:
    return {"text": text, "srt": srt, "vtt": vtt, "json": as_json}[fmt](reply)


# --- when a chat answer also comes as files ---------------------------------------------------------

LONG_AUDIO = 300.0        # seconds: past this a transcript also comes as files


def wants_files(reply: Reply, message_limit: int) -> bool:
    """A transcript longer than one chat message, or of audio over 5 minutes."""
    if reply.task is not Task.TRANSCRIBE or not reply.text.strip():
        return False
    return len(reply.text) > message_limit or (reply.duration or 0) > LONG_AUDIO


def file_stem(original: str | None) -> str:
    """'meeting.m4a' -> 'meeting'; no name (a voice note) -> 'transcript'."""
    stem = PurePosixPath(original or "").stem.strip()
    stem = re.sub(r"[\x00-\x1f/\\:*?\"<>|]+", "_", stem)[:80]
    return stem or "transcript"


def transcript_files(reply: Reply, original: str | None) -> list[tuple[str, bytes]]:
    """[(name, bytes)] for transcript.txt and transcript.srt, named after the original file if it had a name."""
    stem = file_stem(original)
    return [(f"{stem}.txt", text(reply).encode("utf-8")), (f"{stem}.srt", srt(reply).encode("utf-8"))]
