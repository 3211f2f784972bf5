"""Turn answer text into Slack messages that always post: escaped mrkdwn, split to fit a section block."""
from __future__ import annotations

import re
from typing import Any

from core.words.text import split_text

SECTION_LIMIT = 3000          # Slack rejects a section block whose text is longer
FALLBACK_LIMIT = 300          # the notification text shown beside the blocks

_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.MULTILINE)
_UNIT = re.compile(r"&(?:amp|lt|gt);|.", re.DOTALL)     # an entity is never cut


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_mrkdwn(text: str) -> str:
    """Model answers use Markdown; Slack wants mrkdwn: `**bold**` and `# headings` become `*bold*`."""
    text = escape(text)
    text = _HEADING.sub(r"*\1*", text)
    return _BOLD.sub(r"*\1*", text)


def split(text: str, limit: int = SECTION_LIMIT) -> list[str]:
    """Split already-formatted mrkdwn into pieces of at most `limit` characters, at natural breaks (core.words.text),
    never inside an `&amp;` entity."""
    return split_text(text, limit, units=_UNIT.findall) or ["(empty answer)"]


def _fallback(piece: str) -> str:
    return piece if len(piece) <= FALLBACK_LIMIT else piece[: FALLBACK_LIMIT - 1].rstrip() + "…"


def messages(text: str, *, plain: bool = False, header: str | None = None) -> list[dict[str, Any]]:
    """The chat.postMessage payloads (text + blocks) for one answer, in order.

    plain=True escapes without Markdown conversion (for our own sentences, which have no Markdown);
    header is ready-made mrkdwn put above the answer (who asked what).
    """
    body = escape(text) if plain else to_mrkdwn(text)
    if header:
        body = f"{header}\n\n{body}"
    return [{"text": _fallback(piece),
             "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": piece}}]}
            for piece in split(body)]
