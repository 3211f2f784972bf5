"""How a long-running bot process lives: started, serving until SIGTERM or SIGINT, then stopped (letting the
work in flight finish or hand it back). Shared by the adapters whose servers start and stop themselves."""
from __future__ import annotations

import asyncio
import logging
import signal
from typing import Protocol

log = logging.getLogger(__name__)


class Server(Protocol):
    async def start(self) -> object: ...

    async def stop(self) -> None: ...


async def until_signalled() -> None:
    """Return on the first SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")


async def serve_until_signalled(server: Server) -> None:
    """Start `server`, serve until signalled, then stop it (whatever ended the wait)."""
    await server.start()
    try:
        await until_signalled()
    finally:
        await server.stop()
