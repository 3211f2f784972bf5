"""PostgreSQL as earshot's store, on a real server (tests/postgres.py starts one per test run)."""
from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from bots.doctor import check_database
from core.config import Settings
from core.errors import StorageError
from core.logs import RedactingFilter
from core.store.db import Database
from core.store.history import HistoryStore
from core.store.pg import translate
from core.store.schema import STEPS
from core.values import ChatKey, Usage
from tests.postgres import Cluster, rows


async def test_replicas_starting_together_migrate_once(postgres: Cluster) -> None:
    url = postgres.fresh()
    stores = [HistoryStore(url) for _ in range(6)]
    await asyncio.gather(*(s.open() for s in stores))       # six pools, six sessions, one advisory lock
    try:
        applied = [r["name"] for r in rows(url, "SELECT name FROM earshot_migrations ORDER BY name")]
        assert applied == [name for name, _ in STEPS]
        assert [await s.pending_migrations() for s in stores] == [[]] * 6
        chat = ChatKey("telegram", "42")
        await asyncio.gather(*(s.add_exchange(chat, "u1", f"q{i}", f"a{i}", Usage(1, 2, 3))
                               for i, s in enumerate(stores)))
        assert len(await stores[0].recent_turns(chat, 100)) == 12   # every replica's writes, in one store
        assert (await stores[3].usage_today(chat)).total == 36
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_a_transaction_commits_together_or_not_at_all(postgres: Cluster) -> None:
    db = Database(postgres.fresh())
    await db.open()
    try:
        with pytest.raises(RuntimeError):
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO seen_events (platform, event_id, created) VALUES (?, ?, ?)", "s", "1", 1)
                raise RuntimeError("stop")
        assert await db.fetch("SELECT event_id FROM seen_events") == []
        n = await db.execute("INSERT INTO seen_events (platform, event_id, created) VALUES (?, ?, ?) "
                             "ON CONFLICT DO NOTHING RETURNING event_id", "s", "2", 1)
        assert n == 1 and await db.fetchone("SELECT COUNT(*) FROM seen_events WHERE event_id LIKE '%2'") == (1,)
    finally:
        await db.close()


def test_placeholders_translate_outside_quoted_text() -> None:
    assert translate("SELECT '?', \"a?\" FROM t WHERE x = ? AND y LIKE '%a' AND z % 2 = ?") == (
        "SELECT '?', \"a?\" FROM t WHERE x = %s AND y LIKE '%%a' AND z %% 2 = %s")


async def test_a_wrong_password_is_a_clear_error_that_never_shows_it(postgres: Cluster) -> None:
    url = postgres.url().replace(postgres.password, "not-the-Password-9")
    with pytest.raises(StorageError) as caught:
        await HistoryStore(url).open()
    text = str(caught.value)
    assert "PostgreSQL" in text and "127.0.0.1" in text and "EARSHOT_DB" in text
    assert "not-the-Password-9" not in text and postgres.password not in text


def test_the_connection_string_is_a_secret_in_settings_and_logs(postgres: Cluster) -> None:
    url = postgres.url()
    settings = Settings(db_path=url)
    assert settings.db_path == url                         # not folded into a path
    assert Settings(db_path="data/x.db").db_path == Path("data/x.db")
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "connecting to %s failed", (url,), None)
    RedactingFilter(settings.secrets()).filter(record)
    assert postgres.password not in record.getMessage()


async def test_doctor_checks_a_postgresql_database(postgres: Cluster) -> None:
    ok = await check_database(Settings(db_path=postgres.fresh()))
    assert ok.ok and "PostgreSQL" in ok.detail and "schema up to date" in ok.detail
    assert postgres.password not in ok.detail
    down = f"postgresql://earshot:{postgres.password}@127.0.0.1:1/earshot"
    bad = await check_database(Settings(db_path=down))
    assert bad.ok is False and "127.0.0.1:1" in bad.detail and postgres.password not in bad.detail


def test_earshot_doctor_reports_the_database_without_its_password(postgres: Cluster, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "EARSHOT_DB": postgres.fresh(),
           "EARSHOT_METRICS_PORT": "0"}
    done = subprocess.run([str(Path(sys.executable).with_name("earshot")), "doctor"], env=env,
                          capture_output=True, text=True, timeout=120)
    out = done.stdout + done.stderr
    assert "✓ database" in out and "PostgreSQL" in out, out
    assert postgres.password not in out


async def test_two_replicas_due_together_post_one_digest(postgres: Cluster, model, tmp_path: Path) -> None:
    from core.app import Earshot
    from core.flow.digest import parse_digest
    from core.store.digest_store import VoiceNote
    from tests.conftest import settings_for

    settings = settings_for(model, tmp_path, retry_budget=2, db_path=postgres.fresh())
    group = ChatKey("telegram", "-100777")
    start = 1_900_000_000.0 - 1_900_000_000.0 % 86400 + 8 * 3600          # 08:00 UTC
    delivered: list[str] = []

    async def deliver(chat: ChatKey, text: str) -> None:
        delivered.append(text)

    async with Earshot.build(settings) as one, Earshot.build(settings) as two:
        for a in (one, two):
            a.digests.clock = lambda: start + 3600 + 1                     # both just past 09:00
        await one.digests.respond(group, parse_digest("daily 09:00"))
        await one.digests.store.update(group.platform, group.chat_id, start, scheduled_since=start)
        await one.digests.store.add_note(VoiceNote(group.platform, group.chat_id, start, 5.0, "heard 440Hz@0.5s"),
                                         start)
        await asyncio.gather(one.digests.tick("telegram", deliver), two.digests.tick("telegram", deliver))
        await two.digests.tick("telegram", deliver)                        # and once more, after the first
        await one.digests.tick("telegram", deliver)
    assert len(delivered) == 1 and "440Hz" in delivered[0]
