"""Audio made at test time: tones over silence (optionally with noise) in any format users send.

Nothing binary is committed. Samples are built with numpy and encoded with the ffmpeg from the
imageio-ffmpeg wheel (independent of earshot's own ffmpeg lookup). Also here: an independent decoder
and small analysis helpers to check where tones ended up.

    data = make_clip(None, [(440, 0.5, 1.0)], total_s=2.0, fmt="ogg")     # a Telegram-like voice note
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import imageio_ffmpeg
import numpy as np

Plan = Sequence[tuple[float, float, float]]      # (frequency Hz, start s, duration s)

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()

# Output arguments per format: what real clients send.
_FORMATS: dict[str, list[str]] = {
    "ogg": ["-c:a", "libopus", "-b:a", "24k", "-f", "ogg"],          # Telegram voice note
    "oga": ["-c:a", "libopus", "-b:a", "24k", "-f", "ogg"],
    "webm": ["-c:a", "libopus", "-b:a", "24k", "-f", "webm"],        # Slack / browser clips
    "mp3": ["-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"],
    "m4a": ["-c:a", "aac", "-b:a", "48k", "-f", "mp4"],              # iOS memo; moov at the end
    "aac": ["-c:a", "aac", "-b:a", "48k", "-f", "adts"],
    "wav": ["-f", "wav"],
    "flac": ["-c:a", "flac", "-f", "flac"],
    "amr": ["-c:a", "libopencore_amrnb", "-ar", "8000", "-ac", "1", "-b:a", "12.2k", "-f", "amr"],
    "3gp": ["-c:a", "libopencore_amrnb", "-ar", "8000", "-ac", "1", "-b:a", "12.2k", "-f", "3gp"],
    "mp4": ["-c:a", "aac", "-b:a", "48k", "-f", "mp4"],              # with a small video track, see make_clip
}
_WAV_CODECS = {"u8": "pcm_u8", "s16": "pcm_s16le", "s24": "pcm_s24le", "s32": "pcm_s32le", "f32": "pcm_f32le"}


def tones(plan: Plan, total_s: float, *, rate: int = 16000, channels: int = 1, amplitude: float = 0.5,
          noise_dbfs: float | None = None, dc: float = 0.0, seed: int = 0) -> np.ndarray:
    """float32 samples, shape (n, channels): sine tones (10 ms fades, no clicks) over silence or noise."""
    n = int(round(total_s * rate))
    out = np.zeros(n, dtype=np.float64)
    fade = max(1, int(0.01 * rate))
    for freq, start, dur in plan:
        a, b = int(round(start * rate)), min(n, int(round((start + dur) * rate)))
        t = np.arange(b - a) / rate
        env = np.minimum(1.0, np.minimum(np.arange(b - a) + 1, np.arange(b - a)[::-1] + 1) / fade)
        out[a:b] += amplitude * env * np.sin(2 * np.pi * freq * t)
    if noise_dbfs is not None:
        out += np.random.default_rng(seed).normal(0, 10 ** (noise_dbfs / 20), n)
    out += dc
    return np.repeat(out[:, None], channels, axis=1).astype(np.float32)


def make_clip(path: str | os.PathLike | None = None, plan: Plan = ((440, 0.0, 1.0),),
              total_s: float | None = None, fmt: str = "ogg", *, rate: int = 48000, channels: int = 1,
              sample_fmt: str = "s16", amplitude: float = 0.5, noise_dbfs: float | None = None,
              dc: float = 0.0, faststart: bool = False, video: bool | None = None) -> bytes:
    """Encode tones (see `tones`) as `fmt`; write to `path` if given; return the bytes.

    sample_fmt applies to wav and flac ("u8", "s16", "s24", "s32", "f32"). fmt "mp4" adds a tiny video
    track unless video=False; faststart moves the MP4 index to the front.
    """
    if total_s is None:
        total_s = max((start + dur for _, start, dur in plan), default=1.0)
    pcm = tones(plan, total_s, rate=rate, channels=channels, amplitude=amplitude,
                noise_dbfs=noise_dbfs, dc=dc)
    args = ["-f", "f32le", "-ar", str(rate), "-ac", str(channels), "-i", "pipe:0"]
    if fmt == "mp4" and video is not False:
        args += ["-f", "lavfi", "-i", f"testsrc=size=64x48:rate=5:duration={total_s}",
                 "-map", "1:v", "-map", "0:a", "-c:v", "mpeg4", "-shortest"]
    if fmt == "wav":
        args += ["-c:a", _WAV_CODECS[sample_fmt]]
    if fmt == "flac":
        args += ["-sample_fmt", "s16" if sample_fmt in ("u8", "s16") else "s32"]
        if sample_fmt == "s24":
            args += ["-bits_per_raw_sample", "24"]
    args += _FORMATS[fmt]
    if faststart:
        args += ["-movflags", "+faststart"]
    return _encode(args, pcm.tobytes(), path)


def make_video_without_audio(path: str | os.PathLike | None = None, seconds: float = 1.0) -> bytes:
    """An MP4 with only a (tiny) video track, like a screen recording with sound off."""
    args = ["-f", "lavfi", "-i", f"testsrc=size=64x48:rate=5:duration={seconds}",
            "-c:v", "mpeg4", "-f", "mp4"]
    return _encode(args, None, path)


def make_long_silence(path: str | os.PathLike | None = None, seconds: float = 36000,
                      fmt: str = "flac") -> bytes:
    """Hours of digital silence in a small file (10 h of FLAC is ~70 kB): a decompression bomb for audio."""
    args = ["-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono:nb_samples=65535", "-t", str(seconds),
            "-c:a", "flac", "-compression_level", "0", "-frame_size", "65535", "-f", fmt]
    return _encode(args, None, path)


def _encode(args: list[str], stdin: bytes | None, path: str | os.PathLike | None) -> bytes:
    # Encode to a file, not a pipe: the MP4 muxer seeks back to write its index.
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(path) if path is not None else Path(tmp) / "clip"
        subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args, str(out)],
                       input=stdin, check=True, capture_output=True, timeout=60)
        return out.read_bytes()


# --- checking results ----------------------------------------------------------------------------
def decode_pcm(data: bytes, rate: int = 16000) -> np.ndarray:
    """Decode any audio bytes to mono float32 at `rate`, independently of earshot's code."""
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        out = subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", f.name,
                              "-ac", "1", "-ar", str(rate), "-f", "f32le", "pipe:1"],
                             check=True, capture_output=True, timeout=60).stdout
    return np.frombuffer(out, dtype=np.float32)


def tone_spans(samples: np.ndarray, freq: float, rate: int = 16000, frame_s: float = 0.02,
               min_level: float = 0.05) -> list[tuple[float, float]]:
    """Where a tone of `freq` sounds, as (start, end) seconds, to frame precision.

    Per frame: the amplitude of the `freq` component (a single-bin DFT); a frame counts when it
    exceeds min_level (tones here are made at amplitude 0.5).
    """
    hop = int(frame_s * rate)
    n = len(samples) // hop
    if n == 0:
        return []
    frames = samples[: n * hop].reshape(n, hop).astype(np.float64)
    t = np.arange(hop) / rate
    probe = np.exp(-2j * np.pi * freq * t)
    amp = 2 * np.abs(frames @ probe) / hop
    on = amp > min_level
    spans, start = [], None
    for i, v in enumerate(on):
        if v and start is None:
            start = i
        elif not v and start is not None:
            spans.append((start * frame_s, i * frame_s))
            start = None
    if start is not None:
        spans.append((start * frame_s, n * frame_s))
    return spans


def is_mp3(data: bytes) -> bool:
    """True if the bytes start like an MP3 stream: an ID3v2 tag or an MPEG audio frame header."""
    if data[:3] == b"ID3":
        return True
    return len(data) >= 4 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0 and (data[1] >> 1) & 3 == 1


def mp3_header(data: bytes) -> dict[str, int | str]:
    """Fields of the first MPEG audio frame header (skipping an ID3v2 tag)."""
    if data[:3] == b"ID3":
        size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
        data = data[10 + size:]
    h = int.from_bytes(data[:4], "big")
    if h >> 21 != 0x7FF:
        raise ValueError("no MPEG frame sync")
    version = {0: "2.5", 2: "2", 3: "1"}[(h >> 19) & 3]
    layer = {1: 3, 2: 2, 3: 1}[(h >> 17) & 3]
    rates = {"1": (44100, 48000, 32000), "2": (22050, 24000, 16000), "2.5": (11025, 12000, 8000)}
    return {"version": version, "layer": layer, "sample_rate": rates[version][(h >> 10) & 3],
            "mono": int((h >> 6) & 3 == 3)}
