"""All of earshot's configuration, read once from the environment (names are part of the contract)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import platformdirs
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

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


def default_db_path() -> Path:
    return Path(platformdirs.user_data_dir("earshot", appauthor=False)) / "earshot.db"


class Settings(BaseSettings):
    """Frozen settings; tests build one directly with keyword arguments."""

    model_config = SettingsConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    dashscope_api_key: SecretStr | None = Field(None, **_env("DASHSCOPE_API_KEY"))
    dashscope_base_url: str = Field(DEFAULT_DASHSCOPE_BASE, **_env("DASHSCOPE_HTTP_BASE_URL"))
    model: str = Field("qwen-audio-turbo-latest", **_env("EARSHOT_MODEL"))
    db_path: Path = Field(default_factory=default_db_path, **_env("EARSHOT_DB"))

    # bounds on what one request may cost us
    max_file_mb: float = Field(20.0, **_env("EARSHOT_MAX_FILE_MB"))
    max_audio_seconds: float = Field(1800.0, **_env("EARSHOT_MAX_AUDIO_SECONDS"))
    ffmpeg_timeout: float = Field(120.0, **_env("EARSHOT_FFMPEG_TIMEOUT"))
    # model calls in flight: per request, and across the whole process
    chunk_concurrency: int = Field(4, ge=1, **_env("EARSHOT_CHUNK_CONCURRENCY"))
    global_concurrency: int = Field(16, ge=1, **_env("EARSHOT_CONCURRENCY"))
    request_timeout: float = Field(120.0, **_env("EARSHOT_REQUEST_TIMEOUT"))
    retry_budget: float = Field(60.0, le=60.0, **_env("EARSHOT_RETRY_BUDGET"))
    history_turns: int = Field(20, ge=0, **_env("EARSHOT_HISTORY_TURNS"))

    telegram_bot_token: SecretStr | None = Field(None, **_env("TELEGRAM_BOT_TOKEN"))
    telegram_api_base_url: str = Field(DEFAULT_TELEGRAM_BASE, **_env("TELEGRAM_API_BASE_URL"))

    slack_bot_token: SecretStr | None = Field(None, **_env("SLACK_BOT_TOKEN"))
    slack_signing_secret: SecretStr | None = Field(None, **_env("SLACK_SIGNING_SECRET"))
    slack_app_token: SecretStr | None = Field(None, **_env("SLACK_APP_TOKEN"))
    slack_api_url: str = Field(DEFAULT_SLACK_API, **_env("SLACK_API_URL"))

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    def secrets(self) -> list[str]:
        """Every secret value set, for log redaction."""
        fields = (self.dashscope_api_key, self.telegram_bot_token, self.slack_bot_token,
                  self.slack_signing_secret, self.slack_app_token)
        return [f.get_secret_value() for f in fields if f is not None and f.get_secret_value()]
