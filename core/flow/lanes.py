"""A chat's lane in the runner (core.flow.runner): its place in line, and which jobs go in which lane.

A chat's answers go in one lane, one at a time, in the order the chat's updates arrived: an adapter
`reserve`s the chat's place synchronously where an update is first seen (before the handler's first
await) and fills it with the job it then stores, so a handler that awaits the database first can't be
overtaken by a later update of the same chat. A group's voice notes heard for digests go in a quiet lane
of their own.
"""
from __future__ import annotations

import asyncio

from core.store.jobs import Job
from core.values import ChatKey, Task

QUIET_LANE = "\0listening"


def is_quiet(job: Job) -> bool:
    """Work nobody asked for (listening for digests): nothing is said about it, success or failure."""
    return job.task is Task.LISTEN


def lane_of(job: Job) -> ChatKey:
    """The lane a job queues in when no place was reserved for it."""
    # a group's voice notes heard for digests queue in a lane of their own: one at a time, so a burst
    # holds one file in memory, and behind no answer (and no answer behind them)
    return ChatKey(job.platform, job.chat.chat_id, QUIET_LANE) if is_quiet(job) else job.chat


class Reservation:
    """A chat's place in the runner's queue, taken synchronously where an update is first seen (before the
    handler's first await) and held until the handler submits its job or drops the place: a handler that
    awaits the database first can't be overtaken by a later update of the same chat. Use `with`."""

    def __init__(self, chat: ChatKey, ahead: tuple[Reservation, ...] = (),
                 held: set[Reservation] | None = None) -> None:
        self.chat = chat
        self.job_id: int | None = None
        self.settled = asyncio.Event()
        self._ahead = ahead          # places held before this one, still open when it was taken
        self._held = held            # the runner's open places: stop() lets their handlers finish
        if held is not None:
            held.add(self)

    async def earlier_settled(self) -> None:
        """Wait until the chat's earlier updates have become jobs (or nothing): what they stored (the
        chat's latest audio, a heard voice note) is there to read."""
        for slot in self._ahead:
            await slot.settled.wait()

    def fill(self, job_id: int | None) -> None:
        if not self.settled.is_set():
            self.job_id = job_id
            self.settled.set()
            if self._held is not None:
                self._held.discard(self)

    def drop(self) -> None:
        """Give the place up (nothing to submit); later turns go on at once."""
        self.fill(None)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.drop()
