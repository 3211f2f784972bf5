"""The choice of client for a model (the seam itself is core.model.model_api).

Each client turns the neutral messages into its own protocol, so each protocol's quirks (data: URLs or raw
base64, streaming only, where text and speech arrive) stay inside its client.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.model.model_api import SPEECH_RATE, ModelAnswer, ModelClient, OnDelta

__all__ = ["SPEECH_RATE", "ModelAnswer", "ModelClient", "OnDelta", "has_key", "make_client"]

if TYPE_CHECKING:
    from core.config import Settings
    from core.model.catalog import ModelInfo


def make_client(settings: Settings, name: str | None = None, info: ModelInfo | None = None) -> Any:
    """The client for EARSHOT_MODEL (or another configured model `name`, with its catalog row `info`: the
    recognizer, the voice): DashScope's native API, its compatible mode, or an OpenAI-compatible server.
    Each credential goes only to its own service's origin."""
    from core.config import origin
    from core.model.catalog import Backend, Job

    s = settings
    name = name or s.model
    info = info or s.model_info
    ds_key = s.dashscope_api_key.get_secret_value() if s.dashscope_api_key else ""
    common: dict[str, Any] = dict(timeout=s.request_timeout, retry_budget=s.retry_budget,
                                  max_concurrency=s.global_concurrency)
    backend = info.backend
    if backend is Backend.NATIVE and info.job is Job.TTS:
        from core.model.voice import VoiceClient
        return VoiceClient(ds_key, s.native_base_url, name, **common)
    if backend is Backend.NATIVE:
        from core.model.dashscope import DashScopeClient
        return DashScopeClient(ds_key, s.native_base_url, name, **common)
    from core.model.openai_compat import OpenAICompatClient
    if backend is Backend.COMPAT:
        return OpenAICompatClient(ds_key, s.compat_base_url, name, dashscope=True,
                                  system_when_speaking=info.system_when_speaking, **common)
    assert s.openai_base_url
    key = s.openai_api_key.get_secret_value() if s.openai_api_key else ""
    if not key and origin(s.openai_base_url) in (origin(s.native_base_url), origin(s.compat_base_url)):
        key = ds_key                # a DashScope-compatible gateway on DashScope's own origin
    return OpenAICompatClient(key, s.openai_base_url, name, dashscope=False, **common)


def has_key(settings: Settings, info: ModelInfo | None = None) -> bool:
    """Whether the model's service has the key it needs (self-hosted servers may need none)."""
    from core.model.catalog import Backend
    if (info or settings.model_info).backend is Backend.OPENAI:
        return True
    return settings.dashscope_api_key is not None and bool(settings.dashscope_api_key.get_secret_value())
