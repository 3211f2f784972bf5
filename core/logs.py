"""Logging set-up: secrets are masked in every record, whatever logger wrote it."""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable

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


def setup_logging(level: int, secrets: Iterable[str] = ()) -> None:
    """Log to stderr; every handler gets the redacting filter, so no library can leak a secret."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request URL at INFO, and Telegram's carry the bot token
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
    logging.getLogger("httpcore").setLevel(max(level, logging.WARNING))
