"""Token estimates for text, before a request is sent (what the model will charge is known only after)."""
from __future__ import annotations

# what a request may spend on words besides the history: prompts, the answer's own text, slack
PROMPT_RESERVE = 400


def estimate_tokens(text: str) -> int:
    """A cautious count: UTF-8 bytes / 3 is about one token per CJK character and above English's rate."""
    return len(text.encode("utf-8")) // 3 + 4
