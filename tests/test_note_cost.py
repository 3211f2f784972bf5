"""What one voice note costs earshot's own code: the settings a note reads work on a database made new."""
from __future__ import annotations

from core.store.history import HistoryStore
from core.values import ChatKey


async def test_a_new_database_knows_the_spoken_language(tmp_path):
    # every transcript by the recognizer reads the chat's /spoken: on a database made new, it must exist
    store = HistoryStore(tmp_path / "h.db")
    await store.open()
    try:
        chat = ChatKey("telegram", "1")
        assert await store.settings.spoken(chat) is None
        await store.settings.set_spoken(chat, "de")
        assert await store.settings.spoken(chat) == "de"
    finally:
        await store.close()
