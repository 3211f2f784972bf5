"""What earshot knows about each model, in one table: which API serves it, what job it does (answering,
transcribing, speaking), how much audio one request may carry, what audio costs in tokens, its limits, and
whether (and with which voices) it speaks.

Figures come from the providers' model lists; the window sits a little under each model's own limit so
frame rounding never pushes a chunk over it. A name is resolved by `model_info` in this order: what the
operator declared (EARSHOT_MODEL_SPECS), the table's own names and their dated snapshots, then the family
its name belongs to (any `qwen…-omni-…` id is an Omni model served by the compatible mode, `qwen-audio-…`
is Qwen-Audio on the native endpoint, `qwen3-asr-…` a recognizer, `qwen3-tts-…` a voice), and last a
cautious guess. `resolved` says which of these answered, for `earshot doctor`.
"""
from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, replace

from pydantic import BaseModel, ConfigDict, Field


class Backend(enum.StrEnum):
    NATIVE = "native"          # DashScope's multimodal-generation API (Qwen-Audio, Qwen-TTS)
    COMPAT = "compat"          # DashScope's OpenAI-compatible mode (Qwen-Omni, Qwen3-ASR): data: URLs
    OPENAI = "openai"          # any OpenAI-compatible server (vLLM): raw base64, text only


class Job(enum.StrEnum):
    CHAT = "chat"              # hears audio and answers anything about it
    ASR = "asr"                # a recognizer: transcripts only (EARSHOT_ASR_MODEL)
    TTS = "tts"                # a voice: speaks text (EARSHOT_TTS_MODEL)


TURBO_VOICES = ("Cherry", "Serena", "Ethan", "Chelsie")
# qwen3-omni-flash's stable alias: the voices every snapshot of it offers
FLASH_VOICES = ("Cherry", "Ethan", "Nofish", "Jennifer", "Ryan", "Katerina", "Elias", "Jada", "Dylan",
                "Sunny", "Li", "Marcus", "Roy", "Peter", "Rocky", "Kiki", "Eric")
# qwen3-tts-flash's system voices (the model studio's list of 2026)
TTS_VOICES = ("Cherry", "Serena", "Ethan", "Chelsie", "Momo", "Vivian", "Moon", "Maia", "Kai", "Nofish", "Bella",
              "Jennifer", "Ryan", "Katerina", "Aiden", "Eldric Sage", "Mia", "Mochi", "Bellona", "Vincent",
              "Bunny", "Neil", "Elias", "Arthur", "Nini", "Seren", "Pip", "Stella", "Jada", "Dylan", "Sunny",
              "Li", "Marcus", "Roy", "Peter", "Rocky", "Kiki", "Eric")
# the containers qwen3-asr-flash takes as they are (by magic bytes, core.audio.pipeline.sniff); m4a/mp4 are left out:
# only the English page lists them
ASR_FORMATS = ("aac", "amr", "flac", "mp3", "ogg", "opus", "wav", "webm")
# the languages a recognizer may be told are spoken (asr_options.language)
SPOKEN_LANGUAGES = ("zh", "yue", "en", "ja", "de", "ko", "ru", "fr", "pt", "ar", "it", "es", "hi", "id", "th", "tr",
                    "uk", "vi", "cs", "da", "fil", "fi", "is", "ms", "no", "pl", "sv")
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
    job: Job = Job.CHAT
    formats: tuple[str, ...] = ()  # containers sent as the user's bytes (a recognizer); empty: always MP3
    max_chars: int = 0             # a voice: characters of text per request
    resolved: str = "known"        # how the name was resolved: known, snapshot, family, declared, guess

    @property
    def speaks(self) -> bool:
        return bool(self.voices) and self.job is not Job.ASR

    @property
    def window(self) -> float:
        """Longest chunk to send: a margin under the model's limit for MP3 frame rounding and padding."""
        return self.seconds - max(0.5, min(5.0, self.seconds * 0.01))

    def audio_tokens(self, seconds: float) -> int:
        """Tokens one item of this length costs (billed per started second, at least one)."""
        return math.ceil(max(1, math.ceil(min(seconds, self.seconds))) * self.tokens_per_second)

    def describe(self) -> str:
        """One line for `earshot doctor`: what earshot assumes about the model."""
        what = {Job.CHAT: "answers", Job.ASR: "transcribes", Job.TTS: "speaks"}[self.job]
        api = {Backend.NATIVE: "DashScope native API", Backend.COMPAT: "DashScope compatible mode",
               Backend.OPENAI: "OpenAI-compatible server"}[self.backend]
        facts = [f"{what} via the {api}"]
        if self.job is Job.TTS:
            facts.append(f"{self.max_chars} characters a request")
        else:
            facts.append(f"{self.window:g} s of audio a request")
        if self.speaks:
            facts.append(f"{len(self.voices)} voices")
        return f"{', '.join(facts)} ({self.resolved})"


_QWEN_AUDIO = ModelInfo(Backend.NATIVE, 30, 25, 8000, 6000, 1500, 10 * MB, voice_chat=False)
_TURBO = ModelInfo(Backend.COMPAT, 180, 25, 32768, 30720, 2048, 10 * MB, voice_chat=True, voices=TURBO_VOICES,
                   system_when_speaking=False)
_FLASH = ModelInfo(Backend.COMPAT, 1200, 12.5, 65536, 49152, 16384, 100 * MB, voice_chat=True, voices=FLASH_VOICES)
_ASR = ModelInfo(Backend.COMPAT, 300, 25, 0, 0, 8192, 10 * MB, voice_chat=False, job=Job.ASR, formats=ASR_FORMATS)
_TTS = ModelInfo(Backend.NATIVE, 0, 0, 0, 0, 0, 0, voice_chat=False, voices=TTS_VOICES, job=Job.TTS,
                 max_chars=600)

MODELS: dict[str, ModelInfo] = {
    "qwen-audio-turbo": _QWEN_AUDIO,
    "qwen-audio-turbo-latest": replace(_QWEN_AUDIO, context=8192, max_input=6144, max_output=2048, voice_chat=True),
    "qwen2-audio-instruct": replace(_QWEN_AUDIO, voice_chat=True),
    "qwen3-omni-flash": _FLASH,
    # the names Alibaba's Omni pages lead with in 2026: qwen3-omni-flash's figures (limits unpublished);
    # qwen3.8-omni-flash writes text only
    "qwen3.5-omni-plus": replace(_FLASH, voices=(*FLASH_VOICES, "Tina")),
    "qwen3.5-omni-flash": replace(_FLASH, voices=(*FLASH_VOICES, "Tina")),
    "qwen3.8-omni-flash": replace(_FLASH, voices=()),
    "qwen-omni-turbo": _TURBO,
    "qwen-omni-turbo-latest": _TURBO,
    "qwen2.5-omni-7b": replace(_TURBO, voices=("Ethan", "Chelsie")),
    "qwen3-asr-flash": _ASR,
    "qwen3-tts-flash": _TTS,
    # self-hosted behind vLLM: mainline vLLM runs the thinker only, so these never speak
    "Qwen/Qwen2-Audio-7B-Instruct": ModelInfo(Backend.OPENAI, 30, 25, 4096, 4096, 1024, 64 * MB, voice_chat=True),
    "Qwen/Qwen2.5-Omni-7B": ModelInfo(Backend.OPENAI, 120, 25, 4096, 4096, 1024, 64 * MB, voice_chat=True),
    "Qwen/Qwen2.5-Omni-3B": ModelInfo(Backend.OPENAI, 120, 25, 4096, 4096, 1024, 64 * MB, voice_chat=True),
}
# a model on an OpenAI-compatible server that earshot doesn't know: Qwen2-Audio's cautious figures
UNKNOWN_OPENAI = ModelInfo(Backend.OPENAI, 30, 25, 4096, 4096, 1024, 64 * MB, voice_chat=False)
# a recognizer on an OpenAI-compatible server (Qwen3-ASR on vLLM): it takes what librosa decodes
OPENAI_ASR = replace(_ASR, backend=Backend.OPENAI, max_bytes=64 * MB)
# dated snapshots of unknown native names get the most cautious figures
CAUTIOUS = _QWEN_AUDIO

# families, by name: (pattern, row); the first that matches wins
_OMNI = re.compile(r"^qwen[0-9.]*-omni(-|$)", re.IGNORECASE)
FAMILIES: tuple[tuple[re.Pattern[str], ModelInfo], ...] = (
    (re.compile(r"^qwen-omni-turbo(-|$)", re.I), _TURBO),
    (re.compile(r"^qwen2\.5-omni(-|$)", re.I), MODELS["qwen2.5-omni-7b"]),
    (re.compile(r"^qwen3\.8-omni(-|$)", re.I), MODELS["qwen3.8-omni-flash"]),
    (re.compile(r"^qwen3\.5-omni(-|$)", re.I), MODELS["qwen3.5-omni-plus"]),
    (_OMNI, _FLASH),
    (re.compile(r"^qwen(2)?-audio(-|$)", re.I), _QWEN_AUDIO),
    (re.compile(r"^qwen3-asr(-|$)", re.I), _ASR),
    (re.compile(r"^qwen[0-9.]*-tts(-|$)", re.I), _TTS),
)


class ModelSpec(BaseModel):
    """One model the operator declares in EARSHOT_MODEL_SPECS (a JSON object of name -> spec), for a model
    earshot doesn't know or knows wrongly: its backend, job, window and voices; the rest is taken from its
    family (or the cautious figures)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Backend | None = None
    job: Job | None = None
    seconds: float | None = Field(None, gt=0)
    tokens_per_second: float | None = Field(None, gt=0)
    context: int | None = Field(None, gt=0)
    max_mb: float | None = Field(None, gt=0)
    voices: tuple[str, ...] | None = None
    max_chars: int | None = Field(None, gt=0)


def lookup(model: str) -> ModelInfo | None:
    """The model's row, matching dated snapshots ("qwen-omni-turbo-2025-03-26") to their family."""
    if model in MODELS:
        return MODELS[model]
    family = max((k for k in MODELS if model.startswith(k + "-")), key=len, default=None)
    return replace(MODELS[family], resolved="snapshot of " + family) if family else None


def family_of(model: str) -> ModelInfo | None:
    """The row of the family the name belongs to (a new Omni, Qwen-Audio, recognizer or voice name)."""
    base = model.rsplit("/", 1)[-1]          # "Qwen/Qwen3-ASR-1.7B" on a self-hosted server
    for pattern, info in FAMILIES:
        if pattern.search(base):
            return replace(info, resolved="family")
    return None


def model_info(model: str, *, openai_server: bool = False, seconds: float | None = None,
               context: int | None = None, specs: dict[str, ModelSpec] | None = None) -> ModelInfo:
    """What earshot assumes about `model`. openai_server: it runs behind EARSHOT_OPENAI_BASE_URL (unless
    declared on another backend); seconds/context: the operator's figures (EARSHOT_MODEL_SECONDS /
    EARSHOT_MODEL_CONTEXT) for it; specs: EARSHOT_MODEL_SPECS."""
    spec = (specs or {}).get(model)
    known = lookup(model) or family_of(model)
    if spec is not None and spec.backend is not None and spec.backend is not Backend.OPENAI:
        openai_server = False            # declared on DashScope: EARSHOT_OPENAI_BASE_URL is for the others
    elif spec is not None and spec.backend is Backend.OPENAI:
        openai_server = True
    if openai_server:
        # the server decides; a model name DashScope also serves keeps its figures, but speaks no audio
        if known is not None and known.job is Job.ASR:
            info = replace(OPENAI_ASR, resolved=known.resolved)
        elif known is not None and known.job is Job.CHAT:
            info = replace(known, backend=Backend.OPENAI, voices=())
        else:
            info = replace(UNKNOWN_OPENAI, resolved="guess")
    else:
        info = known or replace(CAUTIOUS, resolved="guess")
    if spec is not None:
        info = _declared(info, spec)
    if seconds:
        info = replace(info, seconds=float(seconds))
    if context:
        info = replace(info, context=int(context), max_input=int(context),
                       max_output=min(info.max_output, max(256, int(context) // 4)))
    return info


def _declared(info: ModelInfo, spec: ModelSpec) -> ModelInfo:
    job = spec.job or info.job
    if job is not info.job:             # a declared recognizer or voice starts from that job's figures
        base = {Job.ASR: OPENAI_ASR if info.backend is Backend.OPENAI else _ASR, Job.TTS: _TTS,
                Job.CHAT: UNKNOWN_OPENAI if info.backend is Backend.OPENAI else CAUTIOUS}[job]
        info = replace(base, backend=info.backend)
    changes: dict = {"resolved": "declared in EARSHOT_MODEL_SPECS"}
    if spec.backend is not None:
        changes["backend"] = spec.backend
    if spec.seconds is not None:
        changes["seconds"] = spec.seconds
    if spec.tokens_per_second is not None:
        changes["tokens_per_second"] = spec.tokens_per_second
    if spec.context is not None:
        changes.update(context=spec.context, max_input=spec.context,
                       max_output=min(info.max_output or spec.context, max(256, spec.context // 4)))
    if spec.max_mb is not None:
        changes["max_bytes"] = int(spec.max_mb * MB)
    if spec.voices is not None:
        changes["voices"] = tuple(spec.voices)
    if spec.max_chars is not None:
        changes["max_chars"] = spec.max_chars
    if (spec.backend or info.backend) is Backend.OPENAI and spec.voices is None:
        changes["voices"] = () if job is Job.CHAT else info.voices     # vLLM serves text only
    return replace(info, **changes)
