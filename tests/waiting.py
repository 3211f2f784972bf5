"""Waiting on what the stand-ins and the bots do, instead of sleeping a guessed time."""
from __future__ import annotations

import asyncio
import inspect
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.store.jobs import MAX_DELIVERIES

POLL = 0.02     # how often a condition is looked at again


async def until(predicate: Callable[[], Any], within: float = 15.0, what: str = "") -> Any:
    """The first truthy value `predicate` returns (awaited, if it returns an awaitable); the test fails if
    none comes within `within` seconds."""
    end = time.monotonic() + within
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"timed out waiting{' for ' + what if what else ''}")
        await asyncio.sleep(POLL)


def until_sync(predicate: Callable[[], Any], within: float = 20.0, what: str = "") -> Any:
    """`until` for plain (non-async) tests driving a child process or a stand-in in a thread."""
    end = time.monotonic() + within
    while not (value := predicate()):
        if time.monotonic() >= end:
            raise AssertionError(f"timed out waiting{' for ' + what if what else ''}")
        time.sleep(POLL)
    return value


def job_rows(db: Path) -> list[dict[str, Any]]:
    """The jobs table as another process sees it: only what was committed."""
    if isinstance(db, str) and db.startswith("postgresql://"):
        from tests.postgres import rows
        return rows(db, "SELECT * FROM jobs ORDER BY id")
    if not Path(db).exists():            # connecting would create it
        return []
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM jobs ORDER BY id")]
    except sqlite3.OperationalError:      # no jobs table yet: nothing submitted
        return []
    finally:
        conn.close()


def settled(db: Path, at_least: int = 0) -> list[dict[str, Any]] | bool:
    """Every job is finished and its outcome delivered (or given up on): nothing more will come of them.
    Returns the rows (True when there are none and none are expected); falsy while work is left."""
    rows = job_rows(db)
    if len(rows) < at_least:
        return False
    done = all(r["state"] in ("done", "failed", "expired")
               and (r["delivered"] is not None or r["delivery_attempts"] >= MAX_DELIVERIES) for r in rows)
    return (rows or True) if done else False
