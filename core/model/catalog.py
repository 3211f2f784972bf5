"""What earshot knows about each model, in one table: which API serves it, how much audio one request may
carry, what audio costs in tokens, its limits, and whether (and with which voices) it speaks.

Figures come from the providers' model lists; the window sits a little under each model's own limit so
frame rounding never pushes a chunk over it.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace


class Backend(enum.StrEnum):
    NATIVE = "native"          # DashScope's multimodal-generation API (Qwen-Audio)
    COMPAT = "compat"          # DashScope's OpenAI-compatible mode (Qwen-Omni): stream only, data: URLs
    OPENAI = "openai"          # any OpenAI-compatible server (vLLM): raw base64, text only


TURBO_VOICES = ("Cherry", "Serena", "Ethan", "Chelsie")
# qwen3-omni-flash's stable alias: the voices every snapshot of it offers
FLASH_VOICES = ("Cherry", "Ethan", "Nofish", "Jennifer", "Ryan", "Katerina", "Elias", "Jada", "Dylan",
                "Sunny", "Li", "Marcus", "Roy", "Peter", "Rocky", "Kiki", "Eric")
MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ModelInfo:
    backend: Backend
    seconds: float                 # audio one request may carry (heard whole)
    tokens_per_second: float       # audio tokens per second heard
    context: int
    max_input: int
    max_output: int
    max_bytes: int                 # one audio item, counted as sent (base64)
    voice_chat: bool               # takes audio alone, with no text, as the instruction
    voices: tuple[str, ...] = ()   # empty: can't speak
    system_when_speaking: bool = True   # False: a system prompt is ignored when it speaks

    @property
    def speaks(self) -> bool:
        return bool(self.voices)

    @property
    def window(self) -> float:
        """Longest chunk to send: a margin under the model's limit for MP3 frame rounding and padding."""
        return self.seconds - max(0.5, min(5.0, self.seconds * 0.01))

    def audio_tokens(self, seconds: float) -> int:
        """Tokens one item of this length costs (billed per started second, at least one)."""
        return math.ceil(max(1, math.ceil(min(seconds, self.seconds))) * self.tokens_per_second)


_QWEN_AUDIO = ModelInfo(Backend.NATIVE, 30, 25, 8000, 6000, 1500, 10 * MB, voice_chat=False)
_TURBO = ModelInfo(Backend.COMPAT, 180, 25, 32768, 30720, 2048, 10 * MB, voice_chat=True, voices=TURBO_VOICES,
                   system_when_speaking=False)

MODELS: dict[str, ModelInfo] = {
    "qwen-audio-turbo": _QWEN_AUDIO,
    "qwen-audio-turbo-latest": replace(_QWEN_AUDIO, context=8192, max_input=6144, max_output=2048, voice_chat=True),
    "qwen2-audio-instruct": replace(_QWEN_AUDIO, voice_chat=True),
    "qwen3-omni-flash": ModelInfo(Backend.COMPAT, 1200, 12.5, 65536, 49152, 16384, 100 * MB, voice_chat=True,
                                  voices=FLASH_VOICES),
    "qwen-omni-turbo": _TURBO,
    "qwen-omni-turbo-latest": _TURBO,
    "qwen2.5-omni-7b": replace(_TURBO, voices=("Ethan", "Chelsie")),
    # self-hosted behind vLLM: mainline vLLM runs the thinker only, so these never speak
    "Qwen/Qwen2-Audio-7B-Instruct": ModelInfo(Backend.OPENAI, 30, 25, 4096, 4096, 1024, 64 * MB, voice_chat=True),
    "Qwen/Qwen2.5-Omni-7B": ModelInfo(Backend.OPENAI, 120, 25, 4096, 4096, 1024, 64 * MB, voice_chat=True),
    "Qwen/Qwen2.5-Omni-3B": ModelInfo(Backend.OPENAI, 120, 25, 4096, 4096, 1024, 64 * MB, voice_chat=True),
}
# a model on an OpenAI-compatible server that earshot doesn't know: Qwen2-Audio's cautious figures
UNKNOWN_OPENAI = ModelInfo(Backend.OPENAI, 30, 25, 4096, 4096, 1024, 64 * MB, voice_chat=False)
# dated snapshots of unknown native names get the most cautious figures
CAUTIOUS = _QWEN_AUDIO


def lookup(model: str) -> ModelInfo | None:
    """The model's row, matching dated snapshots ("qwen-omni-turbo-2025-03-26") to their family."""
    if model in MODELS:
        return MODELS[model]
    family = max((k for k in MODELS if model.startswith(k + "-")), key=len, default=None)
    return MODELS[family] if family else None


def model_info(model: str, *, openai_server: bool = False, seconds: float | None = None,
               context: int | None = None) -> ModelInfo:
    """What earshot assumes about `model`. openai_server: it runs behind EARSHOT_OPENAI_BASE_URL;
    seconds/context: the operator's figures (EARSHOT_MODEL_SECONDS / EARSHOT_MODEL_CONTEXT) for it."""
    known = lookup(model)
    if openai_server:
        # the server decides; a model name DashScope also serves keeps its figures, but speaks no audio
        info = replace(known, backend=Backend.OPENAI, voices=()) if known else UNKNOWN_OPENAI
    else:
        info = known or CAUTIOUS
    if seconds:
        info = replace(info, seconds=float(seconds))
    if context:
        info = replace(info, context=int(context), max_input=int(context),
                       max_output=min(info.max_output, max(256, int(context) // 4)))
    return info
