"""Turn whatever audio a user sends into MP3 chunks the model can hear whole.

Synchronous on purpose: the service runs `prepare` in a worker thread. The pipeline:

    decode   one ffmpeg call, straight to 16 kHz mono s16le PCM, wrapped in a pydub AudioSegment
    levels   loudness of each 20 ms frame (judges silence and finds pauses)
    split    pieces of at most 29.5 s, cut at the quietest moment before each limit
    encode   the non-silent pieces to 32 kbit/s mono MP3, all in one more ffmpeg call

Everything a user can get wrong raises core.errors.AudioError with a one-line message.
"""
from __future__ import annotations

import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from . import ffmpeg, messages
from .errors import AudioError
from .models import Audio

with warnings.catch_warnings():
    # audioop is deprecated on 3.11/3.12 (audioop-lts replaces it on 3.13+); pydub warns at import when
    # no ffmpeg is on PATH, though ffmpeg.executable() hands it one before any use.
    warnings.simplefilter("ignore")
    import audioop
    from pydub import AudioSegment

SAMPLE_RATE = 16_000
SAMPLE_WIDTH = 2                   # s16le
FRAME_MS = 20                      # loudness is measured on frames this long
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000

# The model hears only the first 30 s of each item; MP3 encoder delay and padding add some tens of ms.
MAX_CHUNK_SECONDS = 29.5
SEARCH_SECONDS = 5.0               # look this far back from each limit for a pause
MIN_TAIL_SECONDS = 2.0             # no final piece shorter than this (when the audio allows it)
SMOOTH_FRAMES = 5                  # pauses are judged over 100 ms, not single 20 ms dips inside words
SILENCE_DBFS = -50.0               # a frame quieter than this (after removing DC offset) is silence
DECODE_SLACK_SECONDS = 1.0         # decode this much past the limit, to tell "too long" from "just fits"
LENGTH_TOLERANCE_SECONDS = 0.5     # container/codec padding allowed past the limit

MP3_BITRATE = "32k"
MP3_QUALITY = "7"                  # LAME -q 7: fast; speech at 32 kbit/s loses nothing the model needs
MAX_ITEM_BASE64 = 10 * 1024 * 1024 # the API's limit per data: URL

# Demuxers ffmpeg may use: real audio/video containers only. Everything that can point at other
# files or URLs (hls, dash, concat, playlists, sdp, rtsp…), images, subtitles and text formats are left
# out, so a playlist renamed .ogg is refused instead of followed. An entry matches a demuxer whose
# name list contains it ("mov" matches "mov,mp4,m4a,3gp,3g2,mj2", "matroska" matches "matroska,webm").
DEMUXERS = (
    "aac", "ac3", "aiff", "amr", "amrnb", "amrwb", "ape", "asf", "au", "avi", "caf", "dts", "eac3",
    "flac", "flv", "loas", "matroska", "mov", "mp3", "mpc", "mpc8", "mpeg", "mpegts", "ogg", "oma",
    "qcp", "rm", "tak", "tta", "voc", "w64", "wav", "wv", "xwma",
)

Span = tuple[float, float]         # start, end in seconds of the decoded audio


class Chunk(NamedTuple):
    """One piece for the model: where it lies in the original audio, and its MP3 bytes."""

    start: float
    end: float
    data: bytes


@dataclass(frozen=True, slots=True)
class Prepared:
    duration: float                # seconds of the whole decoded audio
    chunks: list[Chunk]            # in order; silent stretches are left out


def prepare(audio: Audio, *, max_bytes: int, max_seconds: float, timeout: float) -> Prepared:
    """Decode, check, split and encode one user's audio. Raises AudioError for anything unusable."""
    check_size(audio.data, max_bytes)
    segment = decode(audio.data, max_seconds=max_seconds, timeout=timeout)
    frame_levels = levels(segment)
    if is_silent(frame_levels):
        raise AudioError(messages.SILENT)
    spans = [span for span in split(segment, frame_levels)
             if not is_silent(frame_levels[_frame(span[0]):_frame_end(span[1])])]
    datas = encode(segment, spans, timeout=timeout)
    return Prepared(duration=_seconds(segment),
                    chunks=[Chunk(start, end, data) for (start, end), data in zip(spans, datas)])


# --- checks --------------------------------------------------------------------------------------
def check_size(data: bytes, max_bytes: int) -> None:
    """Refuse empty or oversized input before any decoding work."""
    if not data:
        raise AudioError(messages.EMPTY_FILE)
    if len(data) > max_bytes:
        raise AudioError(messages.TOO_BIG.format(size_mb=len(data) / 2**20, limit_mb=max_bytes / 2**20))


def describe_seconds(seconds: float) -> str:
    """A length as people say it: "30 minutes", "1 hour", "90 seconds"."""
    def plural(n: float, unit: str) -> str:
        return f"{n:g} {unit}" + ("" if n == 1 else "s")
    if seconds >= 3600 and seconds % 3600 == 0:
        return plural(seconds / 3600, "hour")
    if seconds >= 60 and seconds % 60 == 0:
        return plural(seconds / 60, "minute")
    if seconds >= 120:
        return plural(round(seconds / 60, 1), "minute")
    return plural(round(seconds, 1), "second")


# --- decode ---------------------------------------------------------------------------------------
def decode(data: bytes, *, max_seconds: float, timeout: float) -> AudioSegment:
    """Decode any audio or video file to 16 kHz mono s16le, reading at most max_seconds (+ slack).

    The bytes go to a temp file, not a pipe, because MP4/M4A with the index at the end needs seeking.
    The file has no extension so ffmpeg judges it by content, never by a name that lies.
    """
    fd, path = tempfile.mkstemp(prefix="earshot-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        pcm = ffmpeg.run([
            "-protocol_whitelist", "file", "-format_whitelist", ",".join(DEMUXERS),
            "-t", f"{max_seconds + DECODE_SLACK_SECONDS:.3f}", "-i", path,
            "-map", "0:a:0", "-vn", "-sn", "-dn",
            "-ac", "1", "-ar", str(SAMPLE_RATE), "-c:a", "pcm_s16le", "-f", "s16le", "pipe:1",
        ], timeout=timeout)
    except ffmpeg.FfmpegError as e:
        raise _decode_error(e) from None
    finally:
        os.unlink(path)
    pcm = pcm[:len(pcm) - len(pcm) % SAMPLE_WIDTH]
    if not pcm:
        raise AudioError(messages.NO_SAMPLES, "ffmpeg decoded no samples")
    segment = AudioSegment(data=pcm, sample_width=SAMPLE_WIDTH, frame_rate=SAMPLE_RATE, channels=1)
    if _seconds(segment) > max_seconds + LENGTH_TOLERANCE_SECONDS:
        raise AudioError(messages.TOO_LONG.format(limit=describe_seconds(max_seconds)))
    return segment


def _decode_error(e: ffmpeg.FfmpegError) -> AudioError:
    """Map ffmpeg's complaint to what the user needs to hear; the log keeps ffmpeg's own words."""
    if e.returncode < 0:           # killed: the CPU cap (SIGXCPU) or the memory cap (abort/segfault)
        return AudioError(messages.DECODE_TIMEOUT, str(e))
    if "matches no streams" in e.stderr or "does not contain any stream" in e.stderr:
        return AudioError(messages.NO_AUDIO_TRACK, str(e))
    return AudioError(messages.NOT_AUDIO, str(e))


def _seconds(segment: AudioSegment) -> float:
    return segment.frame_count() / SAMPLE_RATE


def _frame(seconds: float) -> int:
    return int(round(seconds * 1000)) // FRAME_MS


def _frame_end(seconds: float) -> int:
    return -(-int(round(seconds * 1000)) // FRAME_MS)


# --- loudness ---------------------------------------------------------------------------------------
def levels(segment: AudioSegment) -> list[float]:
    """Loudness of each 20 ms frame in dBFS (the last frame may be shorter).

    Measured as the standard deviation, i.e. RMS with the frame's DC offset removed, so a recording
    with a DC offset isn't mistaken for sound.
    """
    pcm = memoryview(segment.raw_data)
    step = FRAME_SAMPLES * SAMPLE_WIDTH
    out = []
    for i in range(0, len(pcm), step):
        frame = pcm[i:i + step]
        rms = audioop.rms(frame, SAMPLE_WIDTH)
        mean = audioop.avg(frame, SAMPLE_WIDTH)
        std = math.sqrt(max(rms * rms - mean * mean, 0))
        out.append(20 * math.log10(std / 32768) if std > 0 else -120.0)
    return out


def is_silent(frame_levels: Sequence[float]) -> bool:
    return not frame_levels or max(frame_levels) < SILENCE_DBFS


# --- split ------------------------------------------------------------------------------------------
def split(segment: AudioSegment, frame_levels: Sequence[float] | None = None, *,
          max_seconds: float = MAX_CHUNK_SECONDS) -> list[Span]:
    """Spans of at most max_seconds covering the whole audio, cut at pauses.

    Each cut falls at the quietest 100 ms within the last SEARCH_SECONDS before the limit (the latest
    such moment on ties, for fewer pieces), so a word or tone that straddles the limit stays whole.
    The final piece is kept at least MIN_TAIL_SECONDS long.
    """
    duration = _seconds(segment)
    if duration <= max_seconds:
        return [(0.0, duration)]
    if frame_levels is None:
        frame_levels = levels(segment)
    # whole dB, so equally quiet stretches tie (and the latest wins) despite float noise
    smooth = [round(v) for v in _moving_average(frame_levels, SMOOTH_FRAMES)]
    n = len(smooth)
    longest = int(max_seconds * 1000) // FRAME_MS
    search = int(SEARCH_SECONDS * 1000) // FRAME_MS
    min_tail = min(int(MIN_TAIL_SECONDS * 1000) // FRAME_MS, search)
    cuts = [0]
    while n - cuts[-1] > longest:
        pos = cuts[-1]
        lo = max(pos + longest - search, pos + 1)
        hi = min(pos + longest, n - min_tail)
        cuts.append(min(range(lo, hi + 1), key=lambda i: (smooth[i], -i)))
    bounds = [c * FRAME_MS / 1000 for c in cuts] + [duration]
    return list(zip(bounds, bounds[1:]))


def _moving_average(values: Sequence[float], width: int) -> list[float]:
    """Centred moving average (shorter at the edges)."""
    half = width // 2
    prefix = [0.0]
    for v in values:
        prefix.append(prefix[-1] + v)
    n = len(values)
    return [(prefix[min(n, i + half + 1)] - prefix[max(0, i - half)]) / (min(n, i + half + 1) - max(0, i - half))
            for i in range(n)]


# --- encode -----------------------------------------------------------------------------------------
def encode(segment: AudioSegment, spans: Sequence[Span], *, timeout: float) -> list[bytes]:
    """Encode each span of the PCM to mono 16 kHz MP3, all in one ffmpeg call.

    Outputs go to files in a private temp dir, not a pipe: the MP3 muxer seeks back to fill in the
    LAME header (encoder delay, length) that lets decoders play the chunk gaplessly and time it right.
    With several spans ffmpeg runs the encoders in parallel threads. Chunks of at most 30 s at
    32 kbit/s are ~120 kB, far under the 10 MB per item the API takes; that is checked anyway.
    """
    if not spans:
        return []
    mp3 = ["-c:a", "libmp3lame", "-b:a", MP3_BITRATE, "-compression_level", MP3_QUALITY,
           "-ac", "1", "-ar", str(SAMPLE_RATE), "-id3v2_version", "0", "-f", "mp3"]
    trims = ";".join(
        f"[in{i}]atrim=start_sample={_sample(a)}:end_sample={_sample(b)},asetpts=PTS-STARTPTS[out{i}]"
        for i, (a, b) in enumerate(spans))
    graph = f"[0:a]asplit={len(spans)}" + "".join(f"[in{i}]" for i in range(len(spans))) + ";" + trims
    args = ["-f", "s16le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", "pipe:0", "-filter_complex", graph]
    with tempfile.TemporaryDirectory(prefix="earshot-") as tmp:
        outs = [os.path.join(tmp, f"{i}.mp3") for i in range(len(spans))]
        for i, out in enumerate(outs):
            args += ["-map", f"[out{i}]", *mp3, out]
        ffmpeg.run(args, input=segment.raw_data, timeout=timeout)
        datas = []
        for out in outs:
            with open(out, "rb") as f:
                datas.append(f.read())
    for data in datas:
        if 4 * math.ceil(len(data) / 3) > MAX_ITEM_BASE64:     # cannot happen at 32 kbit/s; never send it
            raise AudioError(messages.AUDIO_ITEM_TOO_BIG.format(size_mb=len(data) * 4 / 3 / 2**20))
    return datas


def _sample(seconds: float) -> int:
    return round(seconds * SAMPLE_RATE)
