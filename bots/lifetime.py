"""How a long-running bot process lives: its HTTP server listening, serving until SIGTERM or SIGINT, then
stopped (letting the work in flight finish or hand it back). Shared by the adapters whose servers start and
stop themselves, and by the health server."""
from __future__ import annotations

import asyncio
import logging
import signal
from typing import Protocol

from aiohttp import web

log = logging.getLogger(__name__)


class Server(Protocol):
    async def start(self) -> object: ...

    async def stop(self) -> None: ...


async def listen(app: web.Application, host: str, port: int, *, shutdown_timeout: float) -> web.AppRunner:
    """`app` served on host:port by aiohttp's production runner (AppRunner + TCPSite, no access log), cleaned up
    again when the port can't be had. The port it got (port 0: any free one) is `runner.addresses[0][1]`."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


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
