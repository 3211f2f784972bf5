"""The database's tables, as numbered migrations applied in order (sqlite-utils); core.db applies them.

Each store keeps its own SQL (core.history, core.jobs, core.digest_store, core.answer_cache, core.usage_ledger,
core.seen_events, core.chat_settings); this is only where the tables come from.
"""
from __future__ import annotations

import sqlite_utils
from sqlite_utils.migrations import Migrations

migrations = Migrations("earshot")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db.table("turns").create({
        "id": int, "platform": str, "chat_id": str, "thread_id": str, "user_id": str,
        "role": str, "text": str, "audio_seconds": float,
        "audio_tokens": int, "input_tokens": int, "output_tokens": int, "created": float,
    }, pk="id", not_null={"platform", "chat_id", "thread_id", "role", "text", "created"})
    db.table("turns").create_index(["platform", "chat_id", "thread_id", "id"])
    db.table("turns").create_index(["created"])
    db.table("recent_audio").create({"platform": str, "chat_id": str, "thread_id": str, "ref": str, "created": float},
                              pk=("platform", "chat_id", "thread_id"))
    db.table("seen_events").create({"platform": str, "event_id": str, "created": float}, pk=("platform", "event_id"))


@migrations()
def m002_digests(db: sqlite_utils.Database) -> None:
    """Group digests: which chats opted in and when to post, and the voice notes heard there."""
    db.table("digest_chats").create({
        "platform": str, "chat_id": str, "enabled": int, "daily": str, "tz": str, "post_thread": str,
        "scheduled_since": float, "last_scheduled": float, "last_digest": float, "last_note": int,
        "updated": float,
    }, pk=("platform", "chat_id"), not_null={"enabled"}, defaults={"enabled": 0, "daily": "", "tz": "UTC",
                                                               "post_thread": "", "last_note": 0})
    db.table("voice_notes").create({
        "id": int, "platform": str, "chat_id": str, "thread_id": str, "source_id": str, "user_id": str,
        "user_name": str, "sent": float, "arrived": float, "seconds": float, "text": str, "created": float,
    }, pk="id", not_null={"platform", "chat_id", "sent", "text", "created"})
    db.table("voice_notes").create_index(["platform", "chat_id", "sent"])
    db.table("voice_notes").create_index(["platform", "chat_id", "source_id"], unique=True)
    db.table("voice_notes").create_index(["created"])


@migrations()
def m003_usage_by_user(db: sqlite_utils.Database) -> None:
    """Daily budgets sum a user's tokens across chats (core.access)."""
    db.table("turns").create_index(["platform", "user_id", "created"])
    db.table("turns").create_index(["platform", "chat_id", "created"])


@migrations()
def m004_jobs(db: sqlite_utils.Database) -> None:
    """Durable work (core.jobs): each accepted request, stored before work starts, until its answer is sent."""
    db.table("jobs").create({
        "id": int, "key": str, "platform": str, "chat_id": str, "thread_id": str, "user_id": str, "sender": str,
        "message_ref": str, "file_ref": str, "task": str, "text": str, "state": str, "attempts": int,
        "faults": int, "last_error": str, "notified": int, "created": float, "updated": float,
        "next_attempt": float, "outcome": str, "delivered": float, "delivery_attempts": int, "progress_ref": str,
    }, pk="id", not_null={"key", "platform", "chat_id", "thread_id", "message_ref", "task", "state", "attempts",
                          "faults", "notified", "created", "updated", "delivery_attempts"},
       defaults={"thread_id": "", "attempts": 0, "faults": 0, "notified": 0, "delivery_attempts": 0})
    db.table("jobs").create_index(["platform", "key"], unique=True)
    db.table("jobs").create_index(["platform", "state"])


@migrations()
def m005_chat_settings(db: sqlite_utils.Database) -> None:
    """Per-chat choices made with chat commands: the voice answers are spoken in ('' = text)."""
    db.table("chat_settings").create({"platform": str, "chat_id": str, "voice": str, "updated": float},
                               pk=("platform", "chat_id"), not_null={"voice"}, defaults={"voice": ""})


@migrations()
def m006_answer_cache(db: sqlite_utils.Database) -> None:
    """Answers kept by audio content (core.answer_cache). Each row names the chat whose audio put it there,
    so forgetting that chat (forget_chat finds tables by their chat_id column) deletes it too."""
    db.table("answer_cache").create({
        "key": str, "platform": str, "chat_id": str, "reply": str, "created": float,
    }, pk="key", not_null={"platform", "chat_id", "reply", "created"})
    db.table("answer_cache").create_index(["created"])
    db.table("audio_sources").create({
        "platform": str, "source_id": str, "chat_id": str, "digest": str, "created": float,
    }, pk=("platform", "source_id"), not_null={"chat_id", "digest", "created"})
    db.table("audio_sources").create_index(["created"])


@migrations()
def m007_languages(db: sqlite_utils.Database) -> None:
    """The chat's language: chosen with /lang ('' = each person's app language), and the one a job was asked in."""
    db.table("chat_settings").add_column("lang", str, not_null_default="")
    db.table("jobs").add_column("lang", str)


@migrations()
def m008_chat_models(db: sqlite_utils.Database) -> None:
    """The model a chat chose with /model among EARSHOT_MODELS ('' = the operator's EARSHOT_MODEL)."""
    db.table("chat_settings").add_column("model", str, not_null_default="")
