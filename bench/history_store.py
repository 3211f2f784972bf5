"""6. History: append an exchange and load the turns for a request, in a chat with 10,000 turns.

Through core.store.history.HistoryStore's async API (so the hop to its database thread is counted), on a
database file on disk with WAL, as the service runs it. Besides the 10,000-turn chat the file holds
as many turns of other chats. The baseline is the same call on a chat with 10 turns in the same file;
the target (< 5 ms) is absolute. Also shown: `usage_today`, which the /usage command reads.

    python -m bench.history_store [--full] [--turns N]
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.common import median, ratio, row, save
from core.store.history import HistoryStore, _key
from core.values import ChatKey, Usage

NAME = "history"
TARGET_MS = 5.0
HISTORY_TURNS = 20        # Settings.history_turns: what a request loads
TEXT = "sent a voice message (0:42). " + "Sure, here's what I heard in that note: " * 4


def _fill(store: HistoryStore, chat: ChatKey, turns: int) -> None:
    platform, chat_id, thread_id = _key(chat)
    now = time.time()
    rows = ({"platform": platform, "chat_id": chat_id, "thread_id": thread_id, "user_id": "1",
             "role": "user" if i % 2 == 0 else "assistant", "text": TEXT, "audio_seconds": None,
             "audio_tokens": 0, "input_tokens": 10, "output_tokens": 10, "created": now - (turns - i)}
            for i in range(turns))
    with store._write():
        store.db["turns"].insert_all(rows, batch_size=1000)


async def _time(fn: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


async def run(turns: int, repeats: int) -> dict[str, Any]:
    big, small = ChatKey("telegram", "100"), ChatKey("telegram", "200")
    with tempfile.TemporaryDirectory(prefix="earshot-bench-") as tmp:
        store = HistoryStore(Path(tmp) / "earshot.db")
        await store.open()
        try:
            await store.run(_fill, store, big, turns)
            for other in range(10):           # other chats' turns, as many in all as the big chat's
                await store.run(_fill, store, ChatKey("telegram", f"9{other}"), turns // 10)
            await store.run(_fill, store, small, 10)
            figures: dict[str, Any] = {}
            for label, chat in (("big", big), ("small", small)):
                ops: dict[str, Callable[[], Awaitable[Any]]] = {
                    "append": lambda c=chat: store.add_exchange(c, "1", TEXT, TEXT, Usage(25, 10, 10), 1.0),
                    "load": lambda c=chat: store.recent_turns(c, HISTORY_TURNS),
                    "usage": lambda c=chat: store.usage_today(c),
                }
                for op, fn in ops.items():
                    await _time(fn, 5)        # warm the page cache
                    xs = await _time(fn, repeats)
                    figures[f"{op}_{label}_ms"] = median(xs)
                    figures[f"{op}_{label}_p95_ms"] = sorted(xs)[int(len(xs) * 0.95) - 1]
        finally:
            await store.close()
    for op in ("append", "load", "usage"):
        print(f"  {op:>6}: {figures[f'{op}_big_ms']:.3f} ms on {turns:,} turns "
              f"(p95 {figures[f'{op}_big_p95_ms']:.3f}), {figures[f'{op}_small_ms']:.3f} ms on 10 turns")
    labels = {"append": "add_exchange", "load": f"recent_turns({HISTORY_TURNS})", "usage": "usage_today"}
    rows = [row(f"History {labels[op]} on a {turns:,}-turn chat", f"{figures[f'{op}_big_ms']:.2f} ms",
                f"{figures[f'{op}_small_ms']:.2f} ms (10-turn chat)",
                ratio(figures[f"{op}_big_ms"], figures[f"{op}_small_ms"]),
                f"< {TARGET_MS:g} ms" if op != "usage" else "—",
                figures[f"{op}_big_ms"] < TARGET_MS if op != "usage" else None)
            for op in ("append", "load", "usage")]
    return {"turns": turns, "repeats": repeats, **figures, "rows": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--full", action="store_true", help="more repeats (1000)")
    p.add_argument("--turns", type=int, default=10_000)
    args = p.parse_args(argv)
    print(f"[6] history with {args.turns:,} turns")
    result = asyncio.run(run(args.turns, 1000 if args.full else 200))
    save(NAME, result)
    return result


if __name__ == "__main__":
    main()
