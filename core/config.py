"""All of earshot's configuration, read once from the environment (names are part of the contract)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DASHSCOPE_BASE = "https://dashscope.aliyuncs.com/api/v1"
DEFAULT_TELEGRAM_BASE = "https://api.telegram.org"
DEFAULT_SLACK_API = "https://slack.com/api/"
MODELS = ("qwen-audio-turbo", "qwen-audio-turbo-latest", "qwen2-audio-instruct")
AUDIO_TOKENS_PER_SECOND = 25
SECONDS_HEARD = 30.0


@dataclass(frozen=True, slots=True)
class ModelLimits:
    max_input: int
    max_output: int
    voice_chat: bool       # takes audio alone, with no text, as the instruction


LIMITS = {
    "qwen-audio-turbo": ModelLimits(6000, 1500, voice_chat=False),
    "qwen-audio-turbo-latest": ModelLimits(6144, 2048, voice_chat=True),
    "qwen2-audio-instruct": ModelLimits(6000, 1500, voice_chat=True),
}
# dated snapshots and unknown names get the most cautious figures
CAUTIOUS_LIMITS = ModelLimits(6000, 1500, voice_chat=False)


def limits_for(model: str) -> ModelLimits:
    return LIMITS.get(model) or next((v for k, v in LIMITS.items() if model.startswith(k + "-")), CAUTIOUS_LIMITS)


def _env(name: str) -> dict:
    return {"validation_alias": AliasChoices(name)}


# "123, @alice U0ABC" in the environment: commas or spaces, not JSON
IdList = Annotated[tuple[str, ...], NoDecode]


def normalise_id(value: object) -> str:
    """Ids as written ('-100123', 'U0ABC', 'T0XYZ') stay as they are; @usernames match in any case."""
    text = str(value).strip()
    return text.lower() if text.startswith("@") else text


def default_db_path() -> Path:
    return Path(platformdirs.user_data_dir("earshot", appauthor=False)) / "earshot.db"


class Settings(BaseSettings):
    """Frozen settings; tests build one directly with keyword arguments."""

    model_config = SettingsConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    dashscope_api_key: SecretStr | None = Field(None, **_env("DASHSCOPE_API_KEY"))
    dashscope_base_url: str = Field(DEFAULT_DASHSCOPE_BASE, **_env("DASHSCOPE_HTTP_BASE_URL"))
    model: str = Field("qwen-audio-turbo-latest", **_env("EARSHOT_MODEL"))
    db_path: Path = Field(default_factory=default_db_path, **_env("EARSHOT_DB"))
    # DEBUG, INFO, WARNING…; unset: INFO for the bots, quiet for one-shot commands (secrets are masked at any level)
    log_level: str | None = Field(None, **_env("EARSHOT_LOG_LEVEL"))

    # bounds on what one request may cost us
    max_file_mb: float = Field(20.0, **_env("EARSHOT_MAX_FILE_MB"))
    max_audio_seconds: float = Field(1800.0, **_env("EARSHOT_MAX_AUDIO_SECONDS"))
    ffmpeg_timeout: float = Field(120.0, **_env("EARSHOT_FFMPEG_TIMEOUT"))
    # "system" (a system ffmpeg when there is one), "bundled" (the imageio-ffmpeg wheel's), or a path
    ffmpeg: str = Field("system", **_env("EARSHOT_FFMPEG"))
    # model calls in flight: per request, and across the whole process
    chunk_concurrency: int = Field(4, ge=1, **_env("EARSHOT_CHUNK_CONCURRENCY"))
    global_concurrency: int = Field(16, ge=1, **_env("EARSHOT_CONCURRENCY"))
    request_timeout: float = Field(120.0, **_env("EARSHOT_REQUEST_TIMEOUT"))
    retry_budget: float = Field(60.0, le=60.0, **_env("EARSHOT_RETRY_BUDGET"))
    history_turns: int = Field(20, ge=0, **_env("EARSHOT_HISTORY_TURNS"))
    # seconds an accepted request may wait for the model to come back before the user is told it failed
    job_ttl: float = Field(86400.0, gt=0, **_env("EARSHOT_JOB_TTL"))
    # group digests: days a stored voice-note transcript is kept
    retention_days: float = Field(30.0, gt=0, **_env("EARSHOT_RETENTION_DAYS"))
    # chat history (turns, with the usage budgets count) and each chat's latest audio: days kept
    history_days: float = Field(30.0, gt=0, **_env("EARSHOT_HISTORY_DAYS"))

    # who may use the bots (empty lists: everyone); Telegram ids or @usernames, Slack user, channel or team ids
    allowed_users: IdList = Field((), **_env("EARSHOT_ALLOWED_USERS"))
    allowed_chats: IdList = Field((), **_env("EARSHOT_ALLOWED_CHATS"))
    admin_users: IdList = Field((), **_env("EARSHOT_ADMIN_USERS"))
    # daily token budgets (UTC days; 0 = unlimited), sized so one day can't burn a 100k-token free trial
    user_daily_tokens: int = Field(10_000, ge=0, **_env("EARSHOT_USER_DAILY_TOKENS"))
    chat_daily_tokens: int = Field(15_000, ge=0, **_env("EARSHOT_CHAT_DAILY_TOKENS"))
    global_daily_tokens: int = Field(20_000, ge=0, **_env("EARSHOT_GLOBAL_DAILY_TOKENS"))
    user_requests_per_minute: int = Field(10, ge=0, **_env("EARSHOT_USER_REQUESTS_PER_MINUTE"))

    telegram_bot_token: SecretStr | None = Field(None, **_env("TELEGRAM_BOT_TOKEN"))
    telegram_api_base_url: str = Field(DEFAULT_TELEGRAM_BASE, **_env("TELEGRAM_API_BASE_URL"))

    slack_bot_token: SecretStr | None = Field(None, **_env("SLACK_BOT_TOKEN"))
    slack_signing_secret: SecretStr | None = Field(None, **_env("SLACK_SIGNING_SECRET"))
    slack_app_token: SecretStr | None = Field(None, **_env("SLACK_APP_TOKEN"))
    slack_api_url: str = Field(DEFAULT_SLACK_API, **_env("SLACK_API_URL"))

    @field_validator("allowed_users", "allowed_chats", "admin_users", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            value = re.split(r"[,\s]+", value)
        if isinstance(value, (list, tuple, set, frozenset)):
            return tuple(dict.fromkeys(normalise_id(v) for v in value if str(v).strip() not in ("", "@")))
        return value

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    def secrets(self) -> list[str]:
        """Every secret value set, for log redaction."""
        fields = (self.dashscope_api_key, self.telegram_bot_token, self.slack_bot_token,
                  self.slack_signing_secret, self.slack_app_token)
        return [f.get_secret_value() for f in fields if f is not None and f.get_secret_value()]
