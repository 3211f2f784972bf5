"""Run the `earshot` console command under yappi (CPU clock, every thread) and save its profile at exit.

    python -m bench.profiled OUT.pstat telegram

cProfile sees only the thread that started it; a bot's audio pipeline runs in worker threads
(asyncio.to_thread) and SQLite on a thread of its own, so yappi, which follows every thread, is used.
bench/note_cpu.py starts the bot this way for its profile, sends SIGUSR1 after its warm-up notes (the
profile starts over from there), and reads OUT.pstat with pstats.
"""
from __future__ import annotations

import atexit
import signal
import sys

import yappi


def main() -> None:
    out = sys.argv[1]
    sys.argv = ["earshot", *sys.argv[2:]]
    yappi.set_clock_type("cpu")
    yappi.start(builtins=True, profile_threads=True)

    def save() -> None:
        yappi.stop()
        yappi.get_func_stats().save(out, type="pstat")

    def restart(*_: object) -> None:      # SIGUSR1: forget start-up and warm-up, profile what follows
        yappi.stop()
        yappi.clear_stats()
        yappi.start(builtins=True, profile_threads=True)

    atexit.register(save)
    signal.signal(signal.SIGUSR1, restart)
    from bots.launch import main as earshot
    earshot()


if __name__ == "__main__":
    main()
