"""How a job fails, and what its user is told: an outage to wait out, an apology, a clear expiry.

A model outage (unavailable or throttled beyond the client's own retries) is not a failure: the user
is told once that the answer will come when the model is back, the job waits with backoff, and a
circuit breaker shared by all jobs stops calling the service until a probe finds it up. A job that
can't be answered within `EARSHOT_JOB_TTL` of its arrival ends with a clear failure. Quiet work
(listening for digests) is told nothing, success or failure.
"""
from __future__ import annotations

from core.errors import BadModelResponse, EarshotError, ModelThrottled, ModelUnavailable
from core.flow.lanes import is_quiet
from core.store.jobs import Failure, Job
from core.values import Reply
from core.words import amounts, messages

span_words = amounts.rounded     # '24 hours', '60 minutes', '45 seconds' (core.words.amounts)


def is_outage(err: EarshotError) -> bool:
    """The model service is down or overloaded, so waiting can help (unlike bad input or a bad key)."""
    return isinstance(err, (ModelUnavailable, ModelThrottled)) or (isinstance(err, BadModelResponse)
                                                                   and err.retryable)


def internal(job: Job) -> Failure:
    """What the user is told when earshot itself failed: a short apology in the job's language."""
    return Failure(messages.text(messages.INTERNAL, job.lang))


def expired(job: Job, ttl: float) -> Failure:
    """What the user is told when no answer came within `ttl` of the job's arrival."""
    return Failure(messages.text(messages.JOB_EXPIRED, job.lang, waited=span_words(ttl, job.lang)))


def said(job: Job, outcome: Reply | Failure) -> Reply | Failure | None:
    """What the user is to be told: nothing at all for quiet work."""
    return None if is_quiet(job) else outcome
