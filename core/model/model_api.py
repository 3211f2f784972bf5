"""The one seam between the Assistant and a model service: the answer, the client protocol.

Messages travel in one neutral shape, whichever API serves the model: `{"role", "content": [items]}` with
`text_item(...)` and `audio_item(...)` items (DashScope's native shape). Each client (core.model.dashscope,
core.model.openai_compat) turns them into its own protocol; core.model.model_client chooses one for the model.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from core.values import Usage

OnDelta = Callable[[str], Awaitable[None]]
SPEECH_RATE = 24_000            # spoken answers: s16le mono PCM at this rate


@dataclass(frozen=True, slots=True)
class ModelAnswer:
    text: str
    usage: Usage
    request_id: str | None
    finish_reason: str | None
    speech: bytes = b""         # the answer spoken, as s16le mono PCM at SPEECH_RATE (models that speak)
    language: str | None = None  # a recognizer: the language it heard (or was told)
    emotion: str | None = None   # a recognizer: the speaker's emotion it reports


class ModelClient(Protocol):
    model: str
    max_attempts: int

    async def generate(self, messages: list[dict], *, max_tokens: int | None = None,
                       on_delta: OnDelta | None = None, voice: str | None = None) -> ModelAnswer:
        """Ask the model; with on_delta, stream text as it arrives; with voice, also get the answer spoken."""
        ...

    async def aclose(self) -> None: ...
