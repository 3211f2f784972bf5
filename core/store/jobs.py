"""Durable work: every request an adapter accepts is a job row in SQLite, committed before any work starts.

A job remembers where it came from (platform, chat, the message to answer, the file to fetch again),
what was asked, how far it got (state, attempts, the last error: never a secret), and whether its
outcome reached the user. The rows live in the history database file and are written on its one
database thread (Database.read/write, core.store.db), so there is still one file and one writer per process.

    queued ──> running ──> done ─────┐
      ^  │        │                  ├──> delivered (outcome cleared once sent)
      └──┘<───────┘ (outage: wait)   │
      └────────────> failed/expired ─┘

`core.flow.runner.JobRunner` drives them; this module is the data and the store. On PostgreSQL several processes
share the table: a runner takes a job under a lease before working on it (take, keep, release: who holds
it is the `owner` column, until `lease_until`), see core.flow.leases.
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import enum
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from core.store.db import Database, Queries
from core.values import ChatKey, Part, Reply, Sender, Speech, Task, Usage

MAX_FAULTS = 3              # crashes or unexpected errors before a job is given up (a poison file can't loop)
MAX_DELIVERIES = 6          # tries to hand an outcome to the platform before giving up on it
KEEP_FINISHED = 7 * 86400   # delivered jobs are kept this long, so a redelivered message is known
ERROR_CHARS = 500


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"


UNFINISHED = (JobState.QUEUED, JobState.RUNNING)
FINISHED = (JobState.DONE, JobState.FAILED, JobState.EXPIRED)


@dataclass(frozen=True, slots=True)
class NewJob:
    """What an adapter submits. `key` is unique per platform message: submitting it again is a no-op."""

    key: str
    chat: ChatKey
    task: Task
    message_ref: str                 # opaque to the core: where the answer goes (the adapter's JSON or id)
    file_ref: str | None = None      # opaque to the core: how to fetch the audio again
    text: str | None = None
    sender: Sender = Sender()
    lang: str | None = None          # the chat's language when it was asked: the answer and what is said


@dataclass(frozen=True, slots=True)
class Failure:
    """A final answer that is not the model's: what went wrong, for the user. Empty: say nothing."""

    text: str


@dataclass(frozen=True, slots=True)
class Notice:
    """Something to tell the user while the job waits (the model is down); the answer comes later."""

    text: str


Outcome = Reply | Failure | Notice


class Undeliverable(Exception):
    """Raised by an adapter's deliver when retrying can't help (the bot was blocked, the chat is gone)."""


T = TypeVar("T")


class Pieces:
    """One try at delivering a job's answer, piece by piece (its messages, then its files): a piece that went out
    on an earlier try is not sent again, and what sending it returned then (a message to reply to) is given back."""

    def __init__(self, sent: list[Any]) -> None:
        self._sent, self._next = sent, 0

    async def send(self, piece: Callable[[], Awaitable[T]]) -> T:
        """Send the next piece, unless an earlier try did."""
        i, self._next = self._next, self._next + 1
        if i < len(self._sent):
            return self._sent[i]
        result = await piece()
        self._sent.append(result)
        return result


class Deliveries:
    """How far each job's answer got, in this process. core.flow.delivery tries a failed delivery again (a passing
    fault); a try resumes after the pieces already sent, so a long answer whose third message failed is not
    sent again from its first, nor its text again because a file after it failed. Every adapter's deliver
    goes through one of these.

    In memory only: a process that dies half-way through an answer leaves the next one to send it whole (the
    window core.flow.delivery already has between a send and marking it delivered)."""

    def __init__(self) -> None:
        self._sent: dict[int, list[Any]] = {}

    @contextlib.asynccontextmanager
    async def resume(self, job: Job) -> AsyncIterator[Pieces]:
        """This try's pieces; forgotten once the answer is out, can't be delivered, or had its last try."""
        sent = self._sent.setdefault(job.id, [])
        try:
            yield Pieces(sent)
        except Undeliverable:
            self._sent.pop(job.id, None)
            raise
        except BaseException:
            if job.delivery_attempts + 1 >= MAX_DELIVERIES:
                self._sent.pop(job.id, None)
            raise
        self._sent.pop(job.id, None)


class JobGone(LookupError):
    """The job's row was deleted while it waited or ran (an admin's forget of the chat): drop it."""


class JobLost(LookupError):
    """Another process took the job over (this one's lease ran out): stop working on it and change nothing."""


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    key: str
    chat: ChatKey
    task: Task
    message_ref: str
    file_ref: str | None
    text: str | None
    sender: Sender
    state: JobState
    attempts: int                # times work started
    faults: int                  # crashes and unexpected errors
    last_error: str | None
    notified: bool               # told the user the model is down
    created: float
    updated: float
    next_attempt: float
    outcome: str | None          # JSON of the final Reply or Failure, until delivered
    delivered: float | None      # when the outcome reached the platform
    delivery_attempts: int
    progress_ref: str | None     # the adapter's progress message, so a restart can clean it up
    lang: str | None = None      # the chat's language when it was asked

    @property
    def platform(self) -> str:
        return self.chat.platform

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def final_outcome(self) -> Reply | Failure | None:
        """The stored outcome of a finished job; None when there is nothing to say."""
        if not self.outcome:
            return None
        data = json.loads(self.outcome)
        if "failure" in data:
            return Failure(data["failure"]) if data["failure"] else None
        spoken = data.get("speech")   # a spoken answer waits here, like its text, until delivered
        speech = Speech(base64.b64decode(spoken["ogg"]), spoken["seconds"], spoken["voice"]) if spoken else None
        return Reply(text=data["text"], task=self.task, usage=Usage(*data.get("usage", (0, 0, 0))),
                     duration=data.get("duration"), request_ids=tuple(data.get("request_ids", ())),
                     parts=tuple(Part(*p) for p in data.get("parts", ())), cached=bool(data.get("cached")),
                     speech=speech)


def encode_outcome(outcome: Reply | Failure | None) -> str | None:
    if outcome is None:
        return json.dumps({"failure": ""})
    if isinstance(outcome, Failure):
        return json.dumps({"failure": outcome.text})
    u = outcome.usage
    sp = outcome.speech
    speech = {"ogg": base64.b64encode(sp.ogg).decode("ascii"), "seconds": sp.seconds, "voice": sp.voice} if sp else None
    return json.dumps({"text": outcome.text, "usage": [u.audio_tokens, u.input_tokens, u.output_tokens],
                       "duration": outcome.duration, "request_ids": list(outcome.request_ids),
                       # the parts' offsets: transcript files (core.audio.subtitles) are made when it is delivered
                       "parts": [[p.start, p.end, p.text] for p in outcome.parts], "cached": outcome.cached,
                       **({"speech": speech} if speech else {})}, ensure_ascii=False)


_COLUMNS = ("id", "key", "platform", "chat_id", "thread_id", "user_id", "sender", "message_ref", "file_ref", "task",
            "text", "state", "attempts", "faults", "last_error", "notified", "created", "updated", "next_attempt",
            "outcome", "delivered", "delivery_attempts", "progress_ref", "owner", "lease_until", "lang")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM jobs"


def _job(values: tuple[Any, ...]) -> Job:
    row = dict(zip(_COLUMNS, values, strict=True))
    row.pop("owner"), row.pop("lease_until")     # the hold's, not the job's: see JobStore.take
    sender = Sender(**json.loads(row["sender"])) if row.get("sender") else Sender()
    return Job(
        id=row["id"], key=row["key"], chat=ChatKey(row["platform"], row["chat_id"], row["thread_id"] or None),
        task=Task(row["task"]), message_ref=row["message_ref"], file_ref=row["file_ref"], text=row["text"],
        sender=sender, state=JobState(row["state"]), attempts=row["attempts"], faults=row["faults"],
        last_error=row["last_error"], notified=bool(row["notified"]), created=row["created"],
        updated=row["updated"], next_attempt=row["next_attempt"] or 0.0, outcome=row["outcome"],
        delivered=row["delivered"], delivery_attempts=row["delivery_attempts"], progress_ref=row["progress_ref"],
        lang=row.get("lang") or None)


async def _one(q: Queries, job_id: int) -> Job:
    row = await q.fetchone(f"{_SELECT} WHERE id = ?", job_id)
    if row is None:
        raise JobGone(f"job {job_id} is gone")
    return _job(row)


# a job still to do or to deliver (unfinished jobs are never delivered, so this covers them too)
_OPEN = "{t}.delivered IS NULL AND {t}.delivery_attempts < " + str(MAX_DELIVERIES)
# the same lane as job j: one chat's (or thread's) answers, or its voice notes heard for digests
_LANE = "o.platform = {p} AND o.chat_id = {c} AND o.thread_id = {t} AND (o.task = 'listen') = {listen}"
_LANE_OF_ARGS = _LANE.format(p="?", c="?", t="?", listen="?")
_LANE_OF_J = _LANE.format(p="j.platform", c="j.chat_id", t="j.thread_id", listen="(j.task = 'listen')")


class JobStore:
    """The jobs table, through the database's connection and thread. Every change is committed
    before the call returns, so what it says survives kill -9.

    With an `owner` (a JobRunner's id), changes to a job are fenced: they apply only while no other
    process has taken the job over since (JobLost otherwise), so a process that lost its lease can't
    overwrite what the new holder does."""

    def __init__(self, history: Database, clock: Callable[[], float] = time.time, *,
                 owner: str | None = None) -> None:
        self.history = history
        self.clock = clock
        self.owner = owner

    async def add(self, new: NewJob) -> tuple[Job, bool]:
        """Store a new job (queued); if the message is already a job, that job. True when it is new."""
        now = self.clock()
        platform, chat_id, thread_id = new.chat.platform, new.chat.chat_id, new.chat.thread_id or ""
        sender = json.dumps(dataclasses.asdict(new.sender))

        # the new job comes back with its INSERT (one round trip); the one already stored is read after
        added = await self.history.execute_returning(
            "INSERT INTO jobs (key, platform, chat_id, thread_id, user_id, sender, message_ref, "
            "file_ref, task, text, state, created, updated, next_attempt, lang) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING "
            f"RETURNING {', '.join(_COLUMNS)}",
            new.key, platform, chat_id, thread_id, new.sender.user_id, sender, new.message_ref,
            new.file_ref, new.task.value, new.text, JobState.QUEUED.value, now, now, now, new.lang)
        if added:
            return _job(added[0]), True
        row = await self.history.fetchone(f"{_SELECT} WHERE platform = ? AND key = ?", platform, new.key)
        assert row is not None
        return _job(row), False

    async def get(self, job_id: int) -> Job:
        return await _one(self.history, job_id)

    async def pending(self, platforms: Iterable[str]) -> list[Job]:
        """Jobs of these platforms still to work on or to deliver, oldest first."""
        names = sorted(set(platforms))
        if not names:
            return []
        marks = ",".join("?" * len(names))
        sql = (f"{_SELECT} WHERE platform IN ({marks}) AND (state IN ('queued', 'running') "
               f"OR (delivered IS NULL AND delivery_attempts < ?)) ORDER BY id")
        return [_job(r) for r in await self.history.fetch(sql, *names, MAX_DELIVERIES)]

    async def recover(self, platforms: Iterable[str]) -> int:
        """At start-up: jobs left running by a process that died go back to the queue, one fault more.

        SQLite serves each platform from one process, so whatever its last process held is released at
        once (its leases too). On PostgreSQL a leased job's holder may be alive elsewhere: it is left to its
        lease (JobStore.take counts the fault when it runs out); only unleased ones are recovered here."""
        names = sorted(set(platforms))
        if not names:
            return 0
        marks = ",".join("?" * len(names))
        now = self.clock()
        single = self.history.engine == "sqlite"
        async with self.history.transaction() as tx:
            recovered = await tx.execute(
                f"UPDATE jobs SET state = 'queued', faults = faults + 1, updated = ?, next_attempt = ?, "
                f"last_error = 'interrupted: the process stopped while working on it' "
                f"WHERE state = 'running' {'' if single else 'AND lease_until IS NULL '}AND platform IN ({marks})",
                now, now, *names)
            if single:
                await tx.execute(f"UPDATE jobs SET lease_until = NULL WHERE lease_until IS NOT NULL "
                                 f"AND platform IN ({marks})", *names)
            return recovered

    async def prune(self) -> int:
        """Forget delivered jobs after a week: they are only kept to recognise a redelivered message."""
        cutoff = self.clock() - KEEP_FINISHED
        return await self.history.execute(
            "DELETE FROM jobs WHERE state IN ('done', 'failed', 'expired') AND updated < ? "
            "AND (delivered IS NOT NULL OR delivery_attempts >= ?)", cutoff, MAX_DELIVERIES)

    async def start(self, job_id: int) -> Job:
        """Mark it running, one attempt more: committed before the work starts."""
        return await self._update(job_id, "state = 'running', attempts = attempts + 1")

    async def wait(self, job_id: int, until: float, error: str, *, fault: bool = False) -> Job:
        """Back to the queue until `until` (an outage, or an unexpected error when `fault`)."""
        return await self._update(job_id, "state = 'queued', next_attempt = ?, last_error = ?"
                                  + (", faults = faults + 1" if fault else ""), until, error[:ERROR_CHARS])

    async def requeue(self, job_id: int) -> Job:
        """Stopped on purpose (shutdown) while running: no fault, it simply starts again next time."""
        return await self._update(job_id, "state = 'queued'")

    async def finish(self, job_id: int, state: JobState, outcome: Reply | Failure | None,
                     error: str | None = None) -> Job:
        assert state in FINISHED
        return await self._update(job_id, "state = ?, outcome = ?, last_error = COALESCE(?, last_error)",
                                  state.value, encode_outcome(outcome),
                                  error[:ERROR_CHARS] if error else None)

    async def mark_delivered(self, job_id: int) -> Job:
        """The outcome reached the user: record when, and drop the words (history keeps the answer)."""
        return await self._update(job_id, "delivered = ?, outcome = NULL, text = NULL", self.clock())

    async def delivery_failed(self, job_id: int, error: str, *, final: bool = False) -> Job:
        attempts = str(MAX_DELIVERIES) if final else "delivery_attempts + 1"
        return await self._update(job_id, f"delivery_attempts = {attempts}, last_error = ?",
                                  ("delivery failed: " + error)[:ERROR_CHARS])

    async def mark_notified(self, job_id: int) -> Job:
        return await self._update(job_id, "notified = 1")

    async def set_progress_ref(self, job_id: int, ref: str | None) -> Job:
        return await self._update(job_id, "progress_ref = ?", ref)

    async def _update(self, job_id: int, assignments: str, *args: Any) -> Job:
        now = self.clock()
        fence, mine = (" AND (owner IS NULL OR owner = ?)", (self.owner,)) if self.owner else ("", ())
        # one statement (the job as changed comes back with it): on SQLite one hop to the database's thread
        rows = await self.history.execute_returning(
            f"UPDATE jobs SET {assignments}, updated = ? WHERE id = ?{fence} RETURNING {', '.join(_COLUMNS)}",
            *args, now, job_id, *mine)
        if rows:
            return _job(rows[0])
        await _one(self.history, job_id)          # JobGone when it is gone
        raise JobLost(f"job {job_id} was taken over by another process")

    # --- the runner's hold on a job: take, keep, release (several processes on one database) ----------------
    async def take(self, job_id: int, lease: float, *, behind: Iterable[int] = ()) -> Job | None:
        """Hold the job as this store's owner for `lease` seconds, if it may be worked on now; None if not.

        It may when it is still to do or to deliver, nobody else holds an unexpired lease on it, no other job
        of its lane (core.flow.runner's chat lanes) is held by another process, and no older job of its lane is
        still open — except those in `behind`: this process's own later turns of the chat, stored earlier
        than this one but queued after it (its per-chat queue orders its own jobs). A job that was running
        when its holder's lease ran out (or was let go) was cut off: back to the queue, one fault more.
        Takes of one lane are serialised (PostgreSQL: an advisory lock per lane; SQLite: its write lock)."""
        assert self.owner, "take needs a JobStore with an owner"
        now = self.clock()
        exempt = sorted({int(i) for i in behind} - {job_id})
        is_pg = self.history.engine == "postgresql"
        held = "state, owner, lease_until, delivered, delivery_attempts"
        async with self.history.transaction() as tx:
            # PostgreSQL: the job's lane first, its lock, then the job as it is now; SQLite (its write lock
            # already serialises takes): both in one read, one hop to the database's thread fewer
            lane = await tx.fetchone(f"SELECT platform, chat_id, thread_id, task{'' if is_pg else ', ' + held} "
                                     "FROM jobs WHERE id = ?", job_id)
            if lane is None:
                raise JobGone(f"job {job_id} is gone")
            platform, chat_id, thread_id, task = lane[:4]
            if is_pg:
                await self.history.lock(tx, f"jobs:{platform}:{chat_id}:{thread_id}:{task == 'listen'}")
                row = await tx.fetchone(f"SELECT {held} FROM jobs WHERE id = ? FOR UPDATE", job_id)
                if row is None:
                    raise JobGone(f"job {job_id} is gone")
            else:
                row = lane[4:]
            state, owner, until, delivered, deliveries = row
            if delivered is not None or deliveries >= MAX_DELIVERIES:
                return None                                  # done and delivered (by whoever held it)
            if owner != self.owner and until is not None and until >= now:
                return None                                  # another process holds it
            older = f"(o.id < ? AND o.id NOT IN ({','.join('?' * len(exempt))}))" if exempt else "o.id < ?"
            blocked = await tx.fetchone(
                f"SELECT o.id FROM jobs o WHERE {_LANE_OF_ARGS} "
                f"AND o.id <> ? AND {_OPEN.format(t='o')} "
                f"AND ({older} OR (o.owner <> ? AND o.lease_until >= ?)) LIMIT 1",
                platform, chat_id, thread_id, task == "listen", job_id, job_id, *exempt, self.owner, now)
            if blocked is not None:
                return None                                  # its chat's turn is elsewhere, or an older job's
            returning = f" RETURNING {', '.join(_COLUMNS)}"       # the job as taken, with the same statement
            if state == JobState.RUNNING.value:
                taken = await tx.fetch(
                    "UPDATE jobs SET owner = ?, lease_until = ?, state = 'queued', faults = faults + 1, "
                    "next_attempt = ?, updated = ?, last_error = 'interrupted: its process stopped while "
                    "working on it' WHERE id = ?" + returning, self.owner, now + lease, now, now, job_id)
            else:
                taken = await tx.fetch("UPDATE jobs SET owner = ?, lease_until = ? WHERE id = ?" + returning,
                                       self.owner, now + lease, job_id)
            if not taken:
                raise JobGone(f"job {job_id} is gone")
            return _job(taken[0])

    async def keep(self, job_ids: Iterable[int], lease: float) -> set[int]:
        """Renew this owner's leases on these jobs; the ids still held (the others were taken over)."""
        ids = sorted(set(job_ids))
        if not ids:
            return set()
        now = self.clock()
        async with self.history.transaction() as tx:
            rows = await tx.fetch(f"UPDATE jobs SET lease_until = ? WHERE owner = ? AND id IN "
                                  f"({','.join('?' * len(ids))}) RETURNING id", now + lease, self.owner, *ids)
        return {int(r[0]) for r in rows}

    async def release(self, job_id: int) -> None:
        """Let the job go: another process (or this one) may take it at once. Its owner stays as the last
        holder, so a process that lost it earlier still can't change it (see _update)."""
        await self.history.execute("UPDATE jobs SET lease_until = NULL WHERE id = ? AND owner = ?",
                                   job_id, self.owner)

    async def release_all(self) -> int:
        """At shutdown: let go of every job this owner still holds."""
        return await self.history.execute(
            "UPDATE jobs SET lease_until = NULL WHERE owner = ? AND lease_until IS NOT NULL", self.owner)

    async def takeable(self, platforms: Iterable[str], quiet_since: float, limit: int = 100) -> list[Job]:
        """Jobs of these platforms nobody works on that `take` would give now, oldest first: let go by a
        process that stopped, held by one whose lease ran out, or never taken and untouched since
        `quiet_since` (stored by a process that died first, or left waiting behind an older job of its chat
        that another process held). A job stored a moment ago is left to the process that stored it."""
        names = sorted(set(platforms))
        if not names:
            return []
        now = self.clock()
        marks = ",".join("?" * len(names))
        sql = (f"{_SELECT} j WHERE j.platform IN ({marks}) AND {_OPEN.format(t='j')} "
               "AND (j.lease_until IS NULL OR j.lease_until < ? OR j.owner = ?) "
               "AND (j.owner IS NOT NULL OR j.updated <= ?) "
               f"AND NOT EXISTS (SELECT 1 FROM jobs o WHERE {_LANE_OF_J} "
               f"AND o.id <> j.id AND {_OPEN.format(t='o')} "
               "AND (o.id < j.id OR (o.owner <> ? AND o.lease_until >= ?))) ORDER BY j.id LIMIT ?")
        rows = await self.history.fetch(sql, *names, now, self.owner, quiet_since, self.owner, now, limit)
        return [_job(r) for r in rows]

    async def holder(self, job_id: int) -> tuple[str | None, float | None]:
        """Who holds (or last held) the job, and until when (None, None when nobody has taken it)."""
        row = await self.history.fetchone("SELECT owner, lease_until FROM jobs WHERE id = ?", job_id)
        if row is None:
            raise JobGone(f"job {job_id} is gone")
        return row[0], row[1]
