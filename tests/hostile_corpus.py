"""Broken, hostile and oddly shaped files, made at test time, each with the answer earshot owes its sender.

Nothing binary is committed: every file is built here from tones (tests.audio_fixtures), a few hand-written
headers and the ffmpeg in the imageio-ffmpeg wheel. `build(canary)` makes the corpus (RECIPES, by name); the files
that point elsewhere (an HLS or DASH playlist, an ffconcat script) point at a `Canary`: a loopback HTTP server
and a named pipe that both record whether anything ever reached for them.

    with Canary() as canary:
        for case in build(canary).values():
            audio.prepare(case.audio, ...)   # AudioError(case.expect), or success when expect is None
        assert canary.untouched

Expected outcomes are earshot's user messages (core.words.messages); None means the file is valid audio in an odd
shape and must be answered normally. The outcomes were checked with ffmpeg 5.1 (Debian 12) and the 9.0
static build that imageio-ffmpeg ships.
"""
from __future__ import annotations

import io
import os
import stat
import struct
import subprocess
import tempfile
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from core.values import Audio
from core.words import messages
from tests.audio_fixtures import FFMPEG, make_clip, make_long_silence, make_video_without_audio, tones

# The limit the corpus is judged against: a minute, not the default half hour, so that refusing a bomb
# (which takes decoding up to the limit) costs the tests a second, not several.
MAX_SECONDS = 60.0
TOO_LONG = messages.TOO_LONG.format(limit="1 minute")
MB = 1 << 20
TONE = [(440, 0.25, 1.0)]          # what the valid files carry: a 440 Hz tone, 0.25-1.25 s, in 1.5 s
TONE_SECONDS = 1.5


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    expect: str | None             # the user's one-line answer, or None: valid audio, answered normally
    filename: str | None = None
    mime_type: str | None = None
    seconds: float | None = None   # for valid audio: its length, give or take a frame or two
    also: str | None = None        # another answer as fair, where ffmpeg builds read the file differently

    @property
    def audio(self) -> Audio:
        return Audio(self.data, self.filename, self.mime_type)

    def __repr__(self) -> str:     # keeps pytest's output readable: never print megabytes
        return f"Case({self.name!r}, {len(self.data)} bytes)"


# --- the canary: proof that nothing was followed ---------------------------------------------------
class Canary:
    """A loopback HTTP server that records every request, and a named pipe that records being opened.

    A reader opening the FIFO unblocks the writer thread here, which is how an open is observed even
    when nothing is read; on close, the writer is released by our own (unrecorded) open.
    """

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.fifo_opened = threading.Event()
        self._dir = tempfile.TemporaryDirectory(prefix="earshot-canary-")
        self.dir = Path(self._dir.name)
        self.fifo = self.dir / "secret.ts"
        self._closing = False
        hits = self.hits

        class Record(BaseHTTPRequestHandler):
            def do_GET(self) -> None:         # noqa: N802 (http.server's naming)
                hits.append(self.path)
                self.send_error(404)

            do_HEAD = do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Record)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def untouched(self) -> bool:
        return not self.hits and not self.fifo_opened.is_set()

    def _watch(self) -> None:
        fd = os.open(self.fifo, os.O_WRONLY)   # blocks until someone opens the pipe to read it
        if not self._closing:
            self.fifo_opened.set()
        os.close(fd)                           # the reader sees end of file at once
        if not self._closing:
            self._watcher = threading.Thread(target=self._watch, daemon=True)   # keep watching
            self._watcher.start()

    def __enter__(self) -> Canary:
        os.mkfifo(self.fifo, stat.S_IRUSR | stat.S_IWUSR)
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()
        self._serving = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._serving.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing = True
        self._server.shutdown()
        self._server.server_close()
        fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)   # releases the blocked writer
        self._watcher.join(5)
        os.close(fd)
        self._dir.cleanup()


def hls_playlist(*targets: str) -> bytes:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2", "#EXT-X-MEDIA-SEQUENCE:0"]
    for t in targets:
        lines += ["#EXTINF:1.0,", t]
    return ("\n".join(lines + ["#EXT-X-ENDLIST", ""])).encode()


def ffconcat(*targets: str) -> bytes:
    return ("ffconcat version 1.0\n" + "".join(f"file '{t}'\n" for t in targets)).encode()


def dash_manifest(url: str) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT1.5S"
     minBufferTime="PT1S" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011">
  <Period><AdaptationSet mimeType="audio/mp4" codecs="mp4a.40.2">
    <Representation id="a" bandwidth="48000"><BaseURL>{url}</BaseURL></Representation>
  </AdaptationSet></Period>
</MPD>
""".encode()


def sdp(port: int = 5004) -> bytes:
    """A session description: plain ffmpeg would listen for RTP on this UDP port."""
    return (f"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=earshot\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n").encode()


# --- hand-made containers -------------------------------------------------------------------------
def _ffmpeg(args: list[str], stdin: bytes | None = None) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args, str(out)],
                       input=stdin, check=True, capture_output=True, timeout=60)
        return out.read_bytes()


def wav(pcm: bytes, *, rate: int = 16000, channels: int = 1, bits: int = 16, tag: int = 1,
        riff_size: int | None = None, data_size: int | None = None) -> bytes:
    """A WAV file whose header says whatever it is told to, true or not."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, (rate * block) & 0xFFFFFFFF, block & 0xFFFF, bits)
    data_size = len(pcm) if data_size is None else data_size
    riff_size = 4 + 8 + len(fmt) + 8 + len(pcm) if riff_size is None else riff_size
    return (b"RIFF" + struct.pack("<I", riff_size) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"data" + struct.pack("<I", data_size) + pcm)


def s16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def _syncsafe(n: int) -> bytes:
    return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])


def id3v2(*frames: tuple[bytes, bytes]) -> bytes:
    """An ID3v2.3 tag holding (frame id, body) frames."""
    body = b"".join(fid + struct.pack(">I", len(data)) + b"\0\0" + data for fid, data in frames)
    return b"ID3\x03\x00\x00" + _syncsafe(len(body)) + body


def flac_with_blocks(flac: bytes, *blocks: tuple[int, bytes]) -> bytes:
    """`flac` with extra metadata blocks (type, body) after its own; last-block flags set right."""
    assert flac[:4] == b"fLaC"
    pos, found = 4, []
    while True:
        head = flac[pos]
        size = int.from_bytes(flac[pos + 1:pos + 4], "big")
        found.append((head & 0x7F, flac[pos + 4:pos + 4 + size]))
        pos += 4 + size
        if head & 0x80:
            break
    every = found + list(blocks)
    out = b"fLaC"
    for i, (kind, body) in enumerate(every):
        assert len(body) < 1 << 24
        out += bytes([kind | (0x80 if i == len(every) - 1 else 0)]) + len(body).to_bytes(3, "big") + body
    return out + flac[pos:]


def vorbis_comment(*comments: bytes) -> bytes:
    vendor = b"earshot tests"
    out = struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", len(comments))
    return out + b"".join(struct.pack("<I", len(c)) + c for c in comments)


def flac_picture(data: bytes, mime: bytes = b"image/jpeg") -> bytes:
    return (struct.pack(">II", 3, len(mime)) + mime + struct.pack(">I", 0)
            + struct.pack(">IIIII", 4000, 4000, 24, 0, len(data)) + data)


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else r << 1
        table.append(r & 0xFFFFFFFF)
    return table


_OGG_CRC = _crc_table()


def ogg_crc(page: bytes) -> int:
    crc = 0
    for b in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[((crc >> 24) & 0xFF) ^ b]
    return crc


def opus_with_head(ogg: bytes, **fields: int) -> bytes:
    """An Ogg Opus file whose OpusHead says other things (channels, pre_skip, rate, family); CRC fixed."""
    assert ogg[:4] == b"OggS"
    nsegs = ogg[26]
    start = 27 + nsegs
    size = sum(ogg[27:start])
    page = bytearray(ogg[:start + size])
    head = start
    assert page[head:head + 8] == b"OpusHead"
    layout = {"channels": (9, "<B"), "pre_skip": (10, "<H"), "rate": (12, "<I"), "family": (18, "<B")}
    for name, value in fields.items():
        offset, fmt = layout[name]
        struct.pack_into(fmt, page, head + offset, value)
    page[22:26] = b"\0\0\0\0"
    struct.pack_into("<I", page, 22, ogg_crc(bytes(page)))
    return bytes(page) + ogg[start + size:]


def ogg_pages(ogg: bytes) -> Iterator[bytes]:
    pos = 0
    while pos + 27 <= len(ogg):
        nsegs = ogg[pos + 26]
        end = pos + 27 + nsegs + sum(ogg[pos + 27:pos + 27 + nsegs])
        yield ogg[pos:end]
        pos = end


def ogg_with_granules(ogg: bytes, granule: Callable[[int], int]) -> bytes:
    """The same Ogg file with page k's granule position (its timestamp) set to granule(k) from the
    first audio page on; CRCs fixed, so only the timestamps lie."""
    out = []
    for k, page in enumerate(ogg_pages(ogg)):
        p = bytearray(page)
        if k >= 2:                 # pages 0 and 1 hold the Opus headers
            struct.pack_into("<q", p, 6, granule(k))
        p[22:26] = b"\0\0\0\0"
        struct.pack_into("<I", p, 22, ogg_crc(bytes(p)))
        out.append(bytes(p))
    return b"".join(out)


def mp4_with_frame_ticks(mp4: bytes, ticks: int) -> bytes:
    """An MP4/M4A whose sample table says every audio frame lasts `ticks` (real AAC frames: 1024)."""
    at = mp4.find(b"stts")
    assert at > 0, "no sample table"
    out = bytearray(mp4)
    for k in range(struct.unpack(">I", out[at + 8:at + 12])[0]):
        struct.pack_into(">I", out, at + 16 + 8 * k, ticks)
    return bytes(out)


def zip_of(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, data)
    return buf.getvalue()


def png() -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    rows = b"".join(b"\0" + bytes(range(64)) * 3 for _ in range(64))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def jpeg() -> bytes:
    return _ffmpeg(["-f", "lavfi", "-i", "testsrc=size=160x120", "-frames:v", "1", "-c:v", "mjpeg",
                    "-f", "image2"])


PDF = (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [] "
       b"/Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
TEXT = b"Meeting notes: call Anna on Friday about the budget.\n" * 80
HTML = (b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>"
        + b"<p>Please sign in to continue.</p>" * 100 + b"</body></html>")


def opus_with_big_comment(size: int) -> bytes:
    """An Ogg Opus note whose comment header spans hundreds of pages."""
    pcm = tones(TONE, TONE_SECONDS, rate=48000).tobytes()
    with tempfile.TemporaryDirectory() as tmp:
        meta = Path(tmp) / "meta.txt"
        meta.write_bytes(b";FFMETADATA1\ncomment=" + b"la" * (size // 2) + b"\n")
        return _ffmpeg(["-f", "f32le", "-ar", "48000", "-ac", "1", "-i", "pipe:0", "-f", "ffmetadata",
                        "-i", str(meta), "-map", "0:a", "-map_metadata", "1", "-c:a", "libopus",
                        "-b:a", "24k", "-f", "ogg"], pcm)


# --- the corpus ------------------------------------------------------------------------------------
class Kit:
    """What the recipes share: the canary to point at, and the clean clips the broken files start from
    (each made once, on first use)."""

    FORMATS = ("ogg", "mp3", "m4a", "wav", "flac", "amr", "webm", "3gp", "mp4")

    def __init__(self, canary: Canary) -> None:
        self.canary = canary
        self._clips: dict[str, bytes] = {}

    def clip(self, fmt: str, **options: Any) -> bytes:
        """The 1.5 s tone as `fmt` ("m4a-faststart": index first; "ogg-6s": a 5 s tone in 6 s)."""
        key = fmt + repr(sorted(options.items()))
        if key not in self._clips:
            plan, total = TONE, TONE_SECONDS
            if fmt == "m4a-faststart":
                fmt, options = "m4a", {**options, "faststart": True}
            elif fmt == "ogg-6s":
                fmt, plan, total = "ogg", [(440, 0.5, 5.0)], 6.0
            self._clips[key] = make_clip(None, plan, total_s=total, fmt=fmt, **options)
        return self._clips[key]

    def noise(self, size: int, seed: int = 6) -> bytes:
        return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()

    @property
    def pcm(self) -> bytes:
        return s16(tones(TONE, TONE_SECONDS)[:, 0])


@dataclass(frozen=True)
class Recipe:
    """A case before its bytes exist: the name is known at collection time, the file is made on demand."""

    name: str
    make: Callable[[Kit], bytes]
    expect: str | None
    filename: str | None = None
    mime_type: str | None = None
    seconds: float | None = None
    also: str | None = None

    def case(self, kit: Kit) -> Case:
        return Case(self.name, self.make(kit), self.expect, self.filename, self.mime_type, self.seconds,
                    self.also)


R = Recipe
CUT_SHORT, UNREADABLE = messages.NO_SAMPLES, messages.NOT_AUDIO
# how much of each format's file is left when only the start arrived, and what that deserves
HEADER_ONLY = {"ogg": (100, CUT_SHORT), "mp3": (200, UNREADABLE), "m4a": (300, UNREADABLE),
               "wav": (44, UNREADABLE), "flac": (60, UNREADABLE), "amr": (6, CUT_SHORT),
               "webm": (150, UNREADABLE), "3gp": (300, UNREADABLE), "mp4": (300, UNREADABLE)}
# half the file: the half that arrived is heard, unless the container's index sat at the end (m4a,
# 3gp, mp4 as phones write them) or the cut fell inside the only page of audio (a short Ogg note)
HALF = {"ogg": CUT_SHORT, "mp3": None, "m4a": UNREADABLE, "wav": None, "flac": None, "amr": None,
        "webm": None, "3gp": UNREADABLE, "mp4": UNREADABLE}
BIG_TEXT = b"\0earshot\0" + b"x" * (4 * MB)


def _cover(k: Kit) -> bytes:
    return b"\xff\xd8\xff\xe0" + k.noise(3 * MB)


RECIPES: list[Recipe] = [
    # nothing, or nothing that is audio
    R("empty", lambda k: b"", messages.EMPTY_FILE, "voice.ogg", "audio/ogg"),
    R("nul-bytes", lambda k: bytes(256 * 1024), UNREADABLE, "voice.ogg", "audio/ogg"),
    R("random-bytes", lambda k: k.noise(64 * 1024), UNREADABLE, "note.mp3", "audio/mpeg"),
    R("text-as-ogg", lambda k: TEXT, UNREADABLE, "voice.ogg", "audio/ogg"),
    R("html-as-m4a", lambda k: HTML, UNREADABLE, "memo.m4a", "audio/mp4"),
    R("png-as-mp3", lambda k: png(), UNREADABLE, "song.mp3", "audio/mpeg"),
    R("jpeg-as-m4a", lambda k: jpeg(), UNREADABLE, "memo.m4a", "audio/x-m4a"),
    R("pdf-as-wav", lambda k: PDF, UNREADABLE, "call.wav", "audio/wav"),
    R("zip-as-ogg", lambda k: zip_of("notes.txt", TEXT), UNREADABLE, "voice.ogg", "audio/ogg"),
    R("zip-holding-ogg", lambda k: zip_of("voice.ogg", k.clip("ogg")), UNREADABLE, "voice.ogg", "audio/ogg"),
    R("video-without-audio", lambda k: make_video_without_audio(), messages.NO_AUDIO_TRACK, "clip.mp4",
      "video/mp4"),

    # cut short, in every format people send
    *(R(f"truncated-{fmt}-header", lambda k, fmt=fmt, keep=keep: k.clip(fmt)[:keep], answer, f"voice.{fmt}")
      for fmt, (keep, answer) in HEADER_ONLY.items()),
    *(R(f"truncated-{fmt}-half", lambda k, fmt=fmt: k.clip(fmt)[:len(k.clip(fmt)) // 2], answer,
        f"voice.{fmt}") for fmt, answer in HALF.items()),
    R("truncated-m4a-faststart-half", lambda k: k.clip("m4a-faststart")[:len(k.clip("m4a-faststart")) // 2],
      None, "memo.m4a"),
    R("truncated-ogg-6s-at-60pct", lambda k: k.clip("ogg-6s")[:len(k.clip("ogg-6s")) * 6 // 10], None,
      "voice.ogg"),

    # valid audio in odd shapes: answered like any other
    R("eight-channels", lambda k: k.clip("wav", channels=8), None, "surround.wav", seconds=TONE_SECONDS),
    R("192-khz", lambda k: k.clip("flac", rate=192000, sample_fmt="s24"), None, "hires.flac",
      seconds=TONE_SECONDS),
    R("50-ms", lambda k: make_clip(None, [(440, 0.0, 0.05)], total_s=0.05, fmt="ogg"), None, "blip.ogg",
      seconds=0.05),
    R("ogg-named-jpeg", lambda k: k.clip("ogg"), None, "photo.jpg", "image/jpeg", seconds=TONE_SECONDS),
    R("mp3-named-pdf", lambda k: k.clip("mp3"), None, "report.pdf", "application/pdf", seconds=TONE_SECONDS),
    R("m4a-named-wav-octets", lambda k: k.clip("m4a"), None, "memo.wav", "application/octet-stream",
      seconds=TONE_SECONDS),
    R("wav-trailing-garbage", lambda k: k.clip("wav") + k.noise(8192), None, "call.wav", seconds=TONE_SECONDS),

    # huge metadata: megabytes of tags and pictures around a second of sound
    R("mp3-4mb-id3-text", lambda k: id3v2((b"TXXX", BIG_TEXT)) + k.clip("mp3"), None, "song.mp3",
      seconds=TONE_SECONDS),
    R("mp3-3mb-cover", lambda k: id3v2((b"APIC", b"\0image/jpeg\0\x03cover\0" + _cover(k))) + k.clip("mp3"),
      None, "song.mp3", seconds=TONE_SECONDS),
    R("flac-4mb-comment-3mb-picture",
      lambda k: flac_with_blocks(k.clip("flac"), (4, vorbis_comment(b"COMMENT=" + b"y" * (4 * MB))),
                                 (6, flac_picture(_cover(k)))), None, "take.flac", seconds=TONE_SECONDS),
    R("opus-2mb-comment", lambda k: opus_with_big_comment(2 * MB), None, "voice.ogg", seconds=TONE_SECONDS),

    # headers that lie: sizes, rates, channel counts, timestamps
    R("wav-claims-4gb", lambda k: wav(k.pcm, riff_size=0xFFFFFFFF, data_size=0xFFFFFFFF), None, "call.wav",
      seconds=TONE_SECONDS),
    R("wav-claims-1hz", lambda k: wav(bytes(200_000), rate=1), TOO_LONG, "call.wav"),   # 28 h in 200 kB
    R("wav-claims-65535-channels", lambda k: wav(k.pcm, channels=65535), UNREADABLE, "call.wav"),
    R("wav-claims-0hz", lambda k: wav(k.pcm, rate=0), UNREADABLE, "call.wav"),
    R("wav-claims-4ghz", lambda k: wav(k.pcm, rate=0xFFFFFFFF), UNREADABLE, "call.wav"),
    R("opus-claims-absurd-rate", lambda k: opus_with_head(k.clip("ogg"), rate=0xFFFFFFFF), None, "voice.ogg",
      seconds=TONE_SECONDS),
    R("opus-claims-255-channels", lambda k: opus_with_head(k.clip("ogg"), channels=255), UNREADABLE,
      "voice.ogg"),
    R("opus-pre-skip-over-the-tone", lambda k: opus_with_head(k.clip("ogg"), pre_skip=65535),
      messages.SILENT, "voice.ogg"),
    R("opus-timestamps-near-2-62", lambda k: ogg_with_granules(k.clip("ogg"), lambda i: (1 << 62) - i), None,
      "voice.ogg"),
    R("opus-timestamps-all-zero", lambda k: ogg_with_granules(k.clip("ogg"), lambda i: 0), None, "voice.ogg"),
    # ffmpeg 5.1 decodes the squeezed frames to silence, 9.0 to no samples at all: both refuse it clearly
    R("m4a-frames-claim-one-tick", lambda k: mp4_with_frame_ticks(k.clip("m4a-faststart"), 1),
      messages.SILENT, "memo.m4a", also=CUT_SHORT),
    R("mp4-box-claims-2-62-bytes", lambda k: k.clip("m4a")[:32] + b"\0\0\0\x01moov"
      + (1 << 62).to_bytes(8, "big") + bytes(1024), UNREADABLE, "memo.m4a"),
    R("flac-10h-silence", lambda k: make_long_silence(seconds=10 * 3600), TOO_LONG, "night.flac"),
    R("mp3-sync-run", lambda k: b"\xff" * (512 * 1024), UNREADABLE, "song.mp3"),
    R("mp3-bogus-frames", lambda k: b"\xff\xfb\x90\x64" * (128 * 1024), UNREADABLE, "song.mp3"),

    # files that point elsewhere: refused, and never followed (the canary tells)
    R("hls-local-file", lambda k: hls_playlist(str(k.canary.fifo)), UNREADABLE, "voice.ogg"),
    R("hls-loopback-url", lambda k: hls_playlist(f"{k.canary.url}/hls/seg0.ts"), UNREADABLE, "voice.ogg"),
    R("hls-other-protocols", lambda k: hls_playlist(f"concat:{k.canary.fifo}|{k.canary.fifo}",
                                                    f"file:{k.canary.fifo}",
                                                    f"subfile,,start,0,end,0,,:{k.canary.fifo}"),
      UNREADABLE, "voice.m3u8", "application/vnd.apple.mpegurl"),
    R("ffconcat-local-and-url", lambda k: ffconcat(str(k.canary.fifo), f"{k.canary.url}/concat/a.ogg"),
      UNREADABLE, "voice.ogg"),
    R("concat-protocol-line", lambda k: f"concat:{k.canary.fifo}|{k.canary.fifo}\n".encode(), UNREADABLE,
      "voice.ogg"),
    R("dash-loopback-url", lambda k: dash_manifest(f"{k.canary.url}/dash/a.m4a"), UNREADABLE, "voice.ogg"),
    R("sdp-rtp-listener", lambda k: sdp(), UNREADABLE, "voice.ogg"),
]
NAMES = [r.name for r in RECIPES]
assert len(set(NAMES)) == len(NAMES), "case names must be unique"


def build(canary: Canary) -> dict[str, Case]:
    """Every case, freshly made (a few seconds of encoding), by name."""
    kit = Kit(canary)
    return {r.name: r.case(kit) for r in RECIPES}


def make(name: str, canary: Canary) -> Case:
    """One case alone."""
    return next(r for r in RECIPES if r.name == name).case(Kit(canary))
