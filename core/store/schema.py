"""The database's tables, as numbered migrations applied in order; core.store.db applies them, on either engine.

Each migration describes its tables once, through a small builder: on SQLite it becomes sqlite-utils calls
(the same tables and index names as always, recorded in sqlite-utils' migrations table), on PostgreSQL the
same columns with PostgreSQL's types. Each store in core.store keeps its own SQL (history, jobs, digest_store,
answer_cache, usage_ledger, seen_events, chat_settings); this is only where the tables come from.
"""
from __future__ import annotations

import functools
import sqlite3
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import sqlite_utils
    from sqlite_utils.migrations import Migrations


class Builder(Protocol):
    def table(self, name: str, columns: Mapping[str, type], *, pk: str | tuple[str, ...],
              not_null: Iterable[str] = (), defaults: Mapping[str, object] | None = None) -> None: ...

    def index(self, table: str, columns: list[str], *, unique: bool = False) -> None: ...

    def column(self, table: str, name: str, kind: type) -> None: ...


Step = Callable[[Builder], None]
STEPS: list[tuple[str, Step]] = []          # (name, step) in order: what both engines apply


class SqliteBuilder:
    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def table(self, name: str, columns: Mapping[str, type], *, pk: str | tuple[str, ...],
              not_null: Iterable[str] = (), defaults: Mapping[str, object] | None = None) -> None:
        self.db.table(name).create(dict(columns), pk=pk, not_null=set(not_null),
                                   defaults=dict(defaults) if defaults else None)

    def index(self, table: str, columns: list[str], *, unique: bool = False) -> None:
        self.db.table(table).create_index(columns, unique=unique)

    def column(self, table: str, name: str, kind: type) -> None:
        self.db.table(table).add_column(name, kind)


SET = "earshot"                             # the SQLite record, under the names files already carry
RECORD = "_sqlite_migrations"                # where sqlite-utils keeps it


def step(fn: Step) -> Step:
    STEPS.append((fn.__name__, fn))
    return fn


def load_sqlite_utils() -> types.ModuleType:
    """sqlite-utils, loaded without numpy and pandas: it imports them whenever they are installed, to store
    their values, which earshot never does. In a bot that would be ~12 MB of resident memory (numpy alone)
    kept for its whole life, loaded because a migration ran (a new file, or an upgrade). Hidden only while
    sqlite-utils loads (a thread importing numpy at that very moment would be refused it: nothing in earshot
    does), and only when not loaded already."""
    if "sqlite_utils" in sys.modules:
        return sys.modules["sqlite_utils"]
    hidden = [name for name in ("numpy", "pandas") if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]   # None in sys.modules: the import fails
    try:
        import sqlite_utils
    finally:
        for name in hidden:
            if sys.modules.get(name, ...) is None:
                del sys.modules[name]
    return sqlite_utils


@functools.cache
def sqlite_migrations() -> Migrations:
    """The steps as sqlite-utils migrations. Built when first needed: importing sqlite-utils costs a one-shot
    command ~25 ms, and a file that is up to date (`sqlite_pending`) needs none of it."""
    load_sqlite_utils()
    from sqlite_utils.migrations import Migrations

    record = Migrations(SET)
    for name, fn in STEPS:
        record(name=name)(_on_sqlite(fn))
    return record


def _on_sqlite(fn: Step) -> Callable[[sqlite_utils.Database], None]:
    def apply(db: sqlite_utils.Database) -> None:
        fn(SqliteBuilder(db))
    return apply


def sqlite_pending(conn: sqlite3.Connection) -> bool:
    """True when the SQLite file lacks a step (read in plain SQL from sqlite-utils' record)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (RECORD,)).fetchone() is None:
        return bool(STEPS)
    done = {row[0] for row in conn.execute(f"SELECT name FROM {RECORD} WHERE migration_set = ?", (SET,))}
    return any(name not in done for name, _ in STEPS)


def __getattr__(name: str) -> Migrations:
    if name == "migrations":                 # core.store.schema.migrations, built on first use
        return sqlite_migrations()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@step
def m001_initial(db: Builder) -> None:
    db.table("turns", {
        "id": int, "platform": str, "chat_id": str, "thread_id": str, "user_id": str,
        "role": str, "text": str, "audio_seconds": float,
        "audio_tokens": int, "input_tokens": int, "output_tokens": int, "created": float,
    }, pk="id", not_null={"platform", "chat_id", "thread_id", "role", "text", "created"})
    db.index("turns", ["platform", "chat_id", "thread_id", "id"])
    db.index("turns", ["created"])
    db.table("recent_audio", {"platform": str, "chat_id": str, "thread_id": str, "ref": str, "created": float},
             pk=("platform", "chat_id", "thread_id"))
    db.table("seen_events", {"platform": str, "event_id": str, "created": float}, pk=("platform", "event_id"))


@step
def m002_digests(db: Builder) -> None:
    """Group digests: which chats opted in and when to post, and the voice notes heard there."""
    db.table("digest_chats", {
        "platform": str, "chat_id": str, "enabled": int, "daily": str, "tz": str, "post_thread": str,
        "scheduled_since": float, "last_scheduled": float, "last_digest": float, "last_note": int,
        "updated": float,
    }, pk=("platform", "chat_id"), not_null={"enabled"}, defaults={"enabled": 0, "daily": "", "tz": "UTC",
                                                                   "post_thread": "", "last_note": 0})
    db.table("voice_notes", {
        "id": int, "platform": str, "chat_id": str, "thread_id": str, "source_id": str, "user_id": str,
        "user_name": str, "sent": float, "arrived": float, "seconds": float, "text": str, "created": float,
    }, pk="id", not_null={"platform", "chat_id", "sent", "text", "created"})
    db.index("voice_notes", ["platform", "chat_id", "sent"])
    db.index("voice_notes", ["platform", "chat_id", "source_id"], unique=True)
    db.index("voice_notes", ["created"])


@step
def m003_usage_by_user(db: Builder) -> None:
    """Daily budgets sum a user's tokens across chats (core.flow.access)."""
    db.index("turns", ["platform", "user_id", "created"])
    db.index("turns", ["platform", "chat_id", "created"])


@step
def m004_jobs(db: Builder) -> None:
    """Durable work (core.store.jobs): each accepted request, stored before work starts, until its answer is sent."""
    db.table("jobs", {
        "id": int, "key": str, "platform": str, "chat_id": str, "thread_id": str, "user_id": str, "sender": str,
        "message_ref": str, "file_ref": str, "task": str, "text": str, "state": str, "attempts": int,
        "faults": int, "last_error": str, "notified": int, "created": float, "updated": float,
        "next_attempt": float, "outcome": str, "delivered": float, "delivery_attempts": int, "progress_ref": str,
    }, pk="id", not_null={"key", "platform", "chat_id", "thread_id", "message_ref", "task", "state", "attempts",
                          "faults", "notified", "created", "updated", "delivery_attempts"},
       defaults={"thread_id": "", "attempts": 0, "faults": 0, "notified": 0, "delivery_attempts": 0})
    db.index("jobs", ["platform", "key"], unique=True)
    db.index("jobs", ["platform", "state"])


@step
def m005_chat_settings(db: Builder) -> None:
    """Per-chat choices made with chat commands: the voice answers are spoken in ('' = text)."""
    db.table("chat_settings", {"platform": str, "chat_id": str, "voice": str, "updated": float},
             pk=("platform", "chat_id"), not_null={"voice"}, defaults={"voice": ""})


@step
def m006_answer_cache(db: Builder) -> None:
    """Answers kept by audio content (core.store.answer_cache). Each row names the chat whose audio put it there,
    so forgetting that chat (forget_chat finds tables by their chat_id column) deletes it too."""
    db.table("answer_cache", {
        "key": str, "platform": str, "chat_id": str, "reply": str, "created": float,
    }, pk="key", not_null={"platform", "chat_id", "reply", "created"})
    db.index("answer_cache", ["created"])
    db.table("audio_sources", {
        "platform": str, "source_id": str, "chat_id": str, "digest": str, "created": float,
    }, pk=("platform", "source_id"), not_null={"chat_id", "digest", "created"})
    db.index("audio_sources", ["created"])


@step
def m007_job_leases(db: Builder) -> None:
    """Jobs held by one of several processes on one database (JobStore.take): who holds the job, and until
    when; a holder that stops renewing loses it to another."""
    db.column("jobs", "owner", str)
    db.column("jobs", "lease_until", float)
    db.index("jobs", ["platform", "chat_id", "thread_id", "state"])


@step
def m008_languages(db: Builder) -> None:
    """The chat's language, chosen with /lang (empty: each person's app language), and the one a job was asked in."""
    db.column("chat_settings", "lang", str)
    db.column("jobs", "lang", str)


@step
def m009_audio_refs(db: Builder) -> None:
    """Audio kept by reference for buttons under answers (core.flow.audio_refs): token -> the chat and the file."""
    db.table("audio_refs", {
        "token": str, "platform": str, "chat_id": str, "thread_id": str, "ref": str, "audio_id": str,
        "created": float, "expires": float,
    }, pk="token", not_null={"platform", "chat_id", "ref", "created", "expires"})
    db.index("audio_refs", ["platform", "chat_id", "ref"])
    db.index("audio_refs", ["expires"])


@step
def m010_chat_models(db: Builder) -> None:
    """The model a chat chose with /model among EARSHOT_MODELS (empty: the operator's EARSHOT_MODEL)."""
    db.column("chat_settings", "model", str)


@step
def m011_job_lanes(db: Builder) -> None:
    """Open jobs (not yet delivered) found by platform, and per chat lane, without reading the week of
    delivered ones kept beside them: what runners on several processes look up to take and share work."""
    db.index("jobs", ["platform", "delivered"])
    db.index("jobs", ["platform", "chat_id", "thread_id", "delivered"])


@step
def m012_shared_limits(db: Builder) -> None:
    """The rate limit's recent requests and the budgets' in-flight holds, shared by replicas on one PostgreSQL
    database (core.store.shared_limits); a single process keeps them in memory and leaves these empty."""
    db.table("rate_hits", {"id": int, "platform": str, "subject": str, "at": float}, pk="id",
             not_null={"platform", "subject", "at"})
    db.index("rate_hits", ["platform", "subject", "at"])
    db.index("rate_hits", ["at"])
    db.table("spend_holds", {"id": str, "platform": str, "chat_id": str, "user_id": str, "tokens": int,
                             "expires": float},
             pk="id", not_null={"platform", "chat_id", "user_id", "tokens", "expires"})
    db.index("spend_holds", ["expires"])


@step
def m013_chat_auto(db: Builder) -> None:
    """Whether a channel asked for every voice message there to be transcribed unasked (Discord's
    `/earshot auto on`; empty: off)."""
    db.column("chat_settings", "auto", str)


@step
def m014_spoken_language(db: Builder) -> None:
    """The language spoken in a chat's audio, pinned with /spoken for the recognizer (empty: it detects it)."""
    db.column("chat_settings", "spoken", str)
