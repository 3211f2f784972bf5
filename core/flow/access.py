"""Who may use earshot and how much: allowed lists, daily token budgets, a per-user rate limit.

Enforced in the core (Assistant.handle) before any decoding or model call, so every adapter gets it;
adapters also call `check` before downloading a file, so a stranger costs nothing at all. A refusal is
said once, then earshot stays quiet: strangers hear it once a day (remembered in SQLite, across
restarts), people over a budget once an hour, people going too fast once per wait.

Budgets count the model's reported usage (audio + input + output tokens) stored with each turn, per
UTC day. Requests in flight hold an estimate of what they will cost, so a burst of long recordings
can't all pass on the same numbers; tokens spent on a request that then failed are recorded too.

Replicas on one PostgreSQL database (the store's engine says so) share everything: usage and refusals
said once a day are rows already; the rate limit and the in-flight holds move from memory to the
database too (core.store.shared_limits), or each replica would let its own burst through.
"""
from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from core import metrics
from core.config import Settings
from core.errors import AccessRefused
from core.store import usage_ledger
from core.store.db import Database
from core.store.seen_events import SeenEvents
from core.store.shared_limits import RateHits, SpendHolds
from core.store.usage_ledger import UsageLedger
from core.values import ChatKey, Request, Sender, Usage
from core.words import amounts, messages
from core.words.i18n import translator

log = logging.getLogger(__name__)

DAY = 86400.0
# the terminal is the operator's own: never refused, and its spending (still recorded, shown to admins in /usage)
# is left out of the bots' budgets, the global one included
EXEMPT_PLATFORMS = set(usage_ledger.OUTSIDE_BUDGETS)
PLATFORM_NAMES = {"telegram": "Telegram", "slack": "Slack", "discord": "Discord", "whatsapp": "WhatsApp",
                  "cli": "terminal"}
BUDGET_QUIET = 3600.0             # an over-budget user hears it again after an hour at most
TOP = 10                          # spenders listed for admins
KEYS_KEPT = 10_000                # people remembered (names, rate windows, refusals) before pruning


day_start = usage_ledger.day_start      # UTC midnight: budgets count from there


wait_words = amounts.wait      # '3 h 20 min', '12 min', '40 s' (core.words.amounts); wait_words(s, lang) in a language

# what a cost that doesn't fit a budget is refused with, by budget: whole sentences, one per budget
TOO_COSTLY: dict[str, str] = {"user": messages.TOO_COSTLY_USER, "chat": messages.TOO_COSTLY_CHAT,
                              "global": messages.TOO_COSTLY_GLOBAL}
# a cost over a whole day's budget: waiting won't help, the operator's setting would
NEVER_FITS: dict[str, str] = {"user": messages.NEVER_FITS_USER, "chat": messages.NEVER_FITS_CHAT,
                              "global": messages.NEVER_FITS_GLOBAL}
BUDGET_SETTINGS = {"user": "EARSHOT_USER_DAILY_TOKENS", "chat": "EARSHOT_CHAT_DAILY_TOKENS",
                   "global": "EARSHOT_GLOBAL_DAILY_TOKENS"}
DIGEST_TOO_COSTLY: dict[str, str] = {"user": messages.DIGEST_TOO_COSTLY_USER, "chat": messages.DIGEST_TOO_COSTLY_CHAT,
                                     "global": messages.DIGEST_TOO_COSTLY_GLOBAL}


# --- what /usage shows ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Allowance:
    """One budget today: tokens used and the limit (0: no limit)."""

    used: int
    limit: int

    @property
    def left(self) -> int | None:
        return None if self.limit == 0 else max(0, self.limit - self.used)


@dataclass(frozen=True, slots=True)
class Spender:
    """A user or a chat and what it used today, for admins."""

    platform: str
    id: str
    tokens: int
    name: str | None = None       # @username or public chat name, when the platform told us


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Everything /usage shows; adapters render it."""

    here: Usage                   # this chat today, by kind of token
    user: Allowance | None        # None when the platform gave no user (a channel post)
    chat: Allowance
    everyone: Allowance
    resets_in: float              # seconds to midnight UTC, when every budget starts again
    requests_per_minute: int      # 0: no rate limit
    admin: bool = False
    top_users: tuple[Spender, ...] = ()
    top_chats: tuple[Spender, ...] = ()
    terminal: int = 0             # admins: tokens the terminal (earshot transcribe…) used today, outside the budgets
    seconds: float = 0.0          # audio heard in this chat today (the recognizer bills per second of it)


def spender_label(s: Spender) -> str:
    who = f"@{s.name} ({s.id})" if s.name else s.id
    return f"{who}, {PLATFORM_NAMES.get(s.platform, s.platform)}"


def usage_text(report: UsageReport, label: Callable[[Spender], str] = spender_label, lang: str | None = None) -> str:
    """The report in plain sentences (no markup: adapters escape it as their platform needs), in a chat's language."""
    t = translator(lang)
    h = report.here
    lines = [t.text(messages.USAGE_HERE, total=h.total, audio=h.audio_tokens, input=h.input_tokens,
                    output=h.output_tokens)]
    if report.seconds:
        lines.append(t.text(messages.USAGE_AUDIO, length=amounts.duration(round(report.seconds), t.lang)))
    rows = [(messages.USAGE_YOU, report.user), (messages.USAGE_THIS_CHAT, report.chat),
            (messages.USAGE_EVERYONE, report.everyone)]
    for who, a in rows:
        if a is None:
            continue
        if a.limit:
            lines.append(t.text(messages.USAGE_LIMITED, who=t.text(who), used=a.used, limit=a.limit, left=a.left))
        else:
            lines.append(t.text(messages.USAGE_UNLIMITED, who=t.text(who), used=a.used))
    if any(a is not None and a.limit for _, a in rows):
        lines.append(t.text(messages.USAGE_RESETS, wait=wait_words(report.resets_in, t.lang)))
    if report.requests_per_minute:
        lines.append(t.text(messages.USAGE_RATE, limit=report.requests_per_minute))
    if report.admin and report.terminal:
        lines.append(t.text(messages.USAGE_TERMINAL, used=report.terminal))
    for title, spenders in ((messages.USAGE_TOP_USERS, report.top_users),
                            (messages.USAGE_TOP_CHATS, report.top_chats)):
        if report.admin and spenders:
            lines += ["", t.text(title), *(f"{i}. {label(s)}: {s.tokens:,}" for i, s in enumerate(spenders, 1))]
    return "\n".join(lines)


# --- rate limit ----------------------------------------------------------------------------------

class RateLimiter:
    """At most `per_minute` requests in any 60 s per key (a sliding window); memory stays bounded."""

    WINDOW = 60.0

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._hits: dict[tuple[str, str], deque[float]] = {}

    def __len__(self) -> int:
        """How many senders it is keeping track of (idle ones are dropped after a minute)."""
        return len(self._hits)

    def wait(self, key: tuple[str, str]) -> float:
        """Seconds until `key` may make another request; 0 when it may now."""
        if not self.per_minute:
            return 0.0
        hits = self._recent(key)
        return 0.0 if len(hits) < self.per_minute else hits[0] + self.WINDOW - self._clock()

    def hit(self, key: tuple[str, str]) -> None:
        if self.per_minute:
            self._recent(key).append(self._clock())
            if len(self._hits) > KEYS_KEPT:
                self._prune()

    def _recent(self, key: tuple[str, str]) -> deque[float]:
        hits = self._hits.setdefault(key, deque())
        cutoff = self._clock() - self.WINDOW
        while hits and hits[0] <= cutoff:
            hits.popleft()
        return hits

    def _prune(self) -> None:
        cutoff = self._clock() - self.WINDOW
        for key in [k for k, v in self._hits.items() if not v or v[-1] <= cutoff]:
            del self._hits[key]


# --- metering --------------------------------------------------------------------------------

@dataclass(eq=False)
class _Spend:
    """One admitted request in flight: what it is expected to cost and what the model has reported."""

    platform: str
    chat_id: str
    user_id: str | None
    held: int = 0
    spent: Usage = Usage()
    holds: SpendHolds | None = None     # replicas: where the other replicas see what it holds
    id: str = ""

    @property
    def counted(self) -> int:
        return max(self.held, self.spent.total)

    async def share(self) -> None:
        """Tell the other replicas what it counts now (and that its process is alive)."""
        if self.holds is not None:
            await self.holds.hold(self.id, self.platform, self.chat_id, self.user_id, self.counted)


_current: ContextVar[_Spend | None] = ContextVar("earshot_spend", default=None)


class MeteredClient:
    """Wraps the model client so each answer's usage is added to the request being served."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def generate(self, *args: Any, **kwargs: Any) -> Any:
        return await self._charged("generate", *args, **kwargs)

    async def recognize(self, *args: Any, **kwargs: Any) -> Any:
        """A recognizer's transcript (core.model.openai_compat), charged the same way."""
        return await self._charged("recognize", *args, **kwargs)

    async def speak(self, *args: Any, **kwargs: Any) -> Any:
        """A voice model's reading of an answer (core.model.voice), charged by the characters it bills."""
        return await self._charged("speak", *args, **kwargs)

    async def _charged(self, method: str, *args: Any, **kwargs: Any) -> Any:
        with metrics.model_call(str(getattr(self._client, "model", "unknown"))):
            answer = await getattr(self._client, method)(*args, **kwargs)
        metrics.tokens(answer.usage)
        if (spend := _current.get()) is not None:
            spend.spent = spend.spent + answer.usage
            try:
                await spend.share()   # replicas: what it counts now, and a renewal of its hold
            except Exception:         # the answer is paid for: keep it; the hold stays at its estimate
                log.warning("could not update what a request in flight holds", exc_info=True)
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


# --- the policy ------------------------------------------------------------------------------



class AccessPolicy:
    """Decides who may ask, and whether today's budgets and the rate limit leave room for it."""

    def __init__(self, settings: Settings, history: Database, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.history = history
        self.ledger = UsageLedger(history)
        self.events = SeenEvents(history)
        self._clock = clock
        self._users = set(settings.allowed_users)
        self._chats = set(settings.allowed_chats)
        self._admins = set(settings.admin_users)
        self.rate = RateLimiter(settings.user_requests_per_minute)
        self._open: set[_Spend] = set()
        # replicas on one PostgreSQL database count these in it; one process (SQLite) keeps them in memory
        self.shared = history.engine == "postgresql"
        self.shared_rate = RateHits(history, settings.user_requests_per_minute, clock) if self.shared else None
        self.holds = SpendHolds(history, clock) if self.shared else None
        self._quiet_until: dict[tuple[str, ...], float] = {}
        self._names: dict[tuple[str, str, str], str] = {}   # (kind, platform, id) -> name

    # --- who --------------------------------------------------------------------------------------
    @property
    def open_to_all(self) -> bool:
        return not (self._users or self._chats)

    def allowed(self, chat: ChatKey, sender: Sender) -> bool:
        """Anyone when no list is set; else a listed user, chat or Slack workspace, or an admin."""
        if self.open_to_all or chat.platform in EXEMPT_PLATFORMS:
            return True
        user, here, team = _identities(chat, sender)
        return bool((user | team) & (self._users | self._admins) or (here | team) & self._chats)

    def is_admin(self, chat: ChatKey, sender: Sender) -> bool:
        if chat.platform in EXEMPT_PLATFORMS:
            return True
        return bool(_identities(chat, sender)[0] & self._admins)

    async def _refuse_strangers(self, chat: ChatKey, sender: Sender, *, quietly: bool = False) -> None:
        self._remember_names(chat, sender)
        if self.allowed(chat, sender):
            return
        subject = sender.user_id or chat.chat_id
        day = int(self._clock() // DAY)
        # work nobody asked for (background listening) must not use up the one refusal a person hears
        first = not quietly and await self.events.claim(chat.platform, f"refused:{subject}:{day}")
        if first:
            log.info("refused %s user %s in chat %s: not on the allowed lists", chat.platform,
                     sender.user_id or "-", chat.chat_id)
        if sender.user_id:
            raise AccessRefused(messages.NOT_ALLOWED, silent=not first, fmt=dict(
                platform=PLATFORM_NAMES.get(chat.platform, chat.platform), user_id=sender.user_id))
        raise AccessRefused(messages.NOT_ALLOWED_HERE, silent=not first)

    # --- how much -------------------------------------------------------------------------------
    async def check(self, chat: ChatKey, sender: Sender, *, spending: bool = True, count: bool = False,
                    quietly: bool = False, rate: bool = True, lists: bool = True) -> None:
        """Raise AccessRefused unless this sender may ask now.

        spending=False checks only the allowed lists (for commands that cost nothing, like reset);
        count=True spends one request of the rate limit; quietly=True is for work nobody asked for
        (background listening): no rate limit, and refusals are silent and not remembered as said;
        rate=False skips the rate limit (a job the adapter already counted when it accepted it);
        lists=False skips the allowed lists (work an admin set up earlier, like a scheduled digest).
        """
        if chat.platform in EXEMPT_PLATFORMS:
            return
        if lists:
            await self._refuse_strangers(chat, sender, quietly=quietly)
        if not spending:
            return
        key = (chat.platform, sender.user_id or chat.chat_id)
        rate = rate and not quietly
        if rate and (wait := await self._take_rate(key, count)) > 0:
            limit = self.settings.user_requests_per_minute
            await self._refuse(("rate", *key), wait, messages.RATE_LIMITED,
                               dict(limit=limit, wait=amounts.Span(wait_words, wait)))
        for kind, allowance in await self._allowances(chat.platform, chat.chat_id, sender.user_id):
            if allowance.limit and allowance.used >= allowance.limit:
                template, fmt = _budget_message(kind, allowance.limit, self._to_midnight())
                if quietly:
                    raise AccessRefused(template, silent=True, fmt=fmt)
                await self._refuse((kind, *key), BUDGET_QUIET, template, fmt)

    @contextlib.asynccontextmanager
    async def admit(self, request: Request, *, quietly: bool = False, lists: bool = True) -> AsyncIterator[None]:
        """Check, then meter the request while it runs (see `afford` and MeteredClient).

        quietly=True for background work nobody asked for, lists=False for work set up earlier: see `check`."""
        # a job tried again after an outage or a restart was rate-limited and counted when it first ran;
        # the allowed lists still apply, and `afford` still weighs its cost against today's budgets
        await self.check(request.chat, request.sender, count=True, spending=not request.retry,
                         quietly=quietly, rate=not request.admitted, lists=lists)
        spend = _Spend(request.chat.platform, request.chat.chat_id, request.user_id, holds=self.holds,
                       id=uuid.uuid4().hex)
        self._open.add(spend)
        token = _current.set(spend)
        try:
            yield
        except BaseException:
            # parts the model answered before the request failed were paid for all the same
            if spend.spent.total:
                await self._record_spent(request, spend.spent)
            raise
        finally:
            _current.reset(token)
            self._open.discard(spend)
            if self.holds is not None and (spend.held or spend.spent.total):
                await self._release(spend)

    async def afford(self, tokens: int, *, refusals: Mapping[str, str] = TOO_COSTLY, **fmt: object) -> None:
        """Called once the cost is known (the audio decoded, a digest's notes packed): refuse a request
        whose estimated cost doesn't fit today. refusals: the refusal for each budget ("user", "chat",
        "global"), with need, left and wait; fmt: more values they name (a digest's prefix)."""
        spend = _current.get()
        if spend is None or spend.platform in EXEMPT_PLATFORMS:
            return
        allowances = await self._allowances(spend.platform, spend.chat_id, spend.user_id, exclude=spend)
        for kind, a in allowances:
            if a.limit and tokens > a.limit:   # no day is long enough: say so, and which setting would fit it
                raise AccessRefused(NEVER_FITS[kind], fmt=dict(fmt, need=tokens, limit=a.limit,
                                                               setting=BUDGET_SETTINGS[kind]))
        for kind, a in allowances:
            if a.limit and a.used + tokens > a.limit:
                raise AccessRefused(refusals[kind], fmt=dict(fmt, need=tokens, left=a.left,
                                                             wait=amounts.Span(wait_words, self._to_midnight())))
        spend.held = tokens
        await spend.share()

    async def report(self, chat: ChatKey, sender: Sender, *, private: bool = False) -> UsageReport:
        """Today's numbers for /usage; admins also get the top users and chats, in a private chat only
        (in a group that would show everyone there what other chats used)."""
        await self._refuse_strangers(chat, sender)
        allowances = dict(await self._allowances(chat.platform, chat.chat_id, sender.user_id))
        since = day_start(self._clock())
        admin = private and self.is_admin(chat, sender)

        here = await usage_ledger.usage_in(self.history, since, chat.platform, chat.chat_id)
        heard = await usage_ledger.seconds_in(self.history, since, chat.platform, chat.chat_id)
        users: list[tuple[str, str, int]] = []
        chats: list[tuple[str, str, int]] = []
        terminal = 0
        if admin:
            users = await usage_ledger.top_in(self.history, since, "user_id", TOP)
            chats = await usage_ledger.top_in(self.history, since, "chat_id", TOP)
            terminal = await usage_ledger.platform_total_in(self.history, since, "cli")
        return UsageReport(
            here=here, user=allowances["user"] if sender.user_id else None, chat=allowances["chat"],
            everyone=allowances["global"], resets_in=self._to_midnight(),
            requests_per_minute=self.settings.user_requests_per_minute, admin=admin,
            top_users=tuple(Spender(p, i, t, self._names.get(("user", p, i))) for p, i, t in users),
            top_chats=tuple(Spender(p, i, t, self._names.get(("chat", p, i))) for p, i, t in chats
                            if p not in EXEMPT_PLATFORMS),
            terminal=terminal, seconds=heard)

    # --- internals ----------------------------------------------------------------------------------
    async def _allowances(self, platform: str, chat_id: str, user_id: str | None, *,
                          exclude: _Spend | None = None) -> list[tuple[str, Allowance]]:
        s = self.settings
        since = day_start(self._clock())
        user, here, everyone = await usage_ledger.totals_in(self.history, since, platform, chat_id, user_id)
        if self.holds is not None:   # requests in flight on every replica
            held = await self.holds.held(platform, chat_id, user_id, exclude=exclude.id if exclude else None)
            user, here, everyone = user + held[0], here + held[1], everyone + held[2]
        for spend in self._open if self.holds is None else ():   # requests in flight count their expected cost
            if spend is exclude or spend.platform in EXEMPT_PLATFORMS:
                continue
            everyone += spend.counted
            if spend.platform == platform:
                here += spend.counted if spend.chat_id == chat_id else 0
                user += spend.counted if user_id and spend.user_id == user_id else 0
        out = [("global", Allowance(everyone, s.global_daily_tokens)), ("chat", Allowance(here, s.chat_daily_tokens))]
        return out + [("user", Allowance(user, s.user_daily_tokens if user_id else 0))]

    async def _take_rate(self, key: tuple[str, str], count: bool) -> float:
        """Seconds `key` must wait for its next request (0: now, and with `count` this one is counted)."""
        if self.shared_rate is not None:
            return await self.shared_rate.take(key, count=count)   # checked and counted in one transaction
        wait = self.rate.wait(key)
        if not wait and count:
            self.rate.hit(key)   # no await since the check: concurrent requests can't all slip through
        return wait

    async def _release(self, spend: _Spend) -> None:
        try:
            if spend.holds is not None:
                await spend.holds.release(spend.id)
        except Exception:   # it expires by itself; never hide what brought us here
            log.exception("could not release the %d tokens a finished request held", spend.counted)

    async def _refuse(self, key: tuple[str, ...], quiet_for: float, message: str, fmt: dict[str, object]) -> None:
        """Raise the refusal (a message and its values); silent if the same one was said within `quiet_for` s
        (by any replica, when they share the database)."""
        now = self._clock()
        if self.shared:    # replicas: remembered in the database
            silent = not await self.events.claim_every(key[1], "said:" + "/".join(key), quiet_for, now)
        else:
            silent = self._quiet_until.get(key, 0.0) > now
        if not silent:
            if len(self._quiet_until) > KEYS_KEPT:
                self._quiet_until = {k: t for k, t in self._quiet_until.items() if t > now}
            self._quiet_until[key] = now + quiet_for
            log.info("refused %s: %s", "/".join(key), message.format(**fmt))
        raise AccessRefused(message, silent=silent, fmt=fmt)

    def _to_midnight(self) -> float:
        now = self._clock()
        return day_start(now) + DAY - now

    async def _record_spent(self, request: Request, usage: Usage) -> None:
        try:
            await self.ledger.record(request.chat, request.user_id, usage, role="spent", now=self._clock())
        except Exception:   # never hide the failure that brought us here
            log.exception("could not record %d tokens spent on a failed request", usage.total)

    def _remember_names(self, chat: ChatKey, sender: Sender) -> None:
        for kind, ident, name in (("user", sender.user_id, sender.user_name), ("chat", chat.chat_id, sender.chat_name)):
            if ident and name and self._names.get((kind, chat.platform, ident)) != name:
                if len(self._names) >= KEYS_KEPT:
                    self._names.pop(next(iter(self._names)))
                self._names[(kind, chat.platform, ident)] = name


def _identities(chat: ChatKey, sender: Sender) -> tuple[set[str], set[str], set[str]]:
    """The ways a list entry can name this user, this chat and (Slack) this workspace."""
    user = {sender.user_id} if sender.user_id else set()
    here = {chat.chat_id}
    # @names only where the platform makes them unique and verified: Telegram
    if chat.platform == "telegram":
        if sender.user_name:
            user.add("@" + sender.user_name.lower())
        if sender.chat_name:
            here.add("@" + sender.chat_name.lower())
    team = {sender.team_id} if sender.team_id else set()
    return user, here, team


def _budget_message(kind: str, limit: int, to_midnight: float) -> tuple[str, dict[str, object]]:
    template = {"user": messages.USER_BUDGET_USED, "chat": messages.CHAT_BUDGET_USED,
                "global": messages.GLOBAL_BUDGET_USED}[kind]
    return template, dict(limit=limit, wait=amounts.Span(wait_words, to_midnight))
