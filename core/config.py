"""All of earshot's configuration, read once from the environment (names are part of the contract)."""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.model.catalog import Backend, ModelInfo, ModelSpec, model_info
from core.store import pg

DEFAULT_DASHSCOPE_BASE = "https://dashscope.aliyuncs.com/api/v1"
# keys are per region: DASHSCOPE_REGION picks the default host of both DashScope bases
REGION_HOSTS = {"beijing": "https://dashscope.aliyuncs.com", "singapore": "https://dashscope-intl.aliyuncs.com"}
COMPAT_PATH = "/compatible-mode/v1"
DEFAULT_TELEGRAM_BASE = "https://api.telegram.org"
DEFAULT_SLACK_API = "https://slack.com/api/"
DEFAULT_DISCORD_API = "https://discord.com/api/v10"
DEFAULT_WHATSAPP_API = "https://graph.facebook.com/v23.0"
# the languages offered by one tap under an answer (Telegram buttons, Slack menu, Home tab): (code, name as prompted)
QUICK_LANGUAGES: tuple[tuple[str, str], ...] = (
    ("en", "English"), ("es", "Spanish"), ("fr", "French"), ("de", "German"), ("zh", "Chinese"), ("ru", "Russian"),
)


def origin(url: str) -> str:
    """scheme://host[:port] of a URL, the unit credentials are scoped to."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _env(name: str) -> dict:
    return {"validation_alias": AliasChoices(name)}


# "123, @alice U0ABC" in the environment: commas or spaces, not JSON
IdList = Annotated[tuple[str, ...], NoDecode]


def normalise_id(value: object) -> str:
    """Ids as written ('-100123', 'U0ABC', 'T0XYZ') stay as they are; @usernames match in any case; a phone
    number written +E.164 ('+15551234567') is its digits, as platforms that key users by number send it."""
    text = str(value).strip()
    if re.fullmatch(r"\+\d{6,15}", text):
        return text[1:]
    return text.lower() if text.startswith("@") else text


def default_db_path() -> Path:
    return Path(platformdirs.user_data_dir("earshot", appauthor=False)) / "earshot.db"


class Settings(BaseSettings):
    """Frozen settings; tests build one directly with keyword arguments."""

    model_config = SettingsConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    dashscope_api_key: SecretStr | None = Field(None, **_env("DASHSCOPE_API_KEY"))
    dashscope_base_url: str = Field(DEFAULT_DASHSCOPE_BASE, **_env("DASHSCOPE_HTTP_BASE_URL"))
    dashscope_region: Literal["beijing", "singapore"] = Field("beijing", **_env("DASHSCOPE_REGION"))
    # DashScope's OpenAI-compatible mode (Qwen-Omni); unset: the native base's origin + /compatible-mode/v1
    dashscope_compat_base_url: str | None = Field(None, **_env("DASHSCOPE_COMPAT_BASE_URL"))
    model: str = Field("qwen-audio-turbo-latest", **_env("EARSHOT_MODEL"))
    # the models a chat may switch to with /model (comma-separated); unset: EARSHOT_MODEL alone
    allowed_models: Annotated[tuple[str, ...], NoDecode] = Field((), **_env("EARSHOT_MODELS"))
    # an OpenAI-compatible server (vLLM) serving EARSHOT_MODEL, and its optional key
    openai_base_url: str | None = Field(None, **_env("EARSHOT_OPENAI_BASE_URL"))
    openai_api_key: SecretStr | None = Field(None, **_env("EARSHOT_OPENAI_API_KEY"))
    # for models earshot doesn't know: audio seconds per request, input tokens
    model_seconds: float | None = Field(None, gt=0, **_env("EARSHOT_MODEL_SECONDS"))
    model_context: int | None = Field(None, gt=0, **_env("EARSHOT_MODEL_CONTEXT"))
    voice: str = Field("Cherry", min_length=1, **_env("EARSHOT_VOICE"))
    # models earshot doesn't know (or knows wrongly), as JSON: {"name": {"backend": "compat", "seconds": 600, …}}
    model_specs: dict[str, ModelSpec] = Field(default_factory=dict, **_env("EARSHOT_MODEL_SPECS"))
    # the recognizer for transcripts; unset: qwen3-asr-flash when the chat model is on DashScope; "": none
    asr_model: str | None = Field(None, **_env("EARSHOT_ASR_MODEL"))
    # the voice for models that can't speak; unset: qwen3-tts-flash on DashScope; "": none
    tts_model: str | None = Field(None, **_env("EARSHOT_TTS_MODEL"))
    # a file path (SQLite), or a postgresql://… connection string, kept as the string it is
    db_path: Path | str = Field(default_factory=default_db_path, **_env("EARSHOT_DB"))
    # DEBUG, INFO, WARNING…; unset: INFO for the bots, quiet for one-shot commands (secrets are masked at any level)
    log_level: str | None = Field(None, **_env("EARSHOT_LOG_LEVEL"))
    # "json": one JSON object per log line, for log collectors
    log_format: Literal["text", "json"] = Field("text", **_env("EARSHOT_LOG_FORMAT"))
    # /healthz and /metrics for processes with no HTTP port of their own (Telegram, Slack Socket Mode); 0 = off
    metrics_port: int = Field(9464, ge=0, le=65535, **_env("EARSHOT_METRICS_PORT"))

    # bounds on what one request may cost us
    max_file_mb: float = Field(20.0, **_env("EARSHOT_MAX_FILE_MB"))
    max_audio_seconds: float = Field(1800.0, **_env("EARSHOT_MAX_AUDIO_SECONDS"))
    ffmpeg_timeout: float = Field(120.0, **_env("EARSHOT_FFMPEG_TIMEOUT"))
    # "bundled" (the imageio-ffmpeg wheel's static build, else a system one), "system" (one on PATH, else the
    # bundled one), or a path (core.audio.ffmpeg says why bundled comes first)
    ffmpeg: str = Field("bundled", **_env("EARSHOT_FFMPEG"))
    # model calls in flight: per request, and across the whole process
    chunk_concurrency: int = Field(4, ge=1, **_env("EARSHOT_CHUNK_CONCURRENCY"))
    global_concurrency: int = Field(16, ge=1, **_env("EARSHOT_CONCURRENCY"))
    request_timeout: float = Field(120.0, **_env("EARSHOT_REQUEST_TIMEOUT"))
    retry_budget: float = Field(60.0, le=60.0, **_env("EARSHOT_RETRY_BUDGET"))
    history_turns: int = Field(20, ge=0, **_env("EARSHOT_HISTORY_TURNS"))
    # seconds an accepted request may wait for the model to come back before the user is told it failed
    job_ttl: float = Field(86400.0, gt=0, **_env("EARSHOT_JOB_TTL"))
    # seconds a process holds a job without renewing it (every third of it) before another may take it over
    job_lease: float = Field(30.0, gt=0, **_env("EARSHOT_JOB_LEASE"))
    # group digests: days a stored voice-note transcript is kept
    retention_days: float = Field(30.0, gt=0, **_env("EARSHOT_RETENTION_DAYS"))
    # answers kept by audio content, so the same audio asked the same thing costs nothing (0 = off)
    cache_days: float = Field(7.0, ge=0, **_env("EARSHOT_CACHE_DAYS"))
    # links may reach private, loopback and other non-public addresses (self-hosted networks, tests)
    url_allow_private: bool = Field(False, **_env("EARSHOT_URL_ALLOW_PRIVATE"))
    # seconds a link's whole download may take, redirects included
    url_timeout: float = Field(60.0, gt=0, **_env("EARSHOT_URL_TIMEOUT"))
    # chat history (turns, with the usage budgets count) and each chat's latest audio: days kept
    history_days: float = Field(30.0, gt=0, **_env("EARSHOT_HISTORY_DAYS"))

    # who may use the bots (empty lists: everyone); Telegram ids or @usernames, Slack user, channel or team ids,
    # Discord user, channel or server ids
    # WhatsApp numbers (+E.164 or bare wa_id digits)
    allowed_users: IdList = Field((), **_env("EARSHOT_ALLOWED_USERS"))
    allowed_chats: IdList = Field((), **_env("EARSHOT_ALLOWED_CHATS"))
    admin_users: IdList = Field((), **_env("EARSHOT_ADMIN_USERS"))
    # daily token budgets of the chat bots (UTC days; 0 = unlimited; the terminal is counted, never held to them).
    # Sized to agree with EARSHOT_MAX_AUDIO_SECONDS: one recording of the longest length allowed fits a person's
    # day on every model earshot knows (about 71,300 tokens on Qwen-Audio, 25 tokens a second in 30 s parts)
    user_daily_tokens: int = Field(80_000, ge=0, **_env("EARSHOT_USER_DAILY_TOKENS"))
    chat_daily_tokens: int = Field(100_000, ge=0, **_env("EARSHOT_CHAT_DAILY_TOKENS"))
    global_daily_tokens: int = Field(200_000, ge=0, **_env("EARSHOT_GLOBAL_DAILY_TOKENS"))
    user_requests_per_minute: int = Field(10, ge=0, **_env("EARSHOT_USER_REQUESTS_PER_MINUTE"))

    telegram_bot_token: SecretStr | None = Field(None, **_env("TELEGRAM_BOT_TOKEN"))
    telegram_api_base_url: str = Field(DEFAULT_TELEGRAM_BASE, **_env("TELEGRAM_API_BASE_URL"))
    # webhook mode: the secret Telegram sends with each update; replicas behind one URL share it (unset: random
    # per process). Telegram takes 1-256 of A-Z a-z 0-9 _ -
    telegram_webhook_secret: SecretStr | None = Field(None, **_env("TELEGRAM_WEBHOOK_SECRET"))

    slack_bot_token: SecretStr | None = Field(None, **_env("SLACK_BOT_TOKEN"))
    slack_signing_secret: SecretStr | None = Field(None, **_env("SLACK_SIGNING_SECRET"))
    slack_app_token: SecretStr | None = Field(None, **_env("SLACK_APP_TOKEN"))
    slack_api_url: str = Field(DEFAULT_SLACK_API, **_env("SLACK_API_URL"))
    # the reaction (emoji name, without colons) that asks for a message's transcript in its thread
    slack_reaction: str = Field("memo", min_length=1, **_env("EARSHOT_SLACK_REACTION"))

    discord_bot_token: SecretStr | None = Field(None, **_env("DISCORD_BOT_TOKEN"))
    # the REST base with its version; the Gateway's address comes from GET /gateway/bot there
    discord_api_url: str = Field(DEFAULT_DISCORD_API, **_env("DISCORD_API_URL"))
    # WhatsApp Cloud API: the system user's token, the business number's id, the Meta app's secret (signs
    # webhooks), the token Meta echoes when the webhook URL is saved, and the Graph API base with its version
    whatsapp_access_token: SecretStr | None = Field(None, **_env("WHATSAPP_ACCESS_TOKEN"))
    whatsapp_phone_number_id: str | None = Field(None, **_env("WHATSAPP_PHONE_NUMBER_ID"))
    whatsapp_app_secret: SecretStr | None = Field(None, **_env("WHATSAPP_APP_SECRET"))
    whatsapp_verify_token: SecretStr | None = Field(None, **_env("WHATSAPP_VERIFY_TOKEN"))
    whatsapp_api_url: str = Field(DEFAULT_WHATSAPP_API, **_env("WHATSAPP_API_URL"))

    @field_validator("allowed_users", "allowed_chats", "admin_users", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            value = re.split(r"[,\s]+", value)
        if isinstance(value, (list, tuple, set, frozenset)):
            return tuple(dict.fromkeys(normalise_id(v) for v in value if str(v).strip() not in ("", "@")))
        return value

    @field_validator("telegram_webhook_secret", mode="before")
    @classmethod
    def _webhook_secret(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip() or None
            if value is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", value):
                raise ValueError("1 to 256 characters, only A-Z, a-z, 0-9, _ and - (Telegram's rule)")
        return value

    @field_validator("db_path", mode="before")
    @classmethod
    def _db_target(cls, value: object) -> object:
        # a connection string stays a string (a Path would fold its "//"); anything else is a file
        if isinstance(value, str) and not pg.is_url(value):
            return Path(value)
        return value

    @field_validator("allowed_models", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        if isinstance(value, str):
            value = re.split(r"[,\s]+", value)
        if isinstance(value, (list, tuple)):
            return tuple(dict.fromkeys(str(v).strip() for v in value if str(v).strip()))
        return value

    @field_validator("slack_reaction", mode="before")
    @classmethod
    def _emoji_name(cls, value: object) -> object:
        return value.strip().strip(":") if isinstance(value, str) else value

    @field_validator("dashscope_region", mode="before")
    @classmethod
    def _region(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("dashscope_compat_base_url", "openai_base_url", "model_seconds", "model_context",
                     "whatsapp_phone_number_id", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def native_base_url(self) -> str:
        """DASHSCOPE_HTTP_BASE_URL, or the region's default host."""
        if "dashscope_base_url" in self.model_fields_set:
            return self.dashscope_base_url
        return REGION_HOSTS[self.dashscope_region] + "/api/v1"

    @property
    def compat_base_url(self) -> str:
        """DASHSCOPE_COMPAT_BASE_URL, or the native base's origin + /compatible-mode/v1."""
        if self.dashscope_compat_base_url:
            return self.dashscope_compat_base_url.rstrip("/")
        return origin(self.native_base_url) + COMPAT_PATH

    @property
    def model_endpoint(self) -> tuple[str, str]:
        """Where EARSHOT_MODEL is asked, and the setting that points there (for an operator to change)."""
        backend = self.model_info.backend
        if backend is Backend.OPENAI:
            return self.openai_base_url or "", "EARSHOT_OPENAI_BASE_URL"
        if backend is Backend.COMPAT and self.dashscope_compat_base_url:
            return self.compat_base_url, "DASHSCOPE_COMPAT_BASE_URL"
        url = self.native_base_url if backend is Backend.NATIVE else self.compat_base_url
        return url, ("DASHSCOPE_HTTP_BASE_URL" if "dashscope_base_url" in self.model_fields_set
                     else "DASHSCOPE_REGION")

    @property
    def model_info(self) -> ModelInfo:
        """The catalog's figures for EARSHOT_MODEL, as served here (see core.model.catalog)."""
        return model_info(self.model, openai_server=bool(self.openai_base_url), seconds=self.model_seconds,
                          context=self.model_context, specs=self.model_specs)

    def info_of(self, name: str) -> ModelInfo:
        """The catalog's figures for another configured model (the recognizer, the voice), as served here:
        EARSHOT_MODEL_SECONDS/CONTEXT are the chat model's alone."""
        return model_info(name, openai_server=bool(self.openai_base_url), specs=self.model_specs)

    @property
    def on_dashscope(self) -> bool:
        """Whether the chat model is served by DashScope (either API), where the recognizer and voice live."""
        return self.model_info.backend is not Backend.OPENAI

    @property
    def recognizer(self) -> str | None:
        """EARSHOT_ASR_MODEL: the model that writes transcripts, or None (the chat model does)."""
        if self.asr_model is None:
            return "qwen3-asr-flash" if self.on_dashscope else None
        return self.asr_model.strip() or None

    @property
    def speaker(self) -> str | None:
        """EARSHOT_TTS_MODEL: the model that speaks answers of models that can't, or None."""
        if self.tts_model is None:
            return "qwen3-tts-flash" if self.on_dashscope else None
        return self.tts_model.strip() or None

    @property
    def models(self) -> tuple[str, ...]:
        """The models chats may use: EARSHOT_MODEL first (the default), then the rest of EARSHOT_MODELS."""
        return tuple(dict.fromkeys((self.model, *self.allowed_models)))

    def for_model(self, name: str) -> Settings:
        """These settings with `name` as the model: its catalog facts and client follow from them."""
        return self if name == self.model else self.model_copy(update={"model": name})

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    def secrets(self) -> list[str]:
        """Every secret value set, for log redaction (the database's connection string and its password too)."""
        fields = (self.dashscope_api_key, self.openai_api_key, self.telegram_bot_token, self.slack_bot_token,
                  self.slack_signing_secret, self.slack_app_token, self.telegram_webhook_secret, self.discord_bot_token,
                  self.whatsapp_access_token, self.whatsapp_app_secret, self.whatsapp_verify_token)
        found = [f.get_secret_value() for f in fields if f is not None and f.get_secret_value()]
        if isinstance(self.db_path, str):
            found += [self.db_path, *pg.secret_parts(self.db_path)]
        return found


def _field_of(variable: str) -> str | None:
    """The Settings field read from the environment variable `variable`."""
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices) and variable in alias.choices:
            return name
    return None


def invalid_settings(errors: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """(variable, field, what is wrong) for each error of a Settings validation, in words an operator acts on:
    ("DASHSCOPE_REGION", …, "'tokyo' is not allowed: it should be 'beijing' or 'singapore'"). Secret values are
    never repeated."""
    out = []
    for e in errors:
        variable = str(e["loc"][0]) if e.get("loc") else "?"
        field = _field_of(variable) or variable
        info = Settings.model_fields.get(field)
        secret = info is not None and ("SecretStr" in str(info.annotation) or field == "db_path")
        should = str(e.get("msg", "is not valid")).removeprefix("Value error, ")
        should = should.replace("Input should be", "should be", 1)
        given = "its value" if secret or not isinstance(e.get("input"), str) else repr(e["input"])
        out.append((variable, field, f"{given} is not allowed: it {should}"))
    return out


def settings_without(fields: list[str]) -> Settings:
    """Settings from the environment with `fields` at their defaults: what the other checks run on when some
    variables are invalid."""
    defaults = {f: Settings.model_fields[f].get_default(call_default_factory=True)
                for f in fields if f in Settings.model_fields}
    return Settings(**defaults)
