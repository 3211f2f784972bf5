"""The door every request goes through before it becomes a job: access first (counted in the sender's rate
limit), then the request's own checks (a question for ask, a language for translate, some audio). Before
anything is downloaded; the Assistant checks again when the job runs, so skipping this costs bandwidth,
never tokens."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from core.errors import EarshotError
from core.flow.access import AccessPolicy
from core.flow.commands import check_request
from core.values import ChatKey, Sender, Task

log = logging.getLogger(__name__)


async def refusal(access: AccessPolicy, chat: ChatKey, sender: Sender, task: Task, text: str | None, *,
                  has_audio: bool, lang: str | None = None) -> str | None:
    """None when the request may become a job; else what to tell the sender, in `lang` ("" when they were
    told before)."""
    try:
        await access.check(chat, sender, count=True)
        check_request(task, text, has_audio)
    except EarshotError as err:
        if err.operator:
            log.error("operator action needed: %s", err.operator_message)
        log.debug("refused in %s %s%s", chat.platform, chat.chat_id, " (quietly: told before)" if err.silent else "")
        return "" if err.silent else err.user_text(lang)
    return None


async def admitted(access: AccessPolicy, chat: ChatKey, sender: Sender, task: Task, text: str | None, *,
                   has_audio: bool, say: Callable[[str], Awaitable[None]], lang: str | None = None) -> bool:
    """True when the request may become a job; else the sender is told why (unless told before)."""
    refused = await refusal(access, chat, sender, task, text, has_audio=has_audio, lang=lang)
    if refused:
        await say(refused)
    return refused is None
