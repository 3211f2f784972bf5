"""The one entry point adapters call: a Request in, a Reply out (INTERFACE DRAFT, being implemented)."""
from __future__ import annotations

from .config import Settings
from .models import ChatKey, ProgressCallback, Reply, Request, Usage


class Assistant:
    """Turns Requests into Replies: decode and split audio, ask the model, keep per-chat history.

    Use as `async with Assistant(settings) as assistant:`. Safe to call concurrently: different
    chats run in parallel, turns within one chat run in order.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def __aenter__(self) -> "Assistant":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP pool and the database."""

    async def handle(self, request: Request, *, progress: ProgressCallback | None = None,
                     stream: bool = False) -> Reply:
        """Answer one turn. Raises core.errors.EarshotError subclasses with a user_message.

        progress: awaited as chunks of long audio finish (Progress(done, total)), and, when
        stream=True and the answer comes from one model call, with Progress(..., partial=text so far).
        """
        raise NotImplementedError

    # --- chat state the adapters need -------------------------------------------------------
    async def reset(self, chat: ChatKey) -> None:
        """Forget the chat's history (the /reset command)."""
        raise NotImplementedError

    async def usage(self, chat: ChatKey) -> Usage:
        """Tokens this chat has used today (UTC)."""
        raise NotImplementedError

    async def remember_audio(self, chat: ChatKey, ref: str) -> None:
        """Remember an opaque platform reference (a Telegram file_id, a Slack file id) as the chat's latest audio."""
        raise NotImplementedError

    async def latest_audio(self, chat: ChatKey) -> str | None:
        """The chat's most recent audio reference, or None."""
        raise NotImplementedError

    async def claim_event(self, platform: str, event_id: str) -> bool:
        """True the first time an event id is seen (kept in SQLite across restarts), False after."""
        raise NotImplementedError
