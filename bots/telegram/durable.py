"""Telegram must not forget an update before its job is stored.

Long polling: getUpdates with `offset` confirms every earlier update, and Telegram forgets them.
python-telegram-bot's Updater puts a batch of updates on the Application's queue and polls again at
once (Updater._start_polling: `offset=self._last_update_id`), so a crash could confirm updates
nobody had stored yet. `ConfirmAfterHandled` is the request object PTB uses for getUpdates only; it
holds each poll until the Application has called `task_done()` for everything on the queue, which
PTB does when `process_update` returns, i.e. when the handler has stored the job.

Webhook: Telegram considers an update delivered when the webhook answers 200, which PTB's webhook
handler does right after `update_queue.put`. `HandledQueue.put` (with `hold_puts`) returns only once
that update has been processed, so the 200 goes out after the job is stored.

A handler that stores a job returns at once (the job runs later), so neither wait is long.

Replicas on one PostgreSQL database: Telegram allows one getUpdates consumer, so `ConfirmAfterHandled` calls
getUpdates only while this process is the elected poller (core.store.election); the others answer their own long poll
with "no updates" until they are elected. A new poller starts from offset 0, so Telegram gives it again what the
dead one fetched but had not confirmed. `HandledApplication` therefore handles each update once, by its id
(core.flow.redelivery), whichever replica got it first, one replica at a time; it is recorded once handled, not
before, so an update whose handler died mid-way is handled again (a job it had stored is known by its key and
not answered twice). The same holds for a webhook update Telegram retries against another replica.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from telegram import Update
from telegram.ext import Application
from telegram.request import RequestData

from core.flow.redelivery import Redeliveries
from core.store.election import Election

from .updates import SkipUnreadableUpdates

log = logging.getLogger(__name__)

SLOW_WARNING = 30.0


class HandledQueue(asyncio.Queue):
    """The Application's update queue; with `hold_puts`, put() waits until its update was processed."""

    def __init__(self) -> None:
        super().__init__()
        self.hold_puts = False
        self._waiting: dict[int, asyncio.Future[None]] = {}

    async def put(self, item: Any) -> None:
        if not self.hold_puts or not isinstance(item, Update):   # PTB's own stop signal passes straight
            return await super().put(item)
        done = asyncio.get_running_loop().create_future()
        self._waiting[id(item)] = done
        try:
            await super().put(item)
            await done
        finally:
            self._waiting.pop(id(item), None)

    def processed(self, item: Any) -> None:
        done = self._waiting.get(id(item))
        if done is not None and not done.done():
            done.set_result(None)


class HandledApplication(Application):
    """Tells its HandledQueue when an update has been through every handler; with `once` set, skips updates
    already handled (by this process or another replica) and records each one handled."""

    once: Redeliveries | None = None

    async def process_update(self, update: object) -> None:
        try:
            key = f"update:{self.bot.id}:{update.update_id}" if isinstance(update, Update) else None
            if key is None or self.once is None:
                await super().process_update(update)
            else:
                async with self.once.only(key) as first:   # recorded once done: a crash lets it through
                    if first:
                        await super().process_update(update)
        finally:
            if isinstance(self.update_queue, HandledQueue):
                self.update_queue.processed(update)


NO_UPDATES = b'{"ok":true,"result":[]}'


class ConfirmAfterHandled(SkipUnreadableUpdates):
    """The getUpdates request: waits until every fetched update is handled before asking again; with
    `election`, asks Telegram only while elected (else its long poll ends with no updates)."""

    def __init__(self, queue: asyncio.Queue, election: Election | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.queue = queue
        self.election = election
        self._polling = False

    async def do_request(self, url: str, method: str, request_data: RequestData | None = None,
                         *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        await self._handled()
        if self.election is not None:
            timeout = (request_data.parameters if request_data else {}).get("timeout", 0)
            leading = await self.election.wait(float(timeout) if isinstance(timeout, (int, float)) else 0.0)
            if leading != self._polling:
                self._polling = leading
                log.info("this process %s Telegram for updates", "polls" if leading else "stopped polling")
            if not leading:
                return 200, NO_UPDATES
        return await super().do_request(url, method, request_data, *args, **kwargs)

    async def _handled(self) -> None:
        waited = 0.0
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(self.queue.join()), SLOW_WARNING)
                break
            except TimeoutError:
                waited += SLOW_WARNING
                log.warning("updates still being handled after %.0f s; not confirming them yet", waited)
