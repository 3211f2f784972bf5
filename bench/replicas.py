"""9. Replicas: what 1, 2 and 3 `earshot telegram` replicas on one PostgreSQL database answer, against one
process on SQLite, on one machine.

For each setup the replicas (real child processes) start together on a fresh store, against the Telegram
Bot API and DashScope stand-ins. With long polling they elect one poller, which stores every job; every
replica may work jobs. In webhook mode (`:webhook`) Telegram's POSTs reach the replicas in turn through a
round-robin balancer, as behind a load balancer. After a warm-up, for each model latency L a burst of N
chats each send a 5 s voice note at the same instant.

Measured: notes per minute (N ÷ the time from the first note to the last answer), each note's latency
(sent → answered: p50, p90, p99, max), the model calls in flight at most, and CPU per note: the replicas
with their ffmpeg children, the PostgreSQL server, and this process (the stand-ins).
Ideal:    L × ⌈N / (replicas × limit)⌉ — each replica has its own cap on model calls in flight
          (EARSHOT_CONCURRENCY, default 16).

    python -m bench.replicas [--n 200] [--latency 0.5,2] [--path re-encode|pass-through]
                             [--setups sqlite:1,postgres:1,postgres:2,postgres:3,postgres:3:webhook]

--path (bench.common.PATHS): re-encode (default) sends plain voice notes, which the chat model hears as MP3
made by ffmpeg; pass-through captions them /transcribe with the recognizer, which takes them as they are.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import resource
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil

from bench.common import PATHS, bench_env, ratio, row, save, voice_note
from bench.soak import API_KEY, WEBHOOK_SECRET, Balancer, Replica, free_port, shared_store, stand_in_env
from bench.telegram_harness import StampingDashScope, StampingTelegram
from core.config import Settings
from tests.fakes.server import Served

NAME = "replicas"
NOTE_SECONDS = 5.0
SETUPS = [("sqlite", 1, "polling"), ("postgres", 1, "polling"), ("postgres", 2, "polling"), ("postgres", 3, "polling"),
          ("postgres", 2, "webhook"), ("postgres", 3, "webhook")]
ANSWERED = b": answered message "       # bots/telegram/jobs.py logs it for each answer a replica delivers


def server_cpu_s(target: str) -> float:
    """CPU seconds of the PostgreSQL server serving `target` (postmaster, live backends, and exited ones);
    0 for SQLite, whose work is inside the replicas."""
    if not target.startswith("postgresql://"):
        return 0.0
    port = int(target.split("@", 1)[1].split(":")[1].split("/")[0])
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            server = psutil.Process(conn.pid)
            t = server.cpu_times()
            total = t.user + t.system + t.children_user + t.children_system
            for child in server.children():
                with contextlib.suppress(psutil.Error):
                    c = child.cpu_times()
                    total += c.user + c.system
            return total
    return 0.0


def own_cpu_s() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


class Setup:
    """Replicas on one store, with their stand-ins, for a setup's bursts."""

    def __init__(self, tg: StampingTelegram, ds: StampingDashScope, replicas: list[Replica], target: str,
                 caption: str | None = None) -> None:
        self.tg, self.ds, self.replicas, self.target, self.caption = tg, ds, replicas, target, caption
        self._next_chat = 1000

    def cpu(self) -> tuple[float, float, float]:
        return sum(r.cpu_s() for r in self.replicas), server_cpu_s(self.target), own_cpu_s()

    def answered(self) -> list[int]:
        """Answers each replica has delivered so far (each logs "answered message … (job n)")."""
        return [r.log.read_bytes().count(ANSWERED) for r in self.replicas]

    async def burst(self, n: int, note: bytes, timeout: float) -> dict[str, Any]:
        """n new chats each send `note` at once; waits until every one is answered."""
        chats = list(range(self._next_chat, self._next_chat + n))
        self._next_chat += n + 1000
        self.tg.expecting(set(chats))
        self.ds.max_in_flight = 0
        calls_before = len(self.ds.calls)
        cpu_before = self.cpu()
        answered_before = self.answered()
        started = time.monotonic()
        sent: dict[int, float] = {}
        for chat in chats:
            self.tg.push(chat, kind="voice", data=note, duration=int(NOTE_SECONDS), mime="audio/ogg",
                         caption=self.caption)
            sent[chat] = time.monotonic()
        try:
            await asyncio.wait_for(self.tg.all_answered.wait(), timeout)
        except TimeoutError:
            missing = sorted(set(chats) - self.tg.answered.keys())
            raise RuntimeError(f"{len(missing)} of {n} chats unanswered after {timeout:.0f} s; replica logs: "
                               f"{', '.join(str(r.log) for r in self.replicas)}") from None
        wall = max(self.tg.answered[c] for c in chats) - started
        replicas_cpu, server_cpu, own_cpu = (a - b for a, b in zip(self.cpu(), cpu_before, strict=True))
        await asyncio.sleep(0.5)       # a replica logs an answer just after Telegram took it
        by_replica = [a - b for a, b in zip(self.answered(), answered_before, strict=True)]
        latencies = sorted(self.tg.answered[c] - sent[c] for c in chats)
        failed = [c for c in chats if not any(mark in self.tg.answers[c] for mark in ("heard", "[fake-asr]"))]
        return {"wall_s": round(wall, 3), "notes_per_minute": round(60 * n / wall, 1),
                "latency_s": {f"p{q}": round(_percentile(latencies, q / 100), 3) for q in (50, 90, 99)}
                | {"max": round(latencies[-1], 3)},
                "failed": len(failed), "first_failure": self.tg.answers[failed[0]] if failed else None,
                "model_calls": len(self.ds.calls) - calls_before, "max_in_flight": self.ds.max_in_flight,
                "answered_by_replica": by_replica,
                "replicas_cpu_s": round(replicas_cpu, 2), "postgres_cpu_s": round(server_cpu, 2),
                "standins_cpu_s": round(own_cpu, 2),
                "cpu_ms_per_note": round(1000 * (replicas_cpu + server_cpu) / n, 1)}


def _percentile(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


@contextlib.asynccontextmanager
async def running(db: str, count: int, mode: str, directory: Path,
                  env_extra: dict[str, str], path: str = "re-encode") -> AsyncIterator[Setup]:
    path_env, caption = PATHS[path]
    ports = [free_port() for _ in range(count)]
    balancer = Balancer(ports)
    with shared_store(db, directory) as target:
        tg, ds = StampingTelegram(), StampingDashScope(api_key=API_KEY, inspect=False, latency=0.0)
        async with Served(tg.app) as tgs, Served(ds.app) as dss, Served(balancer.app) as lb:
            env = stand_in_env(tg, tgs.url, dss.url, target) | bench_env() | env_extra | path_env
            args: list[tuple[str, ...]] = [()] * count
            if mode == "webhook":    # every replica tells Telegram the balancer's address, with the shared secret
                env |= {"TELEGRAM_WEBHOOK_SECRET": WEBHOOK_SECRET}
                args = [("--webhook-url", f"{lb.url}/hook", "--port", str(port), "--listen", "127.0.0.1")
                        for port in ports]
            replicas = [Replica(env, directory / f"replica-{i}.log", i, args[i])
                        for i in range(count)]
            try:
                await asyncio.gather(*(r.start() for r in replicas))
                yield Setup(tg, ds, replicas, target, caption)
            finally:
                await asyncio.gather(*(r.stop() for r in replicas))
                await balancer.close()


async def run(n: int, latencies: list[float], setups: list[tuple[str, int, str]],
              env: dict[str, str], path: str = "re-encode") -> dict[str, Any]:
    limit = int(env.get("EARSHOT_CONCURRENCY") or Settings.model_fields["global_concurrency"].default)
    note = voice_note(NOTE_SECONDS, "opus24").read_bytes()
    cases = []
    with tempfile.TemporaryDirectory(prefix="earshot-replicas-") as tmp:
        for number, (db, count, mode) in enumerate(setups):
            here = Path(tmp) / f"{number}-{db}-{count}-{mode}"     # a store and logs of its own
            here.mkdir()
            async with running(db, count, mode, here, env, path) as setup:
                await setup.burst(8 * count, note, timeout=120)    # warm-up: imports, pools, ffmpeg, each replica
                for latency in latencies:
                    setup.ds.latency = latency
                    ideal = latency * math.ceil(n / (count * limit))
                    got = await setup.burst(n, note, timeout=ideal * 10 + 120)
                    case = {"db": db, "replicas": count, "mode": mode, "n": n, "latency": latency,
                            "limit": limit, "ideal_s": ideal, **got}
                    cases.append(case)
                    lat = got["latency_s"]
                    print(f"  {count} on {db:<8} {mode:<7} L={latency:g}s: {got['notes_per_minute']:7.1f} notes/min "
                          f"(wall {got['wall_s']:.2f} s, ideal {ideal:.2f} s; latency p50 {lat['p50']:.2f} "
                          f"p90 {lat['p90']:.2f} p99 {lat['p99']:.2f} s; in flight ≤ {got['max_in_flight']}; "
                          f"CPU {got['cpu_ms_per_note']:.0f} ms/note, PostgreSQL {got['postgres_cpu_s']:.1f} s; "
                          f"answered by replica {got['answered_by_replica']}; "
                          f"failed {got['failed']})", flush=True)
    # the baseline: one process on SQLite, else one on PostgreSQL (when the run has no SQLite setup)
    ones = [c for c in cases if c["replicas"] == 1 and c["mode"] == "polling"]
    base = {c["latency"]: c for c in sorted(ones, key=lambda c: c["db"] == "sqlite")}
    rows = []
    for c in cases:
        b = base.get(c["latency"])
        rows.append(row(f"Replicas: {c['replicas']} on {'PostgreSQL' if c['db'] == 'postgres' else 'SQLite'}"
                        f"{', webhook' if c['mode'] == 'webhook' else ''}, {c['n']} notes at once, "
                        f"L={c['latency']:g} s{'' if path == 're-encode' else ', ' + path}",
                        f"{c['notes_per_minute']:.0f} notes/min (p50 {c['latency_s']['p50']:.1f} s, "
                        f"p99 {c['latency_s']['p99']:.1f} s)",
                        f"{b['notes_per_minute']:.0f} notes/min (1 on "
                        f"{'SQLite' if b['db'] == 'sqlite' else 'PostgreSQL'})" if b else "—",
                        ratio(c["notes_per_minute"], b["notes_per_minute"]) if b else None, "—", None))
    return {"note_seconds": NOTE_SECONDS, "limit": limit, "path": path, "cases": cases, "rows": rows}


def _setups(s: str) -> list[tuple[str, int, str]]:
    """"postgres:3:webhook,sqlite:1" → [("postgres", 3, "webhook"), ("sqlite", 1, "polling")]"""
    out = []
    for item in filter(None, s.split(",")):
        db, count, *mode = item.split(":")
        out.append((db, int(count), mode[0] if mode else "polling"))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--full", action="store_true", help="bursts of 500 notes")
    p.add_argument("--n", type=int, default=None, help="notes in each burst, one per chat (default 200)")
    p.add_argument("--latency", type=lambda s: [float(x) for x in s.split(",") if x], default=[0.5, 2.0])
    p.add_argument("--path", choices=list(PATHS), default="re-encode")
    p.add_argument("--setups", type=_setups, default=SETUPS,
                   help="db:replicas[:webhook],… (db: sqlite or postgres; long polling unless :webhook)")
    args = p.parse_args(argv)
    args.n = args.n or (500 if args.full else 200)
    env = {"EARSHOT_REQUEST_TIMEOUT": "120"}
    print(f"[9] replicas: bursts of {args.n} {NOTE_SECONDS:g} s voice notes, "
          f"{', '.join(f'{c} on {db} ({mode})' for db, c, mode in args.setups)}")
    result = asyncio.run(run(args.n, args.latency, args.setups, env, args.path))
    save(NAME if args.path == "re-encode" else f"{NAME}-{args.path}", result)
    return result


if __name__ == "__main__":
    main()
