"""13. Re-encoding a voice note for the chat model: one ffmpeg per note against the alternatives.

The work is what core.audio.pipeline.Decoding asks of ffmpeg: the note decoded to 16 kHz mono s16 PCM and
encoded as a 32 kbit/s MP3 stream. CPU per note (this process's and its children's user + system time),
median of the runs, for:

    system ffmpeg     one child per note, the distro's dynamically linked build (EARSHOT_FFMPEG=system)
    bundled ffmpeg    one child per note, the static build in the imageio-ffmpeg wheel (EARSHOT_FFMPEG=bundled,
                      earshot's default)
    PyAV in-process   the same libraries loaded into Python (the `av` wheel): no child, no start, but no
                      CPU/memory caps and no kill after a timeout either (bench only: not a dependency)

PyAV is not adopted whatever it measures: in-process, a hostile file's decode can't be capped in CPU
seconds or address space nor killed at a timeout, which earshot's ffmpeg children are (core.audio.ffmpeg).

    python -m bench.reencode [--runs N] [--seconds S]
"""
from __future__ import annotations

import argparse
import io
import resource
import shutil
from collections.abc import Callable
from typing import Any

from bench.common import median, row, save, use_ffmpeg, voice_note
from core.audio import ffmpeg, pipeline
from core.values import Audio

NAME = "reencode"


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def by_ffmpeg(data: bytes) -> tuple[bytes, bytes]:
    decoded = pipeline.decode(data, max_seconds=1800, timeout=120)
    return decoded.segment.raw_data, decoded.mp3


def by_pyav(data: bytes) -> tuple[bytes, bytes]:
    import av
    pcm, mp3 = bytearray(), io.BytesIO()
    options = {"protocol_whitelist": "file", "format_whitelist": ",".join(pipeline.DEMUXERS)}
    with av.open(io.BytesIO(data), options=options) as src, av.open(mp3, "w", format="mp3") as out:
        stream = src.streams.audio[0]
        enc = out.add_stream("libmp3lame", rate=pipeline.SAMPLE_RATE, layout="mono")
        enc.bit_rate = 32_000
        enc.codec_context.options = {"compression_level": pipeline.MP3_QUALITY, "reservoir": "0"}
        resampler = av.AudioResampler(format="s16", layout="mono", rate=pipeline.SAMPLE_RATE)
        for frame in src.decode(stream):
            for f in resampler.resample(frame):
                pcm += bytes(f.planes[0])[: f.samples * 2]
                for packet in enc.encode(f):
                    out.mux(packet)
        for f in resampler.resample(None):
            pcm += bytes(f.planes[0])[: f.samples * 2]
            for packet in enc.encode(f):
                out.mux(packet)
        for packet in enc.encode(None):
            out.mux(packet)
    return bytes(pcm), mp3.getvalue()


def cpu_of(fn: Callable[[bytes], Any], data: bytes, runs: int) -> float:
    fn(data)                                   # warm: imports, the binary in the page cache
    times = []
    for _ in range(runs):
        before = _cpu()
        fn(data)
        times.append(_cpu() - before)
    return median(times)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--full", action="store_true")
    p.add_argument("--runs", type=int, default=9)
    p.add_argument("--seconds", type=float, default=30.0, help="the note's length")
    args = p.parse_args(argv)
    print(f"[13] re-encoding a {args.seconds:g} s note")
    data = voice_note(args.seconds, "opus24").read_bytes()
    pipeline.prepare(Audio(data, "n.ogg"), max_bytes=20 << 20, max_seconds=1800, timeout=120)
    results: dict[str, float] = {}
    system = shutil.which("ffmpeg")
    if system:
        use_ffmpeg(system)
        results["system ffmpeg, one per note"] = cpu_of(by_ffmpeg, data, args.runs)
    use_ffmpeg("static")
    results["bundled ffmpeg, one per note"] = cpu_of(by_ffmpeg, data, args.runs)
    try:
        results["PyAV in-process"] = cpu_of(by_pyav, data, args.runs)
    except ImportError:
        print("  (PyAV not installed: pip install av)")
    base = results.get("system ffmpeg, one per note") or next(iter(results.values()))
    for k, v in results.items():
        print(f"  {k:<32} {v * 1000:6.1f} ms CPU per note ({v / base:.2f}×)")
    rows = [row(f"Re-encode, {args.seconds:g} s Opus note: {k}", f"{v * 1000:.1f} ms CPU",
                f"{base * 1000:.1f} ms (system ffmpeg)", v / base, "≤ 60 ms per note in all", None)
            for k, v in results.items()]
    save(NAME if args.seconds == 30 else f"{NAME}-{args.seconds:g}s",
         {"cpu_s": results, "rows": rows, "ffmpeg": ffmpeg.executable()})
    return {"cpu_s": results, "rows": rows}


if __name__ == "__main__":
    main()
