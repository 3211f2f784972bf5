"""The one seam between the Assistant and a model service, and the choice of client for a model.

Messages travel in one neutral shape, whichever API serves the model: `{"role", "content": [items]}` with
`text_item(...)` and `audio_item(...)` items (DashScope's native shape). Each client turns them into its
own protocol, so each protocol's quirks (data: URLs or raw base64, streaming only, where text and speech
arrive) stay inside its client.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .models import Usage

if TYPE_CHECKING:
    from .config import Settings

OnDelta = Callable[[str], Awaitable[None]]
SPEECH_RATE = 24_000            # spoken answers: s16le mono PCM at this rate


@dataclass(frozen=True, slots=True)
class ModelAnswer:
    text: str
    usage: Usage
    request_id: str | None
    finish_reason: str | None
    speech: bytes = b""         # the answer spoken, as s16le mono PCM at SPEECH_RATE (models that speak)


class ModelClient(Protocol):
    model: str
    max_attempts: int

    async def generate(self, messages: list[dict], *, max_tokens: int | None = None,
                       on_delta: OnDelta | None = None, voice: str | None = None) -> ModelAnswer:
        """Ask the model; with on_delta, stream text as it arrives; with voice, also get the answer spoken."""
        ...

    async def aclose(self) -> None: ...


def make_client(settings: Settings) -> ModelClient:
    """The client for EARSHOT_MODEL: DashScope's native API, its compatible mode, or an OpenAI-compatible
    server. Each credential goes only to its own service's origin."""
    from .catalog import Backend
    from .config import origin
    from .dashscope import DashScopeClient
    from .openai_compat import OpenAICompatClient

    s = settings
    ds_key = s.dashscope_api_key.get_secret_value() if s.dashscope_api_key else ""
    common: dict[str, Any] = dict(timeout=s.request_timeout, retry_budget=s.retry_budget,
                                  max_concurrency=s.global_concurrency)
    backend = s.model_info.backend
    if backend is Backend.NATIVE:
        return DashScopeClient(ds_key, s.native_base_url, s.model, **common)
    if backend is Backend.COMPAT:
        return OpenAICompatClient(ds_key, s.compat_base_url, s.model, dashscope=True,
                                  system_when_speaking=s.model_info.system_when_speaking, **common)
    assert s.openai_base_url
    key = s.openai_api_key.get_secret_value() if s.openai_api_key else ""
    if not key and origin(s.openai_base_url) in (origin(s.native_base_url), origin(s.compat_base_url)):
        key = ds_key                # a DashScope-compatible gateway on DashScope's own origin
    return OpenAICompatClient(key, s.openai_base_url, s.model, dashscope=False, **common)


def has_key(settings: Settings) -> bool:
    """Whether the model's service has the key it needs (self-hosted servers may need none)."""
    from .catalog import Backend
    if settings.model_info.backend is Backend.OPENAI:
        return True
    return settings.dashscope_api_key is not None and bool(settings.dashscope_api_key.get_secret_value())
