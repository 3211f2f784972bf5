"""Per-chat history in SQLite: order, isolation, reset, usage, recent audio, events, concurrency."""
from __future__ import annotations

import asyncio
import os
import stat

import pytest

from core.store.history import HistoryStore
from core.values import ChatKey, Usage

A = ChatKey("telegram", "1")
A_TOPIC = ChatKey("telegram", "1", "7")
B = ChatKey("slack", "1")


@pytest.fixture
async def store(tmp_path):
    s = HistoryStore(tmp_path / "h.db")
    await s.open()
    yield s
    await s.close()


async def test_turns_come_back_in_order_per_chat(store):
    for i in range(3):
        await store.add_exchange(A, "u", f"q{i}", f"a{i}", Usage(1, 2, 3))
    await store.add_exchange(B, "u", "other", "chat", Usage())
    await store.add_exchange(A_TOPIC, "u", "topic", "turn", Usage())
    turns = await store.recent_turns(A, 4)
    assert [(t.role, t.text) for t in turns] == [("user", "q1"), ("assistant", "a1"),
                                                 ("user", "q2"), ("assistant", "a2")]
    assert [t.text for t in await store.recent_turns(A_TOPIC, 10)] == ["topic", "turn"]


async def test_reset_clears_words_but_keeps_usage(store):
    await store.add_exchange(A, "u", "secret plans", "noted", Usage(10, 20, 30))
    await store.reset(A)
    assert await store.recent_turns(A, 10) == []
    assert await store.usage_today(A) == Usage(10, 20, 30)
    texts = await store.run(lambda: [r[0] for r in store.db.execute("SELECT text FROM turns").fetchall()])
    assert "secret plans" not in texts


async def test_recent_audio_and_events(store):
    assert await store.latest_audio(A) is None
    await store.remember_audio(A, "file-1")
    await store.remember_audio(A, "file-2")
    assert await store.latest_audio(A) == "file-2"
    assert await store.latest_audio(A_TOPIC) is None
    assert await store.claim_event("slack", "Ev1") is True
    assert await store.claim_event("slack", "Ev1") is False


async def test_survives_reopen_and_file_is_private(tmp_path):
    path = tmp_path / "sub" / "h.db"
    s = HistoryStore(path)
    await s.open()
    await s.claim_event("slack", "Ev1")
    await s.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    s2 = HistoryStore(path)
    await s2.open()  # migrations already applied: a no-op
    assert await s2.claim_event("slack", "Ev1") is False
    await s2.close()


async def test_two_processes_worth_of_writers(tmp_path):
    path = tmp_path / "h.db"
    stores = [HistoryStore(path), HistoryStore(path)]
    for s in stores:
        await s.open()
    await asyncio.gather(*(s.add_exchange(A, "u", f"q{i}", "a", Usage(1, 0, 0)) for i in range(20) for s in stores))
    assert (await stores[0].usage_today(A)).audio_tokens == 40
    for s in stores:
        await s.close()
