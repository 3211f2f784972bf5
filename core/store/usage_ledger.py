"""The usage ledger: every token spent, as rows of the `turns` table (a chat's words and what they cost share
a row; spending with no words, like listening or a failed request, is a row with none). Budgets, /usage and
the metrics read their sums here.

The `*_in(q, …)` functions take the database or one of its transactions (core.store.db), so an answer's words and
its cost go in one transaction.
"""
from __future__ import annotations

from core.store.db import Database, Queries
from core.values import ChatKey, Usage

DAY = 86400.0
# platforms whose spending no daily budget counts (core.flow.access.EXEMPT_PLATFORMS): the terminal
OUTSIDE_BUDGETS = ("cli",)
TOTAL = "COALESCE(SUM(COALESCE(audio_tokens,0) + COALESCE(input_tokens,0) + COALESCE(output_tokens,0)), 0)"
_INSERT = ("INSERT INTO turns (platform, chat_id, thread_id, user_id, role, text, audio_seconds, audio_tokens, "
           "input_tokens, output_tokens, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def day_start(now: float) -> float:
    """UTC midnight before `now`: budgets and /usage count from there."""
    return now - now % DAY


async def insert_in(q: Queries, chat: ChatKey, user_id: str | None, role: str, text: str, usage: Usage, created: float,
              audio_seconds: float | None = None) -> None:
    """One row: a turn (user/assistant) or a cost with no words (listen, digest, spent)."""
    await q.execute(_INSERT, chat.platform, chat.chat_id, chat.thread_id or "", user_id or "", role, text,
                    audio_seconds, usage.audio_tokens, usage.input_tokens, usage.output_tokens, created)


async def exchange_in(q: Queries, chat: ChatKey, user_id: str | None, user_text: str, answer: str, usage: Usage,
                      created: float, audio_seconds: float | None = None) -> None:
    """A user turn and the answer to it (with what it cost), in that order: one statement, one round trip."""
    key = (chat.platform, chat.chat_id, chat.thread_id or "", user_id or "")
    await q.execute(_INSERT + ", (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    *key, "user", user_text, audio_seconds, 0, 0, 0, created,
                    *key, "assistant", answer, None, usage.audio_tokens, usage.input_tokens, usage.output_tokens,
                    created)


async def usage_in(q: Queries, since: float, platform: str, chat_id: str) -> Usage:
    """A chat's tokens (all its threads) since `since`, by kind."""
    row = await q.fetchone(
        "SELECT COALESCE(SUM(audio_tokens),0), COALESCE(SUM(input_tokens),0), COALESCE(SUM(output_tokens),0) "
        "FROM turns WHERE platform = ? AND chat_id = ? AND created >= ?", platform, chat_id, since)
    return Usage(int(row[0]), int(row[1]), int(row[2])) if row else Usage()   # PostgreSQL sums are numeric


async def seconds_in(q: Queries, since: float, platform: str, chat_id: str) -> float:
    """Seconds of audio a chat had heard (all its threads) since `since`: what a recognizer bills by."""
    row = await q.fetchone("SELECT COALESCE(SUM(audio_seconds),0) FROM turns WHERE platform = ? AND chat_id = ? "
                           "AND created >= ?", platform, chat_id, since)
    return float(row[0]) if row else 0.0


async def totals_in(q: Queries, since: float, platform: str, chat_id: str, user_id: str | None) -> tuple[int, int, int]:
    """Tokens used since `since`: by the user (on this platform), in the chat, by everyone.

    One query, not three: every request checks its budgets (at the door, when admitted, before the model is
    asked), and the everyone sum already reads each of today's rows that the other two would."""
    tokens = "COALESCE(audio_tokens,0) + COALESCE(input_tokens,0) + COALESCE(output_tokens,0)"
    user = f"COALESCE(SUM(CASE WHEN platform = ? AND user_id = ? THEN {tokens} END), 0)" if user_id else "0"
    # everyone in the chats: the terminal's own use (earshot transcribe…) is the operator's, outside the budgets
    outside = ", ".join("?" * len(OUTSIDE_BUDGETS))
    row = await q.fetchone(
        f"SELECT {user}, COALESCE(SUM(CASE WHEN platform = ? AND chat_id = ? THEN {tokens} END), 0), "
        f"COALESCE(SUM(CASE WHEN platform NOT IN ({outside}) THEN {tokens} END), 0) FROM turns WHERE created >= ?",
        *([platform, user_id] if user_id else []), platform, chat_id, *OUTSIDE_BUDGETS, since)
    if not row:
        return 0, 0, 0
    return int(row[0]), int(row[1]), int(row[2])        # PostgreSQL sums are numeric


async def platform_total_in(q: Queries, since: float, platform: str) -> int:
    """Tokens used on one platform since `since` (the terminal's, for admins' /usage)."""
    row = await q.fetchone(f"SELECT {TOTAL} FROM turns WHERE created >= ? AND platform = ?", since, platform)
    return int(row[0]) if row else 0


async def top_in(q: Queries, since: float, column: str, limit: int) -> list[tuple[str, str, int]]:
    """The biggest spenders since `since` by `column` (user_id or chat_id): (platform, id, tokens)."""
    rows = await q.fetch(
        f"SELECT platform, {column}, {TOTAL} AS total FROM turns WHERE created >= ? AND COALESCE({column}, '') != '' "
        f"GROUP BY platform, {column} HAVING {TOTAL} > 0 ORDER BY total DESC LIMIT ?", since, limit)
    return [(p, i, int(t)) for p, i, t in rows]


class UsageLedger:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, chat: ChatKey, user_id: str | None, usage: Usage, *, role: str, now: float,
                     audio_seconds: float | None = None) -> None:
        """Tokens spent with no words to keep (listening, digests, a failed request)."""
        await insert_in(self.db, chat, user_id, role, "", usage, now, audio_seconds)

    async def today(self, chat: ChatKey, now: float) -> Usage:
        """The chat's tokens since UTC midnight."""
        return await usage_in(self.db, day_start(now), chat.platform, chat.chat_id)
