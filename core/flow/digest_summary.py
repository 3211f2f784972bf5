"""A digest's body: a chat's voice notes summed up within the model's input limit.

The transcripts, as dated lines, are packed into as few model requests as fit the model's input limit;
each batch is summarised, and the summaries are combined (in rounds, if they don't fit one request). The
cost is estimated cautiously before the first call, so budgets are checked before anything is spent.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol
from zoneinfo import ZoneInfo

from core.flow.digest_command import zone_of
from core.flow.together import all_or_nothing
from core.model import prompts
from core.model.tokens import PROMPT_RESERVE, estimate_tokens
from core.store.digest_store import VoiceNote
from core.values import Reply, Request, Usage
from core.words.text import split_text

if TYPE_CHECKING:
    from core.config import Settings
    from core.model.catalog import ModelInfo
    from core.model.dashscope import ModelAnswer

PART_TOKENS = 600                 # a batch's notes: short, so many of them fit one combining request


class Pipeline(Protocol):
    """What digests need of core.flow.service.Assistant (named here, so this module doesn't import it)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def limits(self) -> ModelInfo: ...

    async def transcribe_quietly(self, request: Request) -> Reply: ...

    async def complete(self, instruction: str, *, max_tokens: int | None = None) -> ModelAnswer: ...


@dataclass(frozen=True, slots=True)
class Digest:
    """A digest of a chat's voice notes, and what it covered."""

    text: str
    notes: int = 0
    seconds: float = 0.0
    usage: Usage = Usage()
    until: float = 0.0
    last_note: int = 0               # the newest note covered


class Summariser:
    """Writes a digest's body through the Assistant's text calls (`complete`), a few batches at a time."""

    def __init__(self, assistant: Pipeline) -> None:
        self.assistant = assistant
        self.settings = assistant.settings

    def _budget(self, template: str) -> int:
        """Tokens of notes one request may carry beside this instruction, within the model's input limit."""
        limits = self.assistant.limits
        return limits.max_input - estimate_tokens(prompts.SYSTEM) - estimate_tokens(template) - PROMPT_RESERVE

    def batches(self, notes: list[VoiceNote], tz: str) -> list[list[str]]:
        """The notes as dated lines, packed into as few requests as fit the model's input limit."""
        zone = zone_of(tz) or ZoneInfo("UTC")
        stamps = [datetime.fromtimestamp(n.sent, zone) for n in notes]
        one_day = stamps[0].date() == stamps[-1].date()
        lines: list[str] = []
        budget = self._budget(max(prompts.DIGEST, prompts.DIGEST_PART, key=len))
        for note, at in zip(notes, stamps, strict=True):
            when = at.strftime("%H:%M" if one_day else "%a %d %b %H:%M")
            head = prompts.digest_line(when, note.user_name or note.user_id or "someone", note.seconds, "")
            lines.extend(head + piece for piece in _fit(note.text or "[nothing heard]", budget - _tokens(head)))
        return _pack(lines, budget)

    def estimate(self, batches: list[list[str]]) -> int:
        """Tokens the digest will cost at most, cautiously: every batch's request and answer, and the
        requests combining the answers."""
        call = _tokens(prompts.SYSTEM) + _tokens(max(prompts.DIGEST, prompts.DIGEST_PART, key=len)) + PROMPT_RESERVE
        cost = sum(call + _tokens("\n\n".join(batch)) for batch in batches)
        if len(batches) > 1:     # each part's answer is read once more to combine them, and answered
            cost += 2 * len(batches) * PART_TOKENS + call
        return cost

    async def summarise(self, batches: list[list[str]], lang: str | None = None) -> tuple[str, Usage]:
        """The digest's body; written in `lang` when the chat chose one, else in the notes' own language."""
        usage = Usage()
        if len(batches) == 1:
            answer = await self.assistant.complete(prompts.digest_instruction(
                prompts.in_language(prompts.DIGEST, None, lang), batches[0]))
            return answer.text.strip(), answer.usage
        parts, usage = await self._each(prompts.in_language(prompts.DIGEST_PART, None, lang), batches)
        return await self._combine(parts, usage, lang)

    async def _combine(self, parts: list[str], usage: Usage, lang: str | None = None) -> tuple[str, Usage]:
        """Join batch notes into one digest, merging in rounds while they don't fit one request."""
        budget = self._budget(max(prompts.DIGEST_COMBINE, prompts.DIGEST_MERGE, key=len))
        while True:
            # at most half a request each, so every round at least halves their number
            parts = [cut for p in parts for cut in _fit(p, budget // 2)[:1]]
            batches = _pack(parts, budget)
            if len(batches) == 1:
                answer = await self.assistant.complete(prompts.digest_instruction(
                    prompts.in_language(prompts.DIGEST_COMBINE, None, lang), batches[0]))
                return answer.text.strip(), usage + answer.usage
            parts, spent = await self._each(prompts.in_language(prompts.DIGEST_MERGE, None, lang), batches)
            usage += spent

    async def _each(self, template: str, batches: list[list[str]]) -> tuple[list[str], Usage]:
        """One request per batch, a few at a time, answers in batch order."""
        gate = asyncio.Semaphore(self.settings.chunk_concurrency)

        async def ask(batch: list[str]) -> tuple[str, Usage]:
            async with gate:
                answer = await self.assistant.complete(prompts.digest_instruction(template, batch),
                                                       max_tokens=PART_TOKENS)
            return answer.text.strip(), answer.usage

        done = await all_or_nothing(ask(b) for b in batches)   # one failed batch fails the digest
        return [text for text, _ in done], sum((u for _, u in done), Usage())


_tokens = estimate_tokens


def _fit(text: str, budget: int) -> list[str]:
    """`text` in pieces of at most `budget` tokens (by the cautious estimate), cut at spaces when possible."""
    return split_text(text, max(3, (budget - 5) * 3), size=lambda piece: len(piece.encode("utf-8"))) or [""]


def _pack(lines: list[str], budget: int) -> list[list[str]]:
    """Consecutive lines grouped so each group's estimate stays within `budget`; order is kept."""
    batches: list[list[str]] = [[]]
    used = 0
    for line in lines:
        cost = _tokens(line) + 1          # +1: the blank line between them
        if batches[-1] and used + cost > budget:
            batches.append([])
            used = 0
        batches[-1].append(line)
        used += cost
    return batches
