"""Turn whatever audio a user sends into MP3 chunks the model can hear whole.

Synchronous on purpose: the service runs `prepare` in a worker thread. The pipeline:

    decode   ONE ffmpeg pass over the user's file gives both 16 kHz mono s16le PCM (wrapped in a pydub
             AudioSegment) and the whole audio as a 32 kbit/s mono MP3 stream built to be cut anywhere
    levels   loudness of each 36 ms frame of the PCM (judges silence and finds pauses)
    split    spans of at most 29.5 s, cut at the quietest moment before each limit
    cut      each non-silent span's MP3 frames, sliced out of the stream without re-encoding

Why one pass: a second ffmpeg run to encode the chunks costs a process start and a full re-read of
the PCM; cutting a ready stream costs nothing, so prepare() runs about as fast as a plain
`ffmpeg -i note.ogg out.mp3`. The stream is made cuttable on purpose: constant bitrate, LAME's bit
reservoir off (no frame borrows bytes from the one before), no Xing/ID3 headers, and 47 samples of
lead-in so that the encoder+decoder delay (1105 samples) becomes exactly two frames. MP3 frame k+2 then
holds PCM frame k, every cut is exact to the sample, and a slice is itself a valid MP3 stream.
(A decoder starting mid-stream lacks the previous frame's overlap, so the first 36 ms of each chunk,
the very start of the audio included, come out faint; cuts fall in pauses, where that is inaudible.)

Everything a user can get wrong raises core.errors.AudioError with a one-line message.
"""
from __future__ import annotations

import contextlib
import math
import os
import struct
import tempfile
import threading
import warnings
from collections.abc import AsyncIterable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from core.audio import ffmpeg
from core.errors import AudioError
from core.values import Audio
from core.words import amounts, messages

with warnings.catch_warnings():
    # audioop is deprecated on 3.11/3.12 (audioop-lts replaces it on 3.13+); pydub warns at import when
    # no ffmpeg is on PATH, though ffmpeg.executable() hands it one before any use.
    warnings.simplefilter("ignore")
    import audioop

    from pydub import AudioSegment

SAMPLE_RATE = 16_000
SAMPLE_WIDTH = 2                   # s16le
FRAME_SAMPLES = 576                # one MPEG-2 Layer III frame at 16 kHz (36 ms); also the loudness frame
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE

# The model hears only the first 30 s of each item; keep a margin for the frames' rounding and padding.
MAX_CHUNK_SECONDS = 29.5
SEARCH_SECONDS = 5.0               # look this far back from each limit for a pause
MIN_TAIL_SECONDS = 2.0             # no final piece shorter than this (when the audio allows it)
PAUSE_FRAMES = 4                   # pauses are judged over 144 ms, not single dips inside words
SILENCE_DBFS = -50.0               # a frame quieter than this (after removing DC offset) is silence
FILTER_FRAME_SAMPLES = 16_384       # samples per frame past the decoder (~1 s): see Decoding
DECODE_SLACK_SECONDS = 1.0         # decode this much past the limit, to tell "too long" from "just fits"
LENGTH_TOLERANCE_SECONDS = 0.5     # container/codec padding allowed past the limit

MP3_BITRATE = "32k"
MP3_QUALITY = "7"                  # LAME -q 7: fast; speech at 32 kbit/s loses nothing the model needs
LAME_DELAY = 576 + 529            # samples before the input shows in decoded output: encoder + decoder delay
MP3_LEAD_FRAMES = 2                # pad the delay to exactly this many frames
MP3_PAD_SAMPLES = MP3_LEAD_FRAMES * FRAME_SAMPLES - LAME_DELAY
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


@dataclass(frozen=True, slots=True)
class Decoded:
    segment: AudioSegment          # 16 kHz mono s16le
    mp3: bytes                     # the same audio as a cuttable MP3 stream (see the module docstring)

    @property
    def duration(self) -> float:
        return self.segment.frame_count() / SAMPLE_RATE


def prepare(audio: Audio, *, max_bytes: int, max_seconds: float, timeout: float,
            chunk_seconds: float = MAX_CHUNK_SECONDS) -> Prepared:
    """Decode, check, split and cut one user's audio into MP3 chunks of at most `chunk_seconds` (the
    model's window, core.model.catalog). AudioError for anything unusable."""
    check_size(audio.data, max_bytes)
    decoded = decode(audio.data, max_seconds=max_seconds, timeout=timeout)
    frame_levels = levels(decoded.segment)
    if is_silent(frame_levels):
        raise AudioError(messages.SILENT)
    spans = [span for span in split(decoded.segment, frame_levels, max_seconds=chunk_seconds)
             if not is_silent(frame_levels[_frame(span[0]):_frame(span[1], up=True)])]
    datas = cut(decoded, spans)
    return Prepared(duration=decoded.duration,
                    chunks=[Chunk(start, end, data) for (start, end), data in zip(spans, datas, strict=True)])


# --- checks --------------------------------------------------------------------------------------
def check_size(data: bytes, max_bytes: int) -> None:
    """Refuse empty or oversized input before any decoding work."""
    if not data:
        raise AudioError(messages.EMPTY_FILE)
    check_length(len(data), max_bytes)


def check_length(size: int, max_bytes: int, detail: str | None = None) -> None:
    """Refuse a file of `size` bytes (as said, or as counted while it arrives) above EARSHOT_MAX_FILE_MB."""
    if size > max_bytes:
        raise AudioError(messages.TOO_BIG, detail, fmt=dict(size_mb=size / 2**20, limit_mb=max_bytes / 2**20))


async def read_capped(chunks: AsyncIterable[bytes], max_bytes: int, *,
                      first: Callable[[bytes], None] | None = None) -> bytes:
    """A download's body, counted as it arrives (whatever its Content-Length said) and refused past `max_bytes`;
    `first` may refuse it on its first chunk (a sign-in page served instead of a file). Empty: AudioError."""
    parts: list[bytes] = []
    got = 0
    async for chunk in chunks:
        if not parts and first is not None:
            first(chunk)
        got += len(chunk)
        check_length(got, max_bytes)
        parts.append(chunk)
    if not got:
        raise AudioError(messages.EMPTY_FILE)
    return b"".join(parts)


describe_seconds = amounts.duration     # "30 minutes", "1 hour", "90 seconds" (core.words.amounts)


# --- decode ---------------------------------------------------------------------------------------
def decode(data: bytes, *, max_seconds: float, timeout: float) -> Decoded:
    """Decode any audio or video file once, reading at most max_seconds (+ slack): PCM and MP3 together.

    Takes the decode `decoding_ahead` started for the same bytes and limits, if there is one.
    """
    return (_take_ahead(data, max_seconds, timeout) or Decoding(data, max_seconds=max_seconds,
                                                                timeout=timeout)).result()


class Decoding:
    """One decode under way: ffmpeg runs from construction on, `result()` waits for it (once).

    The bytes go to a temp file, not a pipe, because MP4/M4A with the index at the end needs seeking.
    The file has no extension so ffmpeg judges it by content, never by a name that lies. Only local
    files and the demuxers in DEMUXERS are allowed, so nothing in the file can make ffmpeg open more.
    """

    def __init__(self, data: bytes, *, max_seconds: float, timeout: float) -> None:
        self.data, self.max_seconds, self.timeout = data, max_seconds, timeout
        self.binary = ffmpeg.executable()       # a decode started ahead is taken only by the same ffmpeg
        # -t trusts the file's timestamps, which can lie (an MP4 whose sample table gives each frame a
        # sliver of its real length slips its whole length past -t), so atrim also stops the decode after a
        # count of samples: the PCM held in memory never exceeds the limit's worth.
        most = math.ceil((max_seconds + DECODE_SLACK_SECONDS) * SAMPLE_RATE)
        # asetnsamples: the filters hand on ~1 s frames instead of the codec's 20 ms ones. ffmpeg from 6.1 on
        # runs the decoder, filters, encoders and muxers in threads of their own and passes every frame
        # between them through locked queues: with Opus's 1,500 frames per 30 s that was ~18,000 futex
        # calls and a third of the command's CPU. Same samples, same MP3 (the encoder cuts its own frames).
        graph = (f"[0:a:0]aformat=sample_fmts=s16:sample_rates={SAMPLE_RATE}:channel_layouts=mono,"
                 f"asetnsamples=n={FILTER_FRAME_SAMPLES}:p=0,atrim=end_sample={most},"
                 f"asplit=2[pcm][lead];[lead]adelay=delays={MP3_PAD_SAMPLES}S:all=1[mp3]")
        self._tmp = tempfile.TemporaryDirectory(prefix="earshot-")
        tmp = self._tmp.name
        src, self._out = os.path.join(tmp, "input"), os.path.join(tmp, "audio.mp3")
        # PCM goes through a file too: read back in one piece, it is held once, where a pipe's chunks
        # are joined at the end and a long file's PCM sits in memory twice at the peak
        self._raw = os.path.join(tmp, "audio.pcm")
        try:
            with open(src, "wb") as f:
                f.write(data)
            self._child = ffmpeg.start([
                "-protocol_whitelist", "file", "-format_whitelist", ",".join(DEMUXERS),
                "-t", f"{max_seconds + DECODE_SLACK_SECONDS:.3f}", "-i", src,
                "-filter_complex", graph,
                "-map", "[pcm]", "-c:a", "pcm_s16le", "-f", "s16le", self._raw,
                "-map", "[mp3]", "-c:a", "libmp3lame", "-b:a", MP3_BITRATE, "-compression_level", MP3_QUALITY,
                "-reservoir", "0", "-write_xing", "0", "-id3v2_version", "0", "-f", "mp3", self._out,
            ], timeout=timeout)
        except BaseException:
            self._tmp.cleanup()
            raise

    def result(self) -> Decoded:
        """The decoded audio, once ffmpeg is done; AudioError for anything unusable."""
        try:
            try:
                self._child.wait()
            except ffmpeg.FfmpegError as e:
                raise _decode_error(e) from None
            with open(self._raw, "rb") as f:
                pcm = f.read()
            if len(pcm) % SAMPLE_WIDTH:
                pcm = pcm[:len(pcm) - len(pcm) % SAMPLE_WIDTH]
            if not pcm:
                raise AudioError(messages.NO_SAMPLES, "ffmpeg decoded no samples")
            with open(self._out, "rb") as f:
                mp3 = f.read()
        finally:
            self._tmp.cleanup()
            self.data = b""            # the caller holds the bytes; a decode started ahead held its own copy
        segment = AudioSegment(data=pcm, sample_width=SAMPLE_WIDTH, frame_rate=SAMPLE_RATE, channels=1)
        decoded = Decoded(segment, mp3)
        if decoded.duration > self.max_seconds + LENGTH_TOLERANCE_SECONDS:
            raise AudioError(messages.TOO_LONG, fmt=dict(limit=amounts.Span(describe_seconds, self.max_seconds)))
        return decoded

    def cancel(self) -> None:
        """Not wanted after all: stop ffmpeg and remove its files."""
        try:
            self._child.kill()
        finally:
            self._tmp.cleanup()


_ahead: list[Decoding] = []
_ahead_lock = threading.Lock()


@contextlib.contextmanager
def decoding_ahead(data: bytes, *, max_seconds: float, timeout: float) -> Iterator[None]:
    """Start decoding `data` now, for the first `decode` of the same bytes and limits in the block to take:
    a one-shot command (the CLI) lets ffmpeg work while it loads the rest of earshot. Never taken (an
    answer from the cache, an error first), it is stopped and cleaned up when the block ends. When it can't
    start, `decode` starts its own and reports what is wrong where it always does."""
    try:
        pending = Decoding(data, max_seconds=max_seconds, timeout=timeout)
    except Exception:
        yield
        return
    with _ahead_lock:
        _ahead.append(pending)
    try:
        yield
    finally:
        with _ahead_lock:
            untaken = pending in _ahead
            if untaken:
                _ahead.remove(pending)
        if untaken:
            pending.cancel()


def _take_ahead(data: bytes, max_seconds: float, timeout: float) -> Decoding | None:
    with _ahead_lock:
        for pending in _ahead:
            if (pending.max_seconds, pending.timeout, pending.binary) == (max_seconds, timeout, ffmpeg.executable()) \
                    and pending.data == data:
                _ahead.remove(pending)
                return pending
    return None


def _decode_error(e: ffmpeg.FfmpegError) -> AudioError:
    """Map ffmpeg's complaint to what the user needs to hear; the log keeps ffmpeg's own words."""
    if e.returncode < 0:           # killed: the CPU cap (SIGXCPU) or the memory cap (abort/segfault)
        return AudioError(messages.DECODE_TIMEOUT, str(e))
    if "matches no streams" in e.stderr or "does not contain any stream" in e.stderr:
        return AudioError(messages.NO_AUDIO_TRACK, str(e))
    if "End of file" in e.stderr:  # the container starts right but ends before any audio: cut short
        return AudioError(messages.NO_SAMPLES, str(e))
    return AudioError(messages.NOT_AUDIO, str(e))


def _frame(seconds: float, *, up: bool = False) -> int:
    """The frame at a time; with up=True the first frame wholly after it (for span ends)."""
    exact = seconds / FRAME_SECONDS
    return math.ceil(exact - 1e-6) if up else round(exact)


# --- loudness ---------------------------------------------------------------------------------------
def levels(segment: AudioSegment) -> list[float]:
    """Loudness of each 36 ms frame in dBFS (the last frame may be shorter).

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
    """Spans of at most max_seconds covering the whole audio, cut at pauses on frame boundaries.

    Each cut falls at the quietest 144 ms within the last SEARCH_SECONDS before the limit (the latest
    such moment on ties, for fewer pieces), so a word or tone that straddles the limit stays whole.
    The final piece is kept at least MIN_TAIL_SECONDS long.
    """
    duration = segment.frame_count() / SAMPLE_RATE
    if duration <= max_seconds:
        return [(0.0, duration)]
    if frame_levels is None:
        frame_levels = levels(segment)
    quiet = _pause_scores(frame_levels)
    n = len(frame_levels)
    longest = int(max_seconds / FRAME_SECONDS)
    search = int(SEARCH_SECONDS / FRAME_SECONDS)
    latest = int((duration - min(MIN_TAIL_SECONDS, SEARCH_SECONDS)) / FRAME_SECONDS)   # keeps the tail whole
    cuts = [0]
    while n - cuts[-1] > longest:
        pos = cuts[-1]
        lo = max(pos + longest - search, pos + 1)
        hi = max(lo, min(pos + longest, latest))
        cuts.append(min(range(lo, hi + 1), key=lambda i: (quiet[i], -i)))
    bounds = [round(c * FRAME_SECONDS, 3) for c in cuts] + [duration]
    return list(zip(bounds, bounds[1:], strict=False))


def _pause_scores(frame_levels: Sequence[float]) -> list[int]:
    """For each frame boundary i (between frames i-1 and i): mean loudness of the PAUSE_FRAMES around it.

    Rounded to whole dB, so equally quiet stretches tie (and the latest wins) despite float noise.
    """
    half = PAUSE_FRAMES // 2
    prefix = [0.0]
    for v in frame_levels:
        prefix.append(prefix[-1] + v)
    n = len(frame_levels)
    scores = []
    for i in range(n):
        lo, hi = max(0, i - half), min(n, i + half)
        scores.append(round((prefix[hi] - prefix[lo]) / (hi - lo)))
    return scores


# --- cut --------------------------------------------------------------------------------------------
def cut(decoded: Decoded, spans: Sequence[Span]) -> list[bytes]:
    """Each span's MP3: the stream's frames for that span, copied out (no re-encoding).

    PCM frame k is MP3 frame k + MP3_LEAD_FRAMES. The last span takes the stream to its end, which
    includes the encoder's final padding frame.
    """
    offsets = _mp3_frame_offsets(decoded.mp3)
    frames = len(offsets) - 1
    last = _frame(decoded.duration, up=True)
    datas = []
    for start, end in spans:
        a = min(_frame(start) + MP3_LEAD_FRAMES, frames)
        b = frames if _frame(end, up=True) >= last else min(_frame(end, up=True) + MP3_LEAD_FRAMES, frames)
        data = decoded.mp3[offsets[a]:offsets[b]]
        if 4 * math.ceil(len(data) / 3) > MAX_ITEM_BASE64:   # cannot happen at 32 kbit/s; never send it
            raise AudioError(messages.AUDIO_ITEM_TOO_BIG, fmt=dict(size_mb=len(data) * 4 / 3 / 2**20,
                                                                limit_mb=MAX_ITEM_BASE64 / 2**20))
        datas.append(data)
    return datas


_MPEG2_L3_KBPS = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)


def _mp3_frame_offsets(stream: bytes) -> list[int]:
    """Byte offsets of every frame in our own MP3 stream (MPEG-2 Layer III, 16 kHz), plus the end."""
    offsets, pos = [], 0
    while pos + 4 <= len(stream):
        header = int.from_bytes(stream[pos:pos + 4], "big")
        # sync, MPEG-2, Layer III, 16 kHz: anything else means the encoder did not do what we asked
        if (header >> 21 != 0x7FF or (header >> 19) & 3 != 2 or (header >> 17) & 3 != 1
                or (header >> 10) & 3 != 2):
            raise RuntimeError(f"unexpected MP3 frame header {header:08x} at byte {pos}")
        kbps = _MPEG2_L3_KBPS[(header >> 12) & 15]
        offsets.append(pos)
        pos += 72 * kbps * 1000 // SAMPLE_RATE + ((header >> 9) & 1)
    offsets.append(len(stream))
    return offsets


# --- the user's bytes as they are (a recognizer takes them) ------------------------------------------
MIME_TYPES = {"ogg": "audio/ogg", "opus": "audio/ogg", "wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg",
              "aac": "audio/aac", "amr": "audio/amr", "webm": "audio/webm"}


@dataclass(frozen=True, slots=True)
class AsIs:
    """Audio that may go out byte for byte: its container, media type and length read from its headers."""

    format: str
    mime: str
    seconds: float


def sniff(data: bytes) -> str | None:
    """The container, by its magic bytes: "ogg" (Opus or Vorbis inside), "wav", "flac", "mp3", "aac",
    "amr", "webm"; None for anything else (MP4/M4A and the rest go through ffmpeg)."""
    if data[:4] == b"OggS":
        return "ogg"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:5] == b"#!AMR":
        return "amr"
    if data[:4] == b"\x1aE\xdf\xa3":
        return "webm"
    if data[:3] == b"ID3":
        return "mp3"
    if len(data) >= 2 and data[0] == 0xFF:
        if data[1] & 0xF6 == 0xF0:
            return "aac"
        if data[1] & 0xE0 == 0xE0 and data[1] & 0x06:
            return "mp3"
    return None


def header_seconds(data: bytes, fmt: str) -> float | None:
    """The audio's length from its container's own figures, without decoding (OGG: the last page's granule
    position; WAV: the data chunk over the byte rate; FLAC: STREAMINFO's sample count); None when the
    headers don't say or don't add up."""
    try:
        if fmt == "ogg":
            return _ogg_seconds(data)
        if fmt == "wav":
            return _wav_seconds(data)
        if fmt == "flac":
            return _flac_seconds(data)
    except (struct.error, IndexError, ValueError):
        return None
    return None


def _ogg_seconds(data: bytes) -> float | None:
    serial = data[14:18]
    head = data.find(b"OpusHead", 0, 512)
    if head >= 0:
        rate, skip = 48_000, struct.unpack_from("<H", data, head + 10)[0]
    else:
        ident = data.find(b"\x01vorbis", 0, 512)
        if ident < 0:
            return None
        rate, skip = struct.unpack_from("<I", data, ident + 12)[0], 0
    last = data.rfind(b"OggS")
    while last > 0 and data[last + 14:last + 18] != serial:      # another stream's page: not ours
        last = data.rfind(b"OggS", 0, last)
    if last < 0:
        return None
    if data.count(b"OpusHead") + data.count(b"\x01vorbis") > 1:   # chained or multiplexed streams
        return None
    granule = struct.unpack_from("<q", data, last + 6)[0]
    if granule <= 0 or not rate:
        return None
    return max(0.0, (granule - skip) / rate)


def _wav_seconds(data: bytes) -> float | None:
    pos, byte_rate, size = 12, 0, None
    while pos + 8 <= len(data):
        cid, length = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if cid == b"fmt ":
            tag, byte_rate = struct.unpack_from("<H", data, pos + 8)[0], struct.unpack_from("<I", data, pos + 16)[0]
            if tag not in (1, 3, 0xFFFE):
                return None
        elif cid == b"data":
            size = min(length, len(data) - pos - 8)      # a streamed WAV says 0xFFFFFFFF: count what is there
            break
        pos += 8 + length + (length & 1)
    return size / byte_rate if size is not None and byte_rate else None


def _flac_seconds(data: bytes) -> float | None:
    if data[4] & 0x7F != 0:                              # the first block must be STREAMINFO
        return None
    bits = int.from_bytes(data[18:26], "big")
    rate, total = bits >> 44, bits & ((1 << 36) - 1)
    return total / rate if rate and total else None


def as_is(data: bytes, formats: Sequence[str], *, max_encoded: int, max_seconds: float) -> AsIs | None:
    """How `data` may go to a recognizer byte for byte: a container it takes, whose base64 fits `max_encoded`
    and whose headers say it lasts at most `max_seconds`; None: decode and cut it as usual."""
    fmt = sniff(data)
    if fmt is None or fmt not in formats or len(data) * 4 // 3 + 64 > max_encoded:
        return None
    seconds = header_seconds(data, fmt)
    if seconds is None or not 0 < seconds <= max_seconds:
        return None
    return AsIs(fmt, MIME_TYPES[fmt], seconds)
