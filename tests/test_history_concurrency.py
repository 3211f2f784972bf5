"""Several processes opening one database at the same moment (the Telegram bot, the Slack app, the CLI)."""
from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from core.store.history import HistoryStore, migrations
from core.values import ChatKey, Usage

OPENERS = 8


def _open_at_once(path: Path) -> list[BaseException]:
    """OPENERS threads, each with its own connection (as separate processes have), open `path` together."""
    start = threading.Barrier(OPENERS)
    errors: list[BaseException] = []

    async def one(i: int) -> None:
        store = HistoryStore(path)
        start.wait()
        try:
            await store.open()
            await store.add_exchange(ChatKey("telegram", str(i)), str(i), "hi", "hello", Usage(1, 1, 1))
        finally:
            await store.close()

    def run(i: int) -> None:
        try:
            asyncio.run(one(i))
        except BaseException as err:   # collected: the assertion says which
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(OPENERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


@pytest.mark.parametrize("rounds", range(3))
def test_fresh_database_opened_by_many_at_once(tmp_path: Path, rounds: int) -> None:
    path = tmp_path / "earshot.db"
    assert _open_at_once(path) == []
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM turns").fetchone()[0] == 2 * OPENERS
        applied = db.execute("SELECT COUNT(*) FROM _sqlite_migrations").fetchone()[0]
    assert applied >= 4, "each migration recorded once"


def test_older_database_migrated_by_many_at_once(tmp_path: Path) -> None:
    import sqlite_utils
    path = tmp_path / "earshot.db"
    db = sqlite_utils.Database(path)
    migrations.apply(db, stop_before="m004_jobs")          # a file from an earlier version
    db.close()
    assert _open_at_once(path) == []
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
