"""A circuit breaker shared by every job, so a model outage is not met with a storm of retries.

closed     calls go through; `threshold` outage failures in a row open it.
open       no calls until the cooldown has passed; then exactly one call, the probe, may go (half-open).
half-open  the probe's success closes the breaker; its failure reopens it with the cooldown doubled
           (up to `max_cooldown`). A probe that ends without telling (the audio was bad, say) lets
           the next caller probe at once.

Any success closes it: a call that started before the breaker opened and then succeeded shows the
service is back. The clock is injectable so tests can step through the states without waiting.
"""
from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True, slots=True)
class Permit:
    """Leave to make one call; `probe` marks the single call let through while half-open."""

    probe: bool = False


class CircuitBreaker:
    def __init__(self, *, threshold: int = 3, cooldown: float = 5.0, max_cooldown: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = max(1, threshold)
        self.base_cooldown = cooldown
        self.max_cooldown = max(cooldown, max_cooldown)
        self.clock = clock
        self.state = BreakerState.CLOSED
        self.failures = 0                # outage failures in a row while closed
        self.cooldown = cooldown         # the current open period
        self.opened_until = 0.0
        self.recoveries = 0              # times it closed again after opening: waiting jobs watch this
        self._changed: asyncio.Event | None = None

    def allow(self) -> Permit | None:
        """A permit to call the service now, or None while it is held to be down."""
        if self.state is BreakerState.CLOSED:
            return Permit()
        if self.state is BreakerState.OPEN and self.clock() >= self.opened_until:
            self._move(BreakerState.HALF_OPEN)
            return Permit(probe=True)
        return None

    def retry_in(self) -> float:
        """Seconds until a call may be allowed: 0 when closed or a probe is due."""
        if self.state is BreakerState.CLOSED:
            return 0.0
        if self.state is BreakerState.OPEN:
            return max(0.0, self.opened_until - self.clock())
        return self.cooldown             # a probe is out: its result will wake the waiters sooner

    def succeeded(self, permit: Permit | None = None) -> None:
        """The service answered (even with a refusal): it is up."""
        self.failures = 0
        self.cooldown = self.base_cooldown
        if self.state is not BreakerState.CLOSED:
            self.recoveries += 1
            self._move(BreakerState.CLOSED)

    def failed(self, permit: Permit | None = None) -> None:
        """The service was unavailable even after the client's own retries."""
        if permit is not None and permit.probe:
            self.cooldown = min(self.max_cooldown, self.cooldown * 2)
            self._open()
        elif self.state is BreakerState.CLOSED:
            self.failures += 1
            if self.failures >= self.threshold:
                self._open()
        # open already, or half-open with someone else's probe out: a late failure changes nothing

    def released(self, permit: Permit | None) -> None:
        """The call ended without saying anything about the service: a probe goes back unused."""
        if permit is not None and permit.probe and self.state is BreakerState.HALF_OPEN:
            self.opened_until = self.clock()
            self._move(BreakerState.OPEN)

    async def wait_for_change(self, timeout: float) -> None:
        """Sleep up to `timeout` seconds, waking early if the state changes."""
        if self._changed is None:
            self._changed = asyncio.Event()
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await self._changed.wait()
        except TimeoutError:
            pass

    def _open(self) -> None:
        self.failures = 0
        self.opened_until = self.clock() + self.cooldown
        self._move(BreakerState.OPEN)

    def _move(self, state: BreakerState) -> None:
        self.state = state
        if self._changed is not None:   # wake everyone waiting, then start a fresh event
            self._changed.set()
            self._changed = None
