"""Old rows don't pile up: the hourly tick prunes chat history, finished jobs and seen events."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from core.app import Earshot
from core.store.jobs import JobState, JobStore, NewJob
from core.values import Audio, ChatKey, Reply, Request, Task
from tests.conftest import settings_for
from tests.fakes.dashscope import FakeDashScope, tone_audio

DAY = 86400.0
CHAT = ChatKey("telegram", "4242")


def _age(db: Path, days: float) -> None:
    """Move every row `days` into the past, as if the bot had run that long ago."""
    with sqlite3.connect(db) as conn:
        for table, columns in (("turns", ["created"]), ("recent_audio", ["created"]),
                               ("seen_events", ["created"]), ("jobs", ["created", "updated"])):
            conn.execute(f"UPDATE {table} SET " + ", ".join(f"{c} = {c} - ?" for c in columns),
                         [days * DAY] * len(columns))


def _count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


async def _some_of_everything(a: Earshot, n: int) -> None:
    """An answer (turns), the chat's latest audio, a seen event and a delivered job."""
    await a.assistant.handle(Request(CHAT, Task.TRANSCRIBE, Audio(tone_audio((440, 1.0), fmt="wav")), user_id="7"))
    await a.history.remember_audio(CHAT, f"file-{n}")
    await a.history.claim_event("slack", f"Ev{n}")
    jobs = JobStore(a.history)
    job, _ = await jobs.add(NewJob(key=f"m{n}", chat=CHAT, task=Task.TRANSCRIBE, message_ref=str(n)))
    await jobs.finish(job.id, JobState.DONE, Reply("done", Task.TRANSCRIBE))
    await jobs.mark_delivered(job.id)


async def test_the_hourly_tick_prunes_history_jobs_and_seen_events(model: FakeDashScope, tmp_path: Path) -> None:
    db = tmp_path / "earshot.db"
    settings = settings_for(model, tmp_path, history_days=10)
    async with Earshot.build(settings) as a:
        await _some_of_everything(a, 1)
        _age(db, 12)                       # past the 10 days of history and the week jobs and events keep
        await _some_of_everything(a, 2)
        assert [_count(db, t) for t in ("turns", "seen_events", "jobs")] == [4, 2, 2]

        async def deliver(chat: ChatKey, text: str) -> None:
            raise AssertionError("no digest is due")
        await a.digests.tick("telegram", deliver)
        assert [_count(db, t) for t in ("turns", "seen_events", "jobs")] == [2, 1, 1], "only today's are kept"
        assert await a.history.latest_audio(CHAT) == "file-2"
