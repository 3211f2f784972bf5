"""Waiting on what the stand-ins and the bots do, instead of sleeping a guessed time."""
from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


async def until(predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
    """The first truthy value `predicate` returns; the test fails if none comes within `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if (value := predicate()):
            return value
        await asyncio.sleep(0.02)
    raise AssertionError("timed out waiting")


def job_rows(db: Path) -> list[dict[str, Any]]:
    """The jobs table as another process sees it: only what was committed."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM jobs ORDER BY id")]
    finally:
        conn.close()
