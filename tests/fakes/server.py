"""Serve a stand-in aiohttp app on a loopback port: in the test's event loop, or in a thread of its own.

In-loop (`async with Served(app) as s: s.url`) suits tests that drive our async code directly;
`Threaded(app)` suits tests that run `earshot` as a subprocess or call from sync code.
"""
from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web


def _loopback_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # port 0: the OS picks a free one, so tests never clash
    return sock


class Served:
    """Run `app` in the current event loop until the context exits."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.url = ""

    async def __aenter__(self) -> Served:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        sock = _loopback_socket()
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()


class Threaded:
    """Run `app` on its own event loop in a daemon thread; `call` runs a function on that loop."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.url = ""
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._served = Served(self.app)
        self.loop.run_until_complete(self._served.__aenter__())
        self.url = self._served.url
        self._ready.set()
        self.loop.run_forever()

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        async def run() -> Any:
            return fn(*args, **kwargs)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def __enter__(self) -> Threaded:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("stand-in server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._served.__aexit__(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
