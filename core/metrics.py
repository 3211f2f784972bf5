"""earshot's Prometheus metrics, all defined here, and the one log line written per handled request.

Nothing imports prometheus_client until a long-running process calls `enable()` (the bots do, before
serving /metrics): a one-shot command pays neither the import (~35 ms) nor the bookkeeping. Until then
every recording function here is a cheap no-op, except the request log line, which is always written.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from core.errors import AccessRefused, EarshotError, InputError, ModelError, ModelThrottled, ModelUnavailable

if TYPE_CHECKING:
    from core.store.db import Database
    from core.values import Reply, Request, Usage

log = logging.getLogger("earshot.requests")
R = TypeVar("R")

JOB_STATES = ("queued", "running", "done", "failed", "expired")
# seconds; a model call on a 30 s clip usually takes 1-5 s, a combine step on long audio longer
MODEL_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120)
REQUEST_BUCKETS = (0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120, 300, 600)
FFMPEG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 120)


class Metrics:
    """Every earshot_… metric, on a registry of earshot's own (no unprefixed default collectors)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        from prometheus_client.process_collector import ProcessCollector

        self.registry = r = CollectorRegistry()
        ProcessCollector(namespace="earshot", registry=r)     # earshot_process_cpu_seconds_total, memory…
        self.requests = Counter("earshot_requests", "Requests handled, by platform, task and outcome",
                                ["platform", "task", "outcome"], registry=r)
        self.request_seconds = Histogram("earshot_request_seconds", "Time from a request to its answer",
                                         ["platform", "task"], buckets=REQUEST_BUCKETS, registry=r)
        self.model_seconds = Histogram("earshot_model_latency_seconds", "Time per model call, retries included",
                                       ["model"], buckets=MODEL_BUCKETS, registry=r)
        self.tokens = Counter("earshot_tokens", "Tokens the model service counted, by kind (audio, input, output)",
                              ["kind"], registry=r)
        self.jobs = Gauge("earshot_jobs", "Stored jobs by state, read from the database at each scrape",
                          ["state"], registry=r)
        self.errors = Counter("earshot_errors", "Failed requests by error class", ["error_class"], registry=r)
        self.ffmpeg_seconds = Histogram("earshot_ffmpeg_seconds", "Wall time of each ffmpeg run",
                                        buckets=FFMPEG_BUCKETS, registry=r)
        for kind in ("audio", "input", "output"):
            self.tokens.labels(kind)
        for state in JOB_STATES:
            self.jobs.labels(state).set(0)


_metrics: Metrics | None = None


def enable() -> Metrics:
    """Start recording (idempotent); returns the metrics, whose registry /metrics renders."""
    global _metrics
    if _metrics is None:
        _metrics = Metrics()
    return _metrics


def enabled() -> Metrics | None:
    return _metrics


def render() -> tuple[bytes, str]:
    """The Prometheus text exposition of everything recorded, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    return generate_latest(enable().registry), CONTENT_TYPE_LATEST


# --- recording ---------------------------------------------------------------------------------------
@contextmanager
def model_call(model: str) -> Iterator[None]:
    """Time one model call (failed ones too: a timeout is latency the user felt)."""
    if _metrics is None:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        _metrics.model_seconds.labels(model).observe(time.perf_counter() - started)


def tokens(usage: Usage) -> None:
    if _metrics is not None:
        for kind, n in (("audio", usage.audio_tokens), ("input", usage.input_tokens),
                        ("output", usage.output_tokens)):
            if n:
                _metrics.tokens.labels(kind).inc(n)


def ffmpeg_seconds(seconds: float) -> None:
    if _metrics is not None:
        _metrics.ffmpeg_seconds.observe(seconds)


async def refresh_jobs(history: Database) -> None:
    """Set earshot_jobs from the jobs table (on the store's thread; the loop never blocks on SQLite)."""
    metrics = enable()

    counts = {str(state): int(n) for state, n in await history.fetch("SELECT state, COUNT(*) FROM jobs GROUP BY state")}
    for state in sorted(set(JOB_STATES) | set(counts)):
        metrics.jobs.labels(state).set(counts.get(state, 0))


def outcome_of(exc: BaseException | None) -> str:
    """A short, bounded label for how a request ended."""
    if exc is None:
        return "ok"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, AccessRefused):
        return "refused"
    if isinstance(exc, InputError):
        return "bad_input"
    if isinstance(exc, EarshotError) and exc.operator:
        return "misconfigured"
    if isinstance(exc, (ModelUnavailable, ModelThrottled)):
        return "model_unavailable"
    if isinstance(exc, ModelError):
        return "model_error"
    return "error"


def request_done(request: Request, reply: Reply | None, exc: BaseException | None, seconds: float) -> None:
    """Count the request and write its one log line (platform, chat, task, audio, chunks, tokens, latency)."""
    outcome = outcome_of(exc)
    platform, task = request.chat.platform, request.task.value
    audio_s = (reply.duration or 0.0) if reply is not None else 0.0
    chunks = len(reply.parts) if reply is not None else 0
    used = reply.usage.total if reply is not None else 0
    if _metrics is not None:
        _metrics.requests.labels(platform, task, outcome).inc()
        _metrics.request_seconds.labels(platform, task).observe(seconds)
        if exc is not None and outcome != "cancelled":
            _metrics.errors.labels(type(exc).__name__).inc()
    fields = {"platform": platform, "chat": request.chat.chat_id, "task": task, "audio_seconds": round(audio_s, 1),
              "chunks": chunks, "tokens": used, "latency_seconds": round(seconds, 3), "outcome": outcome}
    if exc is not None and outcome != "cancelled":
        fields["error"] = type(exc).__name__
    log.info("handled %s", " ".join(f"{k}={v}" for k, v in fields.items()), extra={"earshot": fields})


def handled(fn: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Decorates Assistant.handle: every request is counted, timed and logged once, however it ends."""
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Request, *args: Any, **kwargs: Any) -> R:
        started = time.perf_counter()
        try:
            reply = await fn(self, request, *args, **kwargs)
        except BaseException as exc:
            request_done(request, None, exc, time.perf_counter() - started)
            raise
        request_done(request, reply, None, time.perf_counter() - started)  # type: ignore[arg-type]
        return reply
    return wrapper
