"""GET /healthz and GET /metrics for the long-running processes (both bots share this).

/healthz answers 200 "ok" when the platform connection and the database answer, else 503 with one line
per reason, so a container runtime or load balancer can restart or route around the process. The reasons
say what is wrong in a few words, never a path or an exception's text (those would show strangers the host's
layout): the details go to the log. /metrics is the Prometheus text format of core.metrics, served on
EARSHOT_METRICS_PORT only (HealthServer, with /healthz); the bots that serve a public port of their own (Slack's
HTTP mode, the WhatsApp webhook) add /healthz alone to it, and open both ports through `Ports`. Neither takes
a request body (bots.web.body_cap).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from core import metrics
from core.store.db import Database

from .web import NO_BODY, body_cap, listen

log = logging.getLogger(__name__)

# None when the platform is reachable and we are connected; otherwise why not, in a few words
PlatformProbe = Callable[[], Awaitable[str | None]]
PROBE_TIMEOUT = 5.0
# the platform is asked at most this often: health checks and scrapes must not spend its rate limits
PLATFORM_CACHE_SECONDS = 15.0


class Health:
    """The two handlers, over the process's database and a probe of its platform connection."""

    def __init__(self, history: Database, platform: PlatformProbe, *, name: str,
                 cache_seconds: float = PLATFORM_CACHE_SECONDS) -> None:
        metrics.enable()
        self.history = history
        self.platform = platform
        self.name = name
        self.cache_seconds = cache_seconds
        self._platform_seen: tuple[float, str | None] | None = None

    def add_routes(self, app: web.Application, *, metrics: bool = True) -> None:
        app.router.add_get("/healthz", self.healthz)
        if metrics:
            app.router.add_get("/metrics", self.metrics)

    async def problems(self) -> list[str]:
        return [p for p in await asyncio.gather(self._database(), self._platform()) if p]

    async def healthz(self, _: web.Request) -> web.Response:
        problems = await self.problems()
        if problems:
            return web.Response(status=503, text="\n".join(problems) + "\n")
        return web.Response(text="ok\n")

    async def metrics(self, _: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(metrics.refresh_jobs(self.history), PROBE_TIMEOUT)
        except Exception as exc:     # the rest of the figures are still worth scraping
            log.warning("could not count jobs for /metrics (%s)", type(exc).__name__)
        body, content_type = metrics.render()
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def _database(self) -> str | None:
        path = getattr(self.history, "path", None)
        if isinstance(path, Path) and not path.exists():         # an SQLite file deleted under the process
            log.warning("/healthz: the database file %s is gone", path)
            return "database: the file is gone"
        try:
            await asyncio.wait_for(self.history.fetchone("SELECT 1"), PROBE_TIMEOUT)
        except Exception as exc:
            log.warning("/healthz: the database %s does not answer (%s: %s)", self.history.where,
                        type(exc).__name__, str(exc)[:300])
            return "database: does not answer"
        return None

    async def _platform(self) -> str | None:
        now = time.monotonic()
        if self._platform_seen is not None and now - self._platform_seen[0] < self.cache_seconds:
            return self._platform_seen[1]
        try:
            problem = await asyncio.wait_for(self.platform(), PROBE_TIMEOUT)
        except Exception as exc:
            problem = f"no answer ({type(exc).__name__})"
        result = f"{self.name}: {problem}" if problem else None
        self._platform_seen = (time.monotonic(), result)
        return result


class HealthServer:
    """Serves a Health on a port of its own: `await start()`, later `await stop()`."""

    def __init__(self, health: Health, *, port: int, host: str = "0.0.0.0") -> None:
        self.health = health
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        app = web.Application(client_max_size=1, middlewares=[body_cap(NO_BODY)])
        self.health.add_routes(app)
        self._runner = await listen(app, self.host, self.port, shutdown_timeout=1)
        self.port = self._runner.addresses[0][1]
        log.info("health and metrics on http://%s:%d/healthz and /metrics", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class Ports:
    """A bot's two HTTP servers: its public app, and `health` with /metrics on EARSHOT_METRICS_PORT (none when
    the port is 0), so /metrics is never on the public port. `port = await ports.open(...)`; on the way down
    `await ports.wind_down(drain)`: no new requests (the public requests in progress go on), `drain` lets the
    bot's work finish, then both close. A failure while opening closes whatever was opened."""

    def __init__(self) -> None:
        self._public: web.AppRunner | None = None
        self._metrics: HealthServer | None = None

    @property
    def serving(self) -> bool:
        return self._public is not None

    async def open(self, app: web.Application, health: Health, *, host: str, port: int, metrics_port: int,
                   what: str, path: str) -> int:
        """`app` on host:port and `health` on metrics_port; the public port got (port 0: any free one). `what`
        listens at `path`, as the log says."""
        try:
            self._public = await listen(app, host, port, shutdown_timeout=5)
            if metrics_port:
                self._metrics = HealthServer(health, port=metrics_port)
                await self._metrics.start()
        except BaseException:
            await self.close()
            raise
        got: int = self._public.addresses[0][1]
        log.info("%s listening on http://%s:%d%s", what, host, got, path)
        return got

    async def stop_taking(self) -> None:
        if self._metrics is not None:
            await self._metrics.stop()
            self._metrics = None
        if self._public is not None:
            await self._public.shutdown()

    async def wind_down(self, drain: Callable[[], Awaitable[None]]) -> None:
        """The way down, when serving: no new requests, `drain` lets the work in flight finish, then close."""
        if self.serving:
            await self.stop_taking()
            await drain()
            await self.close()

    async def close(self) -> None:
        if self._metrics is not None:
            await self._metrics.stop()
            self._metrics = None
        if self._public is not None:
            runner, self._public = self._public, None
            await runner.cleanup()


async def serve_health(history: Database, platform: PlatformProbe, *, name: str,
                       port: int) -> HealthServer | None:
    """EARSHOT_METRICS_PORT's server, started; None when the port is 0 (turned off)."""
    if not port:
        return None
    server = HealthServer(Health(history, platform, name=name), port=port)
    await server.start()
    return server

