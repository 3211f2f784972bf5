"""Logging set-up: secrets are masked in every record, whatever logger wrote it."""
from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable
from typing import Any

# Telegram tokens travel in URL paths (/bot<token>/...), so mask that shape even when the token is unknown
_TELEGRAM_TOKEN = re.compile(r"\d{5,}:[A-Za-z0-9_-]{20,}")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\"]+")


class RedactingFilter(logging.Filter):
    """Replaces known secret values, bearer credentials and bot tokens in messages with ***."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        text = _TELEGRAM_TOKEN.sub("***", text)
        return _BEARER.sub(r"\1***", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info:
            # formatters reuse a set exc_text, so the traceback is printed already masked
            record.exc_text = self.redact(record.exc_text or logging.Formatter().formatException(record.exc_info))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request's fields, the traceback.

    The finished line is masked once more, so a secret can't slip through a field that isn't the message."""

    converter = time.gmtime  # type: ignore[assignment]  # typeshed types it as taking no seconds

    def __init__(self, redact: RedactingFilter) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
                                 "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        fields = getattr(record, "earshot", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info or record.exc_text:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return self._redact.redact(json.dumps(entry, ensure_ascii=False, default=str))


def setup_logging(level: int, secrets: Iterable[str] = (), fmt: str = "text") -> None:
    """Log to stderr, as text or (fmt="json") one JSON object per line; every handler gets the
    redacting filter, so no library can leak a secret."""
    handler = logging.StreamHandler()
    redact = RedactingFilter(secrets)
    handler.setFormatter(JsonFormatter(redact) if fmt == "json"
                         else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(redact)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request URL at INFO, and Telegram's carry the bot token
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
    logging.getLogger("httpcore").setLevel(max(level, logging.WARNING))


def guard_logs(secrets: Iterable[str], fmt: str = "text") -> None:
    """Make sure no log line can carry a secret, whoever configured logging (a serving bot's entry point)."""
    root = logging.getLogger()
    if not root.handlers:
        setup_logging(logging.INFO, secrets, fmt)
        return
    secrets = list(secrets)
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter(secrets))
    for name in ("httpx", "httpcore"):  # they log request URLs: Telegram's carry the token, response_urls are secrets
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).level))
