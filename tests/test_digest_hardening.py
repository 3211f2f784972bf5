"""Digests are charged like any request, and listening checks access and budgets before downloading,
through the same durable, bounded job queue as answers (Telegram and DashScope stand-ins)."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from tests.test_digest_telegram import ANA, BO, CHEN, GROUP, group_running, heard, short

STRANGER = 599


def _listen_jobs(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT user_id, state FROM jobs WHERE task = 'listen' ORDER BY id").fetchall()


async def test_a_digest_over_the_budget_is_refused_before_the_model(tmp_path: Path) -> None:
    # a note is estimated at ~450 tokens, a digest at ~600: Chen may not ask for one
    async with group_running(tmp_path, user_daily_tokens=550, chat_daily_tokens=0, global_daily_tokens=0) as g:
        g.push(ANA, text="/digest on")
        await g.said(1)
        for user, hz in ((ANA, 440), (BO, 550)):
            g.push(user, kind="voice", data=short(hz))
        await g.stored(2)
        g.push(CHEN, text="/digest 24h")
        refusal = (await g.said(2))[1]["text"]
        # more than Chen's whole day: no waiting helps, the operator's setting would
        assert refusal.startswith("That would take about") and "550" in refusal, refusal
        assert "EARSHOT_USER_DAILY_TOKENS" in refusal and "midnight" not in refusal
        assert not [c for c in g.ds.calls if not c.items], "no summarising call was made"


async def test_digests_count_in_the_rate_limit(tmp_path: Path) -> None:
    async with group_running(tmp_path, user_requests_per_minute=1) as g:
        g.push(ANA, text="/digest on")
        await g.said(1)
        g.push(BO, kind="voice", data=short(440))
        await g.stored(1)
        g.push(CHEN, text="/digest 24h")
        assert heard((await g.said(2))[1]["text"]) == [440]
        g.push(CHEN, text="/digest 24h")
        slow = (await g.said(3))[2]["text"]
        assert slow.startswith("Slow down"), slow
        assert len([c for c in g.ds.calls if not c.items]) == 1


async def test_listening_skips_strangers_before_downloading_and_queues_durable_jobs(tmp_path: Path) -> None:
    async with group_running(tmp_path, allowed_users=f"{ANA},{BO}") as g:
        g.push(ANA, text="/digest on")
        await g.said(1)
        stranger = g.push(STRANGER, kind="voice", data=short(330))
        g.push(BO, kind="voice", data=short(550))
        await g.stored(1)
        fetched = [p["file_id"] for p in g.tg.called("getFile")]
        assert f"voice-{stranger}-fid" not in fetched, "a stranger's note is never downloaded"
        assert _listen_jobs(g.db) == [(str(BO), "done")], "heard as a durable job, the stranger not at all"
        assert len(g.tg.texts(GROUP)) == 1, "nothing said but the answer to /digest on"


async def test_a_burst_of_notes_is_heard_one_at_a_time(tmp_path: Path) -> None:
    async with group_running(tmp_path) as g:
        g.ds.latency = 0.2
        g.push(ANA, text="/digest on")
        await g.said(1)
        start = time.monotonic()
        for i in range(6):
            g.push(BO, kind="voice", data=short(300 + 10 * i))
        await g.stored(6)
        assert g.ds.max_in_flight == 1, "one note of a group at a time: memory stays bounded"
        assert time.monotonic() - start < 15
