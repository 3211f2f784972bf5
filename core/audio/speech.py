"""Spoken answers: the model's 24 kHz s16le mono PCM as OGG/Opus, the only format Telegram shows as a
voice bubble (and one every Slack client plays)."""
from __future__ import annotations

import functools
import subprocess

from core.audio import ffmpeg
from core.model.model_api import SPEECH_RATE

OPUS_BITRATE = "32k"            # speech: plenty for a voice note, ~4 KB a second


@functools.cache
def _encoder(exe: str) -> tuple[str, ...]:
    """libopus when this ffmpeg has it (imageio-ffmpeg's static build does); else ffmpeg's own Opus
    encoder, which is marked experimental and takes 48 kHz only."""
    try:
        out = subprocess.run([exe, *ffmpeg.BASE_ARGS, "-encoders"], capture_output=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = b""
    if b" libopus " in out:
        return ("-c:a", "libopus", "-application", "voip")
    return ("-ar", "48000", "-c:a", "opus", "-strict", "-2")


def to_ogg_opus(pcm: bytes, *, timeout: float = 60) -> bytes:
    """Encode headerless s16le mono PCM at 24 kHz into an OGG/Opus file."""
    exe = ffmpeg.executable()
    return ffmpeg.run(["-f", "s16le", "-ar", str(SPEECH_RATE), "-ac", "1", "-i", "pipe:0",
                       *_encoder(exe), "-b:a", OPUS_BITRATE, "-f", "ogg", "pipe:1"], input=pcm, timeout=timeout)


def seconds(pcm: bytes) -> float:
    return len(pcm) / 2 / SPEECH_RATE
