"""Everything earshot sends in WhatsApp goes out here: Graph refusals turned into what the job runner understands,
and WhatsApp's 24-hour customer-service window kept.

Free-form messages may reach a user only within 24 hours of their last message (after that only approved
templates, Graph error 131047). The outbox knows when each user last wrote (this process saw it, or the job
asking was stored then) and sends nothing outside the window: the answer is logged as undeliverable, never
retried. A refusal retrying can't fix (the window, a bad token, a message Meta won't take) ends the delivery
(core.store.jobs.Undeliverable); passing trouble that outlived the Graph client's own retries is raised for the
runner to try the delivery again later.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from core.store.jobs import Undeliverable

from .graph import Graph, GraphError
from .render import pieces, text_message

log = logging.getLogger(__name__)

WINDOW = 24 * 3600.0          # seconds after a user's last message during which free-form messages may be sent
WINDOW_MARGIN = 60.0          # a message sent this close to the end might land after it
HEARD_KEPT = 100_000          # users whose last message time is remembered in memory


class WindowClosed(Undeliverable):
    """The user last wrote more than 24 hours ago: WhatsApp takes only templates now."""


class Outbox:
    def __init__(self, graph: Graph, *, clock: Callable[[], float] = time.time) -> None:
        self.graph = graph
        self.clock = clock
        self._heard: dict[str, float] = {}            # wa_id -> when they last wrote
        self._soon: set[asyncio.Task[None]] = set()
        self._token_told = False

    # --- the 24-hour window -------------------------------------------------------------------------
    def heard(self, wa_id: str, sent: float) -> None:
        """`wa_id` wrote at `sent`: the window is open for 24 hours from then."""
        if sent > self._heard.get(wa_id, 0.0):
            if len(self._heard) >= HEARD_KEPT:
                self._heard.pop(next(iter(self._heard)))
            self._heard[wa_id] = sent

    def window_open(self, wa_id: str, since: float = 0.0) -> bool:
        """Whether a free-form message may still reach `wa_id`, who wrote at `since` (or later, as seen here)."""
        last = max(since, self._heard.get(wa_id, 0.0))
        return self.clock() - last < WINDOW - WINDOW_MARGIN

    # --- sending --------------------------------------------------------------------------------------
    async def send(self, to: str, message: dict[str, Any], *, reply_to: str | None = None,
                   since: float = 0.0) -> str:
        """Send one message; Undeliverable when it can never go, GraphError when it may later."""
        if not self.window_open(to, since):
            log.warning("not sending to %s: more than 24 hours since their last message (WhatsApp's customer "
                        "service window); only templates may reach them now", to)
            raise WindowClosed("outside WhatsApp's 24-hour window")
        try:
            return await self.graph.send(to, message, reply_to=reply_to)
        except GraphError as err:
            raise self.refusal(err, to) from None

    async def upload(self, data: bytes, mime_type: str, filename: str) -> str:
        """Media to send (a voice note, a transcript file): its id."""
        try:
            return await self.graph.upload(data, mime_type, filename)
        except GraphError as err:
            raise self.refusal(err, "the media endpoint") from None

    async def say(self, to: str, text: str, *, reply_to: str | None = None, markdown: bool = False,
                  since: float = 0.0) -> None:
        """Text in as many messages as it takes; the first quotes `reply_to`."""
        for i, piece in enumerate(pieces(text, markdown=markdown)):
            await self.send(to, text_message(piece), reply_to=reply_to if i == 0 else None, since=since)

    def soon(self, work: Awaitable[object], what: str) -> None:
        """Send without holding up the webhook's answer (Meta wants it within seconds): a reply to a command, a
        refusal. A failure is logged; stop() waits for what is still on its way."""
        async def run() -> None:
            try:
                await work
            except Undeliverable:
                pass                              # logged where it was refused
            except Exception as err:
                log.warning("could not send %s: %s", what, err if isinstance(err, GraphError) else type(err).__name__)
        task = asyncio.create_task(run(), name="earshot-whatsapp-say")
        self._soon.add(task)
        task.add_done_callback(self._soon.discard)

    def say_soon(self, to: str, text: str, *, reply_to: str | None = None) -> None:
        self.soon(self.say(to, text, reply_to=reply_to), "a reply")

    async def drain(self, timeout: float) -> None:
        """Let replies on their way go out (up to `timeout` seconds), then drop the rest."""
        if self._soon:
            _, late = await asyncio.wait(set(self._soon), timeout=timeout)
            for task in late:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def refusal(self, err: GraphError, to: str) -> Exception:
        """What a Graph refusal means for the delivery: the error again (passing), or Undeliverable."""
        if err.retryable:
            return err
        if err.window_closed:
            log.warning("WhatsApp refused a message to %s: more than 24 hours since their last message (%s); not "
                        "retried", to, err.details or err.message)
            return WindowClosed(str(err))
        if err.operator:
            if not self._token_told:
                log.error("operator action needed: %s", err.operator_message())
            self._token_told = True
            return Undeliverable(f"WhatsApp refused the token: {err}")
        log.error("WhatsApp refused a message earshot built (a bug, not retried): %s", err)
        return Undeliverable(f"WhatsApp refused the message: {err}")
