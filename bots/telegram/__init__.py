"""The Telegram adapter: `run(settings)` serves the bot; `build_application` wires it for tests."""
from .app import build_application, run

__all__ = ["build_application", "run"]
