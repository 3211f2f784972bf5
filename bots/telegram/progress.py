"""Feedback while the model works: a typing action kept alive, and a status message edited as parts finish.

Telegram shows a chat action for about 5 s, so it is renewed until the answer is sent. What the status
says and how often it changes is core.flow.progress's.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from telegram import Bot, Message, ReplyParameters
from telegram.constants import ChatAction
from telegram.error import BadRequest, RetryAfter, TelegramError

from core.flow.progress import StatusLine, Throttle
from core.values import Progress

from .render import MESSAGE_LIMIT, retry_after_seconds, split_text

log = logging.getLogger(__name__)

TYPING_EVERY = 4.0


class Typing:
    """`async with Typing(bot, chat_id):` shows 'typing…' until the block ends."""

    def __init__(self, bot: Bot, chat_id: int, thread_id: int | None = None) -> None:
        self.bot, self.chat_id, self.thread_id = bot, chat_id, thread_id
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.bot.send_chat_action(self.chat_id, ChatAction.TYPING,
                                                message_thread_id=self.thread_id)
            except RetryAfter as err:  # never worth waiting for: the next renewal will do
                await asyncio.sleep(retry_after_seconds(err))
                continue
            except TelegramError as err:
                log.debug("chat action failed: %s", err)
            await asyncio.sleep(TYPING_EVERY)

    async def __aenter__(self) -> Typing:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class StatusMessage:
    """A message that says how far a long request has got; removed once the answer is ready.

    Its `update` is the progress callback handed to the core: it never raises, so feedback
    trouble can't fail the answer.
    """

    def __init__(self, bot: Bot, chat_id: int, throttle: Throttle, *, thread_id: int | None = None,
                 reply_to: int | None = None, noted: Callable[[str | None], Awaitable[None]] | None = None,
                 lang: str | None = None) -> None:
        self.bot, self.chat_id, self.throttle = bot, chat_id, throttle
        self.thread_id, self.reply_to = thread_id, reply_to
        self.message: Message | None = None
        self.line = StatusLine(throttle, chat_id, MESSAGE_LIMIT, split_text, lang)
        self._lock = asyncio.Lock()
        self._closed = False
        self._noted = noted          # told the message's id once it is shown, and None once it is gone

    async def update(self, progress: Progress) -> None:
        if self._closed or (text := self.line.next(progress, showing=self.message is not None)) is None:
            return
        async with self._lock:  # chunks finish concurrently: one send/edit at a time
            if self._closed:
                return
            try:
                if self.message is None:
                    reply = ReplyParameters(self.reply_to, allow_sending_without_reply=True) if self.reply_to else None
                    self.message = await self.bot.send_message(self.chat_id, text, reply_parameters=reply,
                                                               message_thread_id=self.thread_id)
                    if self._noted:
                        await self._noted(str(self.message.message_id))
                else:
                    await self.bot.edit_message_text(text, self.chat_id, self.message.message_id)
                self.line.shown = text
            except RetryAfter as err:
                self.throttle.back_off(self.chat_id, retry_after_seconds(err))
            except BadRequest as err:  # 'not modified' and the like: harmless for a status line
                log.debug("status update refused: %s", err.message)
            except TelegramError as err:
                log.warning("status update failed: %s", err)

    async def close(self) -> None:
        """Remove the status message (the answer follows as a fresh message, which notifies the user)."""
        async with self._lock:
            self._closed = True
            if self.message is None:
                return
            try:
                await self.bot.delete_message(self.chat_id, self.message.message_id)
            except TelegramError as err:
                log.debug("could not delete the status message: %s", err)
            self.message = None
            if self._noted:
                await self._noted(None)
