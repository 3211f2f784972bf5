"""Run a request's model calls side by side: all of them, or, at the first failure, none of the rest."""
from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


async def all_or_nothing(calls: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """The results in order. One failure cancels the others (no more spending on a request that failed) and is
    raised as itself, not wrapped in an ExceptionGroup, so callers catch the same errors as from one call."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call) for call in calls]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]
