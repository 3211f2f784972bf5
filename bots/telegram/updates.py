"""getUpdates answers are read one update at a time, so one the Telegram library can't read stops nothing.

python-telegram-bot parses a getUpdates batch as a whole. One update it can't read (a field of a type
it doesn't expect, from a newer Bot API or a broken self-hosted server) fails the whole batch; the
Updater logs it and polls again from the same offset, forever: the bot spins and answers nobody, the
good updates of that batch included. Here an unreadable update is cut down to its bare id, which no
handler matches, so polling moves past it and the rest of the batch is served.
"""
from __future__ import annotations

import copy
import logging
from typing import Any

from telegram import Update

from .request import AiohttpRequest

log = logging.getLogger(__name__)


class SkipUnreadableUpdates(AiohttpRequest):
    """A request object for getUpdates only (ApplicationBuilder.get_updates_request)."""

    def parse_json_payload(self, payload: bytes) -> dict[str, Any]:  # type: ignore[override]
        data = super().parse_json_payload(payload)
        if isinstance(data, dict) and data.get("ok") is True and isinstance(data.get("result"), list):
            data["result"] = [u for u in map(readable, data["result"]) if u is not None]
        return data


def readable(raw: Any) -> Any:
    """The update as Telegram sent it if the library can read it, else its bare id (None without one:
    the Updater adds one to the last update's id to confirm the batch)."""
    update_id = raw.get("update_id") if isinstance(raw, dict) else None
    if type(update_id) is not int:
        log.warning("dropped a Telegram update without an id")
        return None
    try:
        if isinstance(Update.de_json(copy.deepcopy(raw), None), Update):
            return raw
    except Exception:                       # whatever the library raises on a shape it doesn't know
        pass
    log.warning("skipped Telegram update %d: it could not be read", update_id)
    return {"update_id": update_id}
