"""Sending text that always arrives: split under Telegram's limit, HTML-escaped, flood control honoured.

Model output is arbitrary text (it may contain '<', '&', stray markdown), so it is escaped and sent as
HTML; if Telegram still refuses the formatting, the same words go out as plain text.
"""
from __future__ import annotations

import asyncio
import html
import logging
import warnings
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from telegram import Bot, InlineKeyboardMarkup, Message, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import BadRequest, RetryAfter

from core.store.jobs import Pieces
from core.values import Speech
from core.words.text import split_text as core_split

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 4096
CAPTION_LIMIT = 1024
FLOOD_ATTEMPTS = 4
MAX_FLOOD_WAIT = 120.0   # longer than this and the user is better served by an error than by silence

T = TypeVar("T")


def escape(text: str) -> str:
    return html.escape(text, quote=False)


def _size(text: str) -> int:
    """What a piece costs against the limit once escaped, in UTF-16 units as Telegram counts."""
    return len(escape(text).encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Pieces of `text` that each fit one message (core.words.text), measured as Telegram counts them."""
    return core_split(text, limit, size=_size)


def retry_after_seconds(err: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB 22 warns about the int/timedelta switch on access
        warnings.simplefilter("ignore")
        value = err.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


async def with_flood_control(call: Callable[[], Awaitable[T]]) -> T:
    """Run a Bot API call, waiting out 429 Too Many Requests as Telegram asks."""
    for attempt in range(FLOOD_ATTEMPTS):
        try:
            return await call()
        except RetryAfter as err:
            wait = retry_after_seconds(err)
            if attempt == FLOOD_ATTEMPTS - 1 or wait > MAX_FLOOD_WAIT:
                raise
            log.warning("Telegram flood control: waiting %.0f s before retrying", wait)
            await asyncio.sleep(wait + 0.1)
    raise AssertionError("unreachable")


def is_format_error(err: BadRequest) -> bool:
    return "parse entities" in err.message.lower() or "entity" in err.message.lower()


async def send_piece(bot: Bot, chat_id: int, text: str, *, thread_id: int | None = None,
                     reply_to: int | None = None, reply_markup: InlineKeyboardMarkup | None = None) -> Message:
    """One message of at most MESSAGE_LIMIT: as escaped HTML, else (formatting refused) as plain text."""
    reply = ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None

    def send(body: str, mode: str | None) -> Callable[[], Awaitable[Message]]:
        return lambda: bot.send_message(chat_id, body, parse_mode=mode, message_thread_id=thread_id,
                                        reply_parameters=reply, reply_markup=reply_markup)
    try:
        return await with_flood_control(send(escape(text), ParseMode.HTML))
    except BadRequest as err:
        if not is_format_error(err):
            raise
        log.warning("Telegram refused the HTML formatting (%s); sending plain text", err.message)
    return await with_flood_control(send(text, None))


async def _once(pieces: Pieces | None, send: Callable[[], Awaitable[T]]) -> T:
    """A piece of a job's answer is sent once over the runner's tries (core.store.jobs.Deliveries); other text
    just is."""
    return await (pieces.send(send) if pieces is not None else send())


async def send_text(bot: Bot, chat_id: int, text: str, *, thread_id: int | None = None,
                    reply_to: int | None = None, reply_markup: InlineKeyboardMarkup | None = None,
                    pieces: Pieces | None = None) -> list[Message]:
    """The whole text, in as many messages as it takes; the first one replies to `reply_to`, the last one carries
    `reply_markup` (buttons under the whole answer). pieces: a job's answer, resumed after the messages an earlier
    try sent."""
    sent: list[Message] = []
    parts = split_text(text) or ["…"]
    for i, part in enumerate(parts):
        sent.append(await _once(pieces, lambda p=part, i=i: send_piece(  # type: ignore[misc]
            bot, chat_id, p, thread_id=thread_id, reply_to=reply_to if i == 0 else None,
            reply_markup=reply_markup if i == len(parts) - 1 else None)))
    return sent


async def send_voice(bot: Bot, chat_id: int, speech: Speech, text: str, *, thread_id: int | None = None,
                     reply_to: int | None = None, reply_markup: InlineKeyboardMarkup | None = None,
                     pieces: Pieces | None = None) -> list[Message]:
    """A spoken answer as a voice note (OGG/Opus: Telegram shows a voice bubble for nothing else), with the
    text as its caption, or in messages after it when longer than a caption may be."""
    reply = ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
    caption = text.strip() if _size(text.strip()) <= CAPTION_LIMIT else None

    def send(body: str | None, mode: str | None) -> Callable[[], Awaitable[Message]]:
        return lambda: bot.send_voice(chat_id, speech.ogg, filename="answer.ogg", duration=round(speech.seconds),
                                      caption=body, parse_mode=mode if body else None,
                                      message_thread_id=thread_id, reply_parameters=reply,
                                      reply_markup=reply_markup if caption is not None else None)

    async def voice_note() -> Message:
        try:
            return await with_flood_control(send(escape(caption) if caption else None, ParseMode.HTML))
        except BadRequest as err:
            if not (caption and is_format_error(err)):
                raise
            return await with_flood_control(send(caption, None))
    voice = await _once(pieces, voice_note)
    if caption is not None:
        return [voice]
    return [voice, *await send_text(bot, chat_id, text, thread_id=thread_id, reply_to=voice.message_id,
                                    reply_markup=reply_markup, pieces=pieces)]
