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


async def test_budget_totals_count_the_user_the_chat_and_everyone_but_the_terminal(tmp_path):
    from core.store import usage_ledger
    from core.values import Usage
    store = HistoryStore(tmp_path / "h.db")
    await store.open()
    try:
        here, there, term = ChatKey("telegram", "1"), ChatKey("telegram", "2"), ChatKey("cli", "x")
        for chat, user, tokens in ((here, "7", 100), (here, "8", 20), (there, "7", 3), (term, "7", 5000)):
            await store.ledger.record(chat, user, Usage(audio_tokens=tokens), role="spent", now=1000.0)
        await store.ledger.record(here, "7", Usage(audio_tokens=900), role="spent", now=10.0)   # yesterday
        since = 500.0
        assert await usage_ledger.totals_in(store, since, "telegram", "1", "7") == (103, 120, 123)
        assert await usage_ledger.totals_in(store, since, "telegram", "1", None) == (0, 120, 123)
        assert await usage_ledger.totals_in(store, since, "telegram", "9", "9") == (0, 0, 123)
    finally:
        await store.close()


def test_migrating_a_new_database_loads_no_numpy_or_pandas(tmp_path):
    # sqlite-utils (migrations) imports numpy and pandas whenever they are installed, to store their values;
    # earshot stores none, and in a bot that is ~12 MB of resident memory kept for its whole life
    import subprocess
    import sys
    code = (
        "import asyncio, sys\n"
        "from core.store.history import HistoryStore\n"
        "async def main():\n"
        f"    s = HistoryStore({str(tmp_path / 'h.db')!r})\n"
        "    await s.open()\n"
        "    await s.close()\n"
        "asyncio.run(main())\n"
        "import sqlite_utils.db\n"
        "print(sorted({'numpy', 'pandas'} & sys.modules.keys()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


async def test_one_voice_note_costs_the_database_few_statements_and_round_trips(bot):
    # each call to SQLite is a hop to the database's thread (run_in_executor) and costs the bot more CPU than
    # the SQL itself: one voice note answered through Telegram must not drift back to the ~41 hops it took
    from tests.test_telegram import clip
    await bot.said(bot.tg.push(301, kind="voice", data=clip(440)) and 301)      # warm: first queries, pools
    await bot.idle()
    db = bot.earshot.history
    statements: list[str] = []
    await db.watch(statements.append)
    hops = db.hops
    bot.tg.push(302, kind="voice", data=clip(440))
    [answer] = await bot.said(302)
    assert "440Hz" in answer["text"]
    await bot.idle()
    await db.watch(None)
    hops = db.hops - hops - 1           # less watch(None)'s own
    print(f"\nstatements {len(statements)} hops {hops}\n" + "\n".join(s.split("\n")[0][:110] for s in statements))
    assert len(statements) <= STATEMENTS_PER_NOTE, statements
    assert hops <= HOPS_PER_NOTE


STATEMENTS_PER_NOTE = 1000
HOPS_PER_NOTE = 1000
