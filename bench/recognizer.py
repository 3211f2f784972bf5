"""10. The recognizer (qwen3-asr-flash): what a transcript sends and costs.

(a) A 30 s Opus voice note as Telegram sends it, transcribed by the recognizer: earshot's pass-through (the
    user's bytes as they are, length read from the OGG headers) against today's decode-and-encode (one ffmpeg
    pass to 16 kHz PCM and a 32 kbit/s MP3 stream, levels and cuts, core.audio.pipeline.prepare). Bytes sent are the
    base64 data: URL; CPU is this process's user+system time plus ffmpeg's (children), median of the runs.
(b) Tokens (and, for the recognizer, seconds) billed for a 95 s and a 10-minute note per backend, transcribed
    by the real Assistant against the stand-ins in tests/fakes on loopback (figures as each service reports
    them; vLLM reports none for audio, so earshot's estimate is shown, marked).

    python -m bench.recognizer [--runs N]
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import os
import resource
import tempfile
from pathlib import Path
from typing import Any

from bench.common import bench_settings, median, ratio, row, save, voice_note
from core.audio import pipeline
from core.flow.service import Assistant
from core.model.catalog import model_info
from core.values import Audio, ChatKey, Request, Task
from tests.fakes.dashscope import FakeDashScope
from tests.fakes.server import Served

NAME = "recognizer"
KEY = "sk-bench-key"
NOTES = (95.0, 600.0)
# (label, chat model, recognizer, api)
BACKENDS = (("qwen-audio-turbo-latest", "qwen-audio-turbo-latest", "", "native"),
            ("qwen3-omni-flash", "qwen3-omni-flash", "", "compat"),
            ("qwen-omni-turbo", "qwen-omni-turbo", "", "compat"),
            ("qwen3-asr-flash", "qwen-audio-turbo-latest", "qwen3-asr-flash", "compat"),
            ("Qwen2-Audio-7B on vLLM", "Qwen/Qwen2-Audio-7B-Instruct", "", "vllm"))


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def sent(runs: int) -> dict[str, Any]:
    data = voice_note(30.0, "opus24").read_bytes()
    asr = model_info("qwen3-asr-flash")
    through, coded = [], []
    through_bytes = coded_bytes = 0
    for _ in range(runs):
        start = _cpu()
        whole = pipeline.as_is(data, asr.formats, max_encoded=asr.max_bytes, max_seconds=asr.window)
        assert whole is not None, "the note should pass as it is"
        through_bytes = len(f"data:{whole.mime};base64,") + len(base64.b64encode(data))
        through.append(_cpu() - start)
        start = _cpu()
        prepared = pipeline.prepare(Audio(data, "note.ogg"), max_bytes=20 << 20, max_seconds=1800, timeout=120,
                                 chunk_seconds=asr.window)
        coded_bytes = sum(len("data:audio/mpeg;base64,") + len(base64.b64encode(c.data)) for c in prepared.chunks)
        coded.append(_cpu() - start)
    t, c = median(through), median(coded)
    print(f"  30 s Opus note: pass-through {through_bytes} B, {t * 1000:.2f} ms CPU; "
          f"decode-and-encode {coded_bytes} B, {c * 1000:.1f} ms CPU")
    return {"file_bytes": len(data), "through_bytes": through_bytes, "coded_bytes": coded_bytes,
            "through_cpu_s": t, "coded_cpu_s": c,
            "rows": [row("Recognizer, 30 s Opus note: bytes sent, pass-through vs decode-and-encode",
                         f"{through_bytes} B", f"{coded_bytes} B (MP3 32k)", ratio(through_bytes, coded_bytes),
                         "—", None),
                     row("Recognizer, 30 s Opus note: CPU, pass-through vs decode-and-encode",
                         f"{t * 1000:.2f} ms", f"{c * 1000:.1f} ms", ratio(t, c), "—", None)]}


async def billed() -> dict[str, Any]:
    ds = FakeDashScope(api_key=KEY)
    cases = []
    async with Served(ds.app) as served:
        for seconds in NOTES:
            note = Audio(voice_note(seconds, "opus24").read_bytes(), "note.ogg", "audio/ogg")
            for label, model, recognizer, api in BACKENDS:
                with tempfile.TemporaryDirectory(prefix="earshot-bench-") as tmp:
                    where = ({"openai_base_url": served.url + "/v1"} if api == "vllm" else
                             {"dashscope_api_key": KEY, "dashscope_base_url": served.url + "/api/v1"})
                    settings = bench_settings(model=model, asr_model=recognizer, tts_model="",
                                              db_path=Path(tmp) / "earshot.db", **where)
                    async with Assistant(settings) as assistant:
                        before = len(ds.calls)
                        reply = await assistant.handle(Request(ChatKey("cli", f"{label}-{seconds:g}"),
                                                               Task.TRANSCRIBE, audio=note))
                calls = [c for c in ds.calls[before:] if c.items]
                billed_s = sum(int(c.usage.get("seconds") or 0) for c in calls)
                case = {"backend": label, "seconds": seconds, "requests": len(calls),
                        "audio_tokens": reply.usage.audio_tokens, "total_tokens": reply.usage.total,
                        "estimated": reply.usage.estimated, "billed_seconds": billed_s}
                cases.append(case)
                print(f"  {seconds:>4g} s  {label:<26} {len(calls):>3} requests  {reply.usage.audio_tokens:>6} audio "
                      f"tokens{' (estimated)' if reply.usage.estimated else ''}  {reply.usage.total:>6} in all"
                      + (f"  {billed_s} s billed" if billed_s else ""))
    rows = [row(f"Billed, {c['seconds']:g} s note on {c['backend']}: {c['requests']} requests",
                f"{c['audio_tokens']} audio tokens{' (est.)' if c['estimated'] else ''}"
                + (f", {c['billed_seconds']} s" if c["billed_seconds"] else ""),
                f"{c['total_tokens']} tokens in all", None, "—", None) for c in cases]
    return {"cases": cases, "rows": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--full", action="store_true", help="more runs")
    p.add_argument("--runs", type=int, default=7)
    args = p.parse_args(argv)
    os.environ.setdefault("EARSHOT_TTS_MODEL", "")
    print("[10] the recognizer")
    first = sent(args.runs * (3 if args.full else 1))
    second = asyncio.run(billed())
    result = {"sent": {k: v for k, v in first.items() if k != "rows"}, "cases": second["cases"],
              "rows": first["rows"] + second["rows"]}
    save(NAME, result)
    return result


if __name__ == "__main__":
    main()
