"""Delivering an answer in several sends (pieces of text, a voice message, files) so that a retry neither loses
nor repeats one: each send is a step, and a retried delivery starts after the steps that went out.

The runner (core.flow.runner) retries a delivery that raised; the count of steps done is kept in this process
(a crash between a send and its count can repeat that one send, the runner's documented corner)."""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from core.store.jobs import Undeliverable

Step = Callable[[], Awaitable[object]]


class Resumable:
    """Steps done per job, in this process: `await run(job_id, steps)` skips those already done."""

    def __init__(self) -> None:
        self._done: dict[int, int] = {}

    async def run(self, job_id: int, steps: Sequence[Step]) -> None:
        """Raises what a step raised: the runner retries (and the next run skips what went out), or gives up
        on Undeliverable (and so does this, forgetting the job)."""
        done = self._done.setdefault(job_id, 0)
        try:
            for i, step in enumerate(steps):
                if i < done:
                    continue
                await step()
                self._done[job_id] = done = i + 1
        except Undeliverable:
            self._done.pop(job_id, None)
            raise
        del self._done[job_id]
