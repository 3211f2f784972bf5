"""2. Bytes sent per second of audio: the base64 audio items earshot puts in its requests, against the
Opus voice note the user sent (24 and 32 kbit/s, as Telegram sends them) and against 16 kHz PCM WAV
sent the same way (base64; WAV is a format the model accepts).

Also measured, marked "prototype": the same with core.audio.pipeline.MP3_BITRATE set to 24k in this process
(no file is changed), with the effect on the audio: the highest frequency kept within 20 dB of the
source, and the log-spectral distance below 4 kHz.

    python -m bench.bitrate [--full]
"""
from __future__ import annotations

import argparse
import base64
import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from bench.common import RATE, row, save, voice_note
from core.audio import ffmpeg, pipeline
from core.model.dashscope import audio_item
from core.values import Audio

NAME = "bitrate"
TARGET = 1.5
PROTOTYPE_BITRATE = "24k"


@contextlib.contextmanager
def mp3_bitrate(value: str) -> Iterator[None]:
    saved = pipeline.MP3_BITRATE
    pipeline.MP3_BITRATE = value
    try:
        yield
    finally:
        pipeline.MP3_BITRATE = saved


def decode(data: bytes) -> np.ndarray:
    out = ffmpeg.run(["-i", "pipe:0", "-f", "s16le", "-ac", "1", "-ar", str(RATE), "pipe:1"],
                     input=data, timeout=120)
    return np.frombuffer(out, "<i2").astype(np.float64) / 32768


def _spectrum(x: np.ndarray, n: int = 512) -> np.ndarray:
    frames = len(x) // n
    windowed = x[: frames * n].reshape(frames, n) * np.hanning(n)
    return (np.abs(np.fft.rfft(windowed, axis=1)) ** 2).mean(axis=0) + 1e-12


def fidelity(original: bytes, chunks: list[bytes]) -> dict[str, float]:
    """How much of the source's spectrum the chunks keep."""
    src, out = _spectrum(decode(original)), _spectrum(np.concatenate([decode(c) for c in chunks]))
    freqs = np.fft.rfftfreq(512, 1 / RATE)
    loss = 10 * np.log10(src) - 10 * np.log10(out)
    kept = freqs[np.argmax(loss > 20)] if (loss > 20).any() else RATE / 2
    speech = freqs < 4000
    return {"kept_hz": float(kept), "lsd_below_4k_db": float(np.sqrt(np.mean(loss[speech] ** 2)))}


def sent(data: bytes) -> tuple[float, int, list[bytes]]:
    """Duration, base64 request bytes of every audio item, and the chunks."""
    prepared = pipeline.prepare(Audio(data, "voice.ogg", "audio/ogg"), max_bytes=20 * 2**20,
                             max_seconds=1800, timeout=120)
    chunks = [c.data for c in prepared.chunks]
    return prepared.duration, sum(len(audio_item(c)["audio"]) for c in chunks), chunks


def run(lengths: list[float]) -> dict[str, Any]:
    cases = []
    for seconds in lengths:
        wav = voice_note(seconds, "wav16k").read_bytes()
        wav_b64 = len("data:;base64,") + len(base64.b64encode(wav))
        for encoding in ("opus24", "opus32"):
            note = voice_note(seconds, encoding).read_bytes()
            for bitrate in (pipeline.MP3_BITRATE, PROTOTYPE_BITRATE):
                with mp3_bitrate(bitrate):
                    duration, b64, chunks = sent(note)
                case = {"seconds": seconds, "original": encoding, "mp3_bitrate": bitrate,
                        "prototype": bitrate != pipeline.MP3_BITRATE, "duration": duration,
                        "sent_bytes": b64, "sent_Bps": b64 / duration, "mp3_Bps": sum(map(len, chunks)) / duration,
                        "opus_bytes": len(note), "opus_Bps": len(note) / duration,
                        "opus_kbps": len(note) * 8 / duration / 1000,
                        "wav_b64_bytes": wav_b64, "wav_b64_Bps": wav_b64 / duration,
                        "vs_opus": b64 / len(note), "vs_wav": b64 / wav_b64, **fidelity(note, chunks)}
                cases.append(case)
                print(f"  {seconds:>5g} s {encoding} ({case['opus_kbps']:.1f} kbit/s) MP3 {bitrate}: "
                      f"sends {case['sent_Bps']:.0f} B/s = {case['vs_opus']:.2f}× the Opus note, "
                      f"{case['vs_wav']:.3f}× base64 WAV; keeps up to {case['kept_hz']:.0f} Hz, "
                      f"LSD<4k {case['lsd_below_4k_db']:.2f} dB")
    longest = max(lengths)
    rows = []
    for c in cases:
        if c["seconds"] != longest:
            continue
        label = "prototype: MP3_BITRATE=24k" if c["prototype"] else f"MP3 {c['mp3_bitrate']}"
        rows.append(row(f"Bytes sent per audio second vs {c['opus_kbps']:.0f} kbit/s Opus note ({label})",
                        f"{c['sent_Bps']:.0f} B/s", f"{c['opus_Bps']:.0f} B/s (Opus file)",
                        c["vs_opus"], f"≤ {TARGET}×", c["vs_opus"] <= TARGET))
    for c in cases:
        if c["seconds"] == longest and c["original"] == "opus24":
            label = "prototype: MP3_BITRATE=24k" if c["prototype"] else f"MP3 {c['mp3_bitrate']}"
            rows.append(row(f"Bytes sent per audio second vs 16 kHz WAV, base64 ({label})",
                            f"{c['sent_Bps']:.0f} B/s", f"{c['wav_b64_Bps']:.0f} B/s", c["vs_wav"], "—", None))
    return {"cases": cases, "rows": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--full", action="store_true", help="also a 30-minute note")
    args = p.parse_args(argv)
    print("[2] bytes sent per second of audio")
    result = run([30.0, 300.0, 1800.0] if args.full else [30.0, 300.0])
    save(NAME, result)
    return result


if __name__ == "__main__":
    main()
