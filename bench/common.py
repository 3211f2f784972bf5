"""What every benchmark shares: speech-like voice notes, timing helpers, and where results are kept.

Voice notes are synthesised, not recorded, so the run is reproducible anywhere: phrases of voiced
syllables (a pitch-varying harmonic source shaped by moving vowel formants), noise bursts for
consonants, pauses between phrases and a faint noise floor. Codecs spend bits on that much as they do
on speech, which tones over silence would not (Opus coasts through silence). The first 60 s are
unique and longer notes repeat them. Encoded notes are cached in the system temp directory.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from core.audio import ffmpeg

ROOT = Path(__file__).resolve().parents[1]      # run as `python -m bench.<name>` from here (bench/run does)

RESULTS = ROOT / "bench" / "results"
CACHE = Path(tempfile.gettempdir()) / "earshot-bench-cache"
RATE = 16_000
UNIQUE_SECONDS = 60.0
VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410),
          (660, 1720, 2410), (440, 1020, 2240))   # F1, F2, F3 of a, i, u, e, o, æ, ʊ (Peterson & Barney)


# --- voice notes ------------------------------------------------------------------------------------
def _speech(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    f0 = np.zeros(n)
    voiced = np.zeros(n)
    fricative = np.zeros(n)
    formants = np.zeros((n, 3))
    pos = 0
    while pos < n:
        phrase_end = min(n, pos + int(rng.uniform(1.2, 3.5) * RATE))
        base = rng.uniform(95, 210)               # a speaker's pitch for this phrase
        while pos < phrase_end:
            cons = int(rng.uniform(0.02, 0.08) * RATE)
            vow = int(rng.uniform(0.10, 0.25) * RATE)
            a, b, c = pos, min(n, pos + cons), min(n, pos + cons + vow)
            fricative[a:b] = rng.uniform(0.05, 0.25)
            if c > b:
                ramp = np.sin(np.linspace(0, np.pi, c - b))
                voiced[b:c] = ramp ** 0.5
                glide = np.linspace(1.0, rng.uniform(0.85, 1.15), c - b)
                f0[b:c] = base * glide
                formants[b:c] = VOWELS[rng.integers(len(VOWELS))]
            pos = c
        pos = min(n, phrase_end + int(rng.uniform(0.25, 0.9) * RATE))   # a pause
    f0[f0 == 0] = 120.0
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    out = np.zeros(n)
    for k in range(1, 32):                        # harmonics up to ~6 kHz
        hz = k * f0
        weight = sum(np.exp(-((hz - formants[:, i]) / (80 + 40 * i)) ** 2) * (1.0 / (i + 1))
                     for i in range(3)) + 0.02
        out += np.where(hz < RATE / 2 - 500, weight / k ** 0.7, 0.0) * np.sin(k * phase)
    out *= voiced
    out += fricative * rng.normal(0, 1, n) * 0.6
    out += rng.normal(0, 10 ** (-55 / 20), n)     # room noise
    return 0.45 * out / np.max(np.abs(out))


def voice_pcm(seconds: float, seed: int = 7) -> np.ndarray:
    """float samples at 16 kHz of speech-like audio, `seconds` long."""
    unique = _speech(min(seconds, UNIQUE_SECONDS), seed)
    reps = int(np.ceil(seconds * RATE / len(unique)))
    return np.tile(unique, reps)[: int(seconds * RATE)]


OPUS = ["-c:a", "libopus", "-application", "voip", "-ar", "48000", "-ac", "1", "-f", "ogg"]
ENCODINGS: dict[str, list[str]] = {
    "opus24": [*OPUS, "-b:a", "24k"],               # Telegram voice notes run 24-32 kbit/s
    "opus32": [*OPUS, "-b:a", "32k"],
    "wav16k": ["-c:a", "pcm_s16le", "-ar", "16000", "-ac", "1", "-f", "wav"],
    # a recording near both limits at once: ~29 minutes (max_audio_seconds 30) in ~20 MiB (max_file_mb)
    "mp3_96k": ["-c:a", "libmp3lame", "-b:a", "96k", "-ar", "44100", "-ac", "2", "-f", "mp3"],
}


def voice_note(seconds: float, encoding: str = "opus24", seed: int = 7) -> Path:
    """A cached file of `seconds` of speech-like audio in `encoding` (see ENCODINGS)."""
    args = ENCODINGS[encoding]
    key = hashlib.sha1(json.dumps([seconds, encoding, args, seed, 3]).encode()).hexdigest()[:16]
    path = CACHE / f"voice-{seconds:g}s-{encoding}-{key}"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(voice_pcm(seconds, seed), -1, 1) * 32767).astype("<i2").tobytes()
    tmp = path.with_suffix(".part")
    subprocess.run([ffmpeg.executable(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "s16le", "-ar", str(RATE), "-ac", "1", "-i", "pipe:0", *args, str(tmp)],
                   input=pcm, check=True, capture_output=True, timeout=600)
    tmp.replace(path)
    return path


# Budgets and rate limits stay on (their checks run on every request) but set far above what a run spends.
# The answer cache is off: the benchmarks repeat the same clips to measure the work, not to skip it.
NO_LIMITS = {"EARSHOT_USER_DAILY_TOKENS": 10**12, "EARSHOT_CHAT_DAILY_TOKENS": 10**12,
             "EARSHOT_GLOBAL_DAILY_TOKENS": 10**12, "EARSHOT_USER_REQUESTS_PER_MINUTE": 10**6,
             "EARSHOT_CACHE_DAYS": 0,
             # the chat model transcribes, as the figures before the recognizer were taken (bench.recognizer
             # measures the recognizer)
             "EARSHOT_ASR_MODEL": "", "EARSHOT_TTS_MODEL": ""}


# How a voice note reaches the model: (environment for the bot, the note's caption).
#   re-encode     a plain voice note: the chat model hears it, decoded and re-encoded to MP3 by ffmpeg
#   pass-through  captioned /transcribe, with the recognizer (as earshot is configured by default): the
#                 user's Opus bytes go as they are, no ffmpeg
PATHS: dict[str, tuple[dict[str, str], str | None]] = {
    "re-encode": ({}, None),
    "pass-through": ({"EARSHOT_ASR_MODEL": "qwen3-asr-flash"}, "/transcribe")}


def bench_env() -> dict[str, str]:
    """Environment for an earshot child process in a benchmark."""
    return {k: str(v) for k, v in NO_LIMITS.items()} | {"EARSHOT_METRICS_PORT": "0"}


def bench_settings(**kw: Any) -> Any:
    """Settings for earshot in this process: the benchmark's values, budgets out of the way."""
    from core.config import Settings
    fields = Settings.model_fields
    limits = {k.removeprefix("EARSHOT_").lower(): v for k, v in NO_LIMITS.items()}
    return Settings(**({k: v for k, v in limits.items() if k in fields} | kw))


def use_ffmpeg(choice: str | None) -> dict[str, str]:
    """Point earshot at another ffmpeg, for this process and for children started with the env returned.

    choice: None (earshot's own pick), "static" (the imageio-ffmpeg wheel's build), "system" (the one on
    PATH) or a path. Works through EARSHOT_FFMPEG, as an operator would; no earshot code is changed.
    """
    if not choice:
        return {}
    if choice == "static":
        import imageio_ffmpeg
        choice = imageio_ffmpeg.get_ffmpeg_exe()
    elif choice == "system":
        choice = shutil.which("ffmpeg") or "ffmpeg"
    ffmpeg.choose(choice)
    return {"EARSHOT_FFMPEG": choice}


# --- timing -----------------------------------------------------------------------------------------
def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def ratio(measured: float, baseline: float) -> float:
    return measured / baseline if baseline else float("inf")


# --- results ----------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "cpus": os.cpu_count(), "ffmpeg": ffmpeg.executable(),
                            # other work on the machine skews every figure: kept so a reader can tell
                            "loadavg_at_save": [round(x, 2) for x in os.getloadavg()]}
    try:
        out = subprocess.run([ffmpeg.executable(), "-version"], capture_output=True, text=True, timeout=10)
        info["ffmpeg_version"] = out.stdout.split("\n", 1)[0]
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                     if line.startswith("model name"))
        info["cpu"] = model
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    return info


def save(name: str, data: dict[str, Any]) -> Path:
    """Write one benchmark's figures to bench/results/<name>.json (the report reads them from there)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {"benchmark": name, "when": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), **data}
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def row(what: str, measured: str, baseline: str, ratio_value: float | None, target: str,
        met: bool | None) -> dict[str, Any]:
    """One line of the BENCHMARKS.md table."""
    return {"what": what, "measured": measured, "baseline": baseline,
            "ratio": None if ratio_value is None else round(ratio_value, 3), "target": target, "met": met}
