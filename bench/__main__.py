"""Run every benchmark in turn, then rewrite the table in BENCHMARKS.md and the plots.

    python -m bench [--full] [--only pipeline,bitrate,throughput,long_audio,memory,history,models,startup,answer_cache,
                                    replicas,recognizer]

A benchmark that fails is reported and the rest still run; the exit status is 1 if any failed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

from bench import (
    answer_cache,
    bitrate,
    history_store,
    idle_memory,
    long_audio,
    memory,
    models,
    note_cpu,
    pipeline,
    recognizer,
    reencode,
    replicas,
    report,
    startup,
    throughput,
)

BENCHMARKS = {"pipeline": pipeline, "bitrate": bitrate, "throughput": throughput, "long_audio": long_audio,
              "memory": memory, "history": history_store, "models": models, "startup": startup,
              "answer_cache": answer_cache, "replicas": replicas,
              "recognizer": recognizer, "note_cpu": note_cpu, "reencode": reencode, "idle_memory": idle_memory}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--full", action="store_true", help="longer runs, more repeats and cases (~15 min)")
    p.add_argument("--only", help="comma-separated names: " + ", ".join(BENCHMARKS))
    args = p.parse_args()
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = set(names) - BENCHMARKS.keys()
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    print(f"load average before the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    failed = []
    started = time.monotonic()
    for name in names:
        try:
            BENCHMARKS[name].main(["--full"] if args.full else [])
        except Exception:
            traceback.print_exc()
            failed.append(name)
    report.main([])
    print(f"done in {time.monotonic() - started:.0f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
