"""The `earshot` console script: a one-shot command on a local file starts ffmpeg before anything else loads.

`earshot transcribe note.ogg …` (or summarize, sentiment, events, ask, translate) reads the file and the
decode's limits, starts decoding it (core.audio.pipeline.decoding_ahead, which the pipeline takes), and only
then loads the
command line (bots.cli, typer) and the rest of earshot, while ffmpeg works on the other core. Anything
unusual (an option before the file, a link, a missing or oversized file, bad settings) starts nothing here:
the pipeline then decodes when it gets there, and bots.cli says what is wrong as it always does.
"""
from __future__ import annotations

import gc
import os
import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

# the commands whose first argument is the audio file
ONE_SHOT = ("transcribe", "summarize", "sentiment", "events", "ask", "translate")

# What the early decode assumes, read straight from the environment: loading and validating the settings
# (pydantic) takes longer than the decode. A guess the pipeline checks: it takes the early decode only for
# the same bytes, limits and ffmpeg its real settings ask for, and decodes afresh otherwise. The defaults
# are Settings' own (tests/test_cli.py keeps them equal).
EARLY_GUESS = {"EARSHOT_MAX_FILE_MB": "20", "EARSHOT_MAX_AUDIO_SECONDS": "1800", "EARSHOT_FFMPEG_TIMEOUT": "120",
               "EARSHOT_FFMPEG": "bundled"}


def main() -> None:
    # Loading earshot makes some 300k objects that live until exit; the collector's passes over them while
    # they load (~30 ms) and once more at exit (~35 ms) find nothing to free. Off while loading: bots.cli
    # turns it back on for the work, with what exists by then kept out of its way.
    gc.disable()
    # httpx imports its command-line client whenever click and rich are installed (typer and sqlite-utils
    # bring them): ~40 ms of rich and pygments on every start, for a command earshot never runs. A module
    # set to None can't be imported, and httpx then falls back to its stub `main`.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    try:
        with _decode_early(sys.argv[1:]):
            from bots.cli import main as run
            run()
    finally:
        gc.freeze()


def _decode_early(args: list[str]) -> AbstractContextManager[None]:
    """ffmpeg decoding FILE as the pipeline will ask for it (core.audio.pipeline.decoding_ahead), when the command line
    starts `COMMAND FILE`: a one-shot command waits for the longer of loading and decoding, not both. The
    terminal is never refused (core.flow.access), so the work is not wasted."""
    if len(args) < 2 or args[0] not in ONE_SHOT or args[1].startswith("-"):
        return nullcontext()
    try:
        from core.audio import ffmpeg, pipeline
        limits = {name: os.environ.get(name, default) for name, default in EARLY_GUESS.items()}
        path = Path(args[1])
        if not path.is_file() or path.stat().st_size > float(limits["EARSHOT_MAX_FILE_MB"]) * 1024 * 1024:
            return nullcontext()
        data = path.read_bytes()
        if args[0] == "transcribe" and os.environ.get("EARSHOT_ASR_MODEL", "-").strip() \
                and pipeline.header_seconds(data, pipeline.sniff(data) or "") is not None:
            return nullcontext()     # the recognizer likely takes these bytes as they are: nothing to decode
        ffmpeg.choose(limits["EARSHOT_FFMPEG"])
        return pipeline.decoding_ahead(data, max_seconds=float(limits["EARSHOT_MAX_AUDIO_SECONDS"]),
                                    timeout=float(limits["EARSHOT_FFMPEG_TIMEOUT"]))
    except Exception:                        # bots.cli meets it again and says what is wrong
        return nullcontext()
