"""The Telegram adapter's side of durable jobs (core.flow.runner): how to fetch a job's audio again, show that
it is being worked on, and deliver its outcome. Called by the runner, in this process or, after a crash,
in the next one; everything needed is in the stored job (chat, topic, message to answer, MediaRef)."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from telegram import InlineKeyboardMarkup, InputFile, ReplyParameters
from telegram.error import BadRequest, Forbidden, TelegramError

from core.audio import subtitles
from core.audio.links import fetcher_for
from core.audio.pipeline import check_length
from core.config import DEFAULT_TELEGRAM_BASE, Settings
from core.errors import AudioError
from core.flow.audio_refs import AudioRefs
from core.flow.progress import Throttle
from core.flow.runner import JobRunner
from core.flow.taps import wants_buttons
from core.store.jobs import Deliveries, Job, Notice, Outcome, Pieces, Undeliverable
from core.values import Audio, ProgressCallback, Reply
from core.words import messages

from .buttons import task_keyboard
from .convert import PLATFORM, MediaRef, original_name
from .progress import StatusMessage, Typing
from .render import MESSAGE_LIMIT, send_text, send_voice, with_flood_control

log = logging.getLogger(__name__)

TELEGRAM_DOWNLOAD_LIMIT = 20 * 1024 * 1024
DOWNLOAD_TIMEOUT = 120.0


def download_capped(settings: Settings) -> bool:
    """Telegram's cloud lets bots download 20 MB; a self-hosted Bot API server has no such cap."""
    return settings.telegram_api_base_url.rstrip("/") == DEFAULT_TELEGRAM_BASE


class TelegramJobs:
    """The runner's callbacks for Telegram jobs; `bot` is set once the application has started."""

    def __init__(self, runner: JobRunner, settings: Settings, refs: AudioRefs | None = None) -> None:
        self.runner = runner
        self.refs = refs            # buttons under answers about audio need a token for it
        self.settings = settings
        self.capped = download_capped(settings)
        self.throttle = Throttle()
        self.links = fetcher_for(settings)
        self.bot: Any = None
        self.deliveries = Deliveries()       # what each answer had sent, for a retried delivery
        runner.register(PLATFORM, fetch=self._fetch, deliver=self._deliver, attend=self._attend, stream=True,
                        audio_id=self._audio_id, unsay=self._unsay)

    @staticmethod
    def _where(job: Job) -> tuple[int, int | None, int]:
        """Chat id, forum topic and the message to answer, from what the job stored."""
        thread = job.chat.thread_id
        return int(job.chat.chat_id), int(thread) if thread else None, int(job.message_ref)

    async def _fetch(self, job: Job) -> Audio:
        assert job.file_ref is not None
        return await self._download(MediaRef.loads(job.file_ref))

    @staticmethod
    def _audio_id(job: Job) -> str | None:
        """Telegram's file_unique_id: a forwarded voice note's cached answer needs no download."""
        return MediaRef.loads(job.file_ref).file_unique_id if job.file_ref else None

    @contextlib.asynccontextmanager
    async def _attend(self, job: Job) -> AsyncIterator[ProgressCallback]:
        """Typing and a status message while the job works, noted in the job so that the next process can
        remove it if this one dies (core.flow.runner calls _unsay)."""
        chat_id, thread, reply_to = self._where(job)
        status = StatusMessage(self.bot, chat_id, self.throttle, thread_id=thread, reply_to=reply_to,
                               noted=lambda ref: self.runner.set_progress_ref(job, ref), lang=job.lang)
        try:
            async with Typing(self.bot, chat_id, thread):
                yield status.update
        finally:
            await status.close()

    async def _unsay(self, job: Job, ref: str) -> None:
        with contextlib.suppress(TelegramError):
            await self.bot.delete_message(int(job.chat.chat_id), int(ref))

    async def _deliver(self, job: Job, outcome: Outcome) -> None:
        chat_id, thread, reply_to = self._where(job)
        buttons = await self._buttons(job) if isinstance(outcome, Reply) else None
        # a retried delivery goes on after the messages and files already sent
        async with self.deliveries.resume(job) as pieces:
            try:
                if isinstance(outcome, Reply) and outcome.speech is not None:
                    await send_voice(self.bot, chat_id, outcome.speech, outcome.text, thread_id=thread,
                                     reply_to=reply_to, reply_markup=buttons, pieces=pieces)
                else:
                    await send_text(self.bot, chat_id, outcome.text, thread_id=thread, reply_to=reply_to,
                                    reply_markup=buttons, pieces=pieces)
            except (Forbidden, BadRequest) as err:   # blocked, kicked, chat gone: trying again can't help
                raise Undeliverable(f"Telegram refused: {err.message}") from err
            if isinstance(outcome, Reply) and subtitles.wants_files(outcome, MESSAGE_LIMIT):
                await self._send_transcript_files(job, outcome, pieces)
        if not isinstance(outcome, Notice):
            log.info("chat %s: answered message %s (job %d)", chat_id, reply_to, job.id)

    async def _buttons(self, job: Job) -> InlineKeyboardMarkup | None:
        """The other tasks for the same audio, under an answer about audio (bots.telegram.buttons)."""
        if self.refs is None or job.file_ref is None or not wants_buttons(job.task, job.file_ref):
            return None
        token = await self.refs.mint(job.chat, job.file_ref, audio_id=self._audio_id(job))
        return task_keyboard(token, job.task, lang=job.lang)

    async def _send_transcript_files(self, job: Job, reply: Reply, pieces: Pieces) -> None:
        """A long transcript also as .txt and .srt documents, named after the user's file if it had a name; each
        sent once over the runner's tries, after the text."""
        chat_id, thread, reply_to = self._where(job)
        original = original_name(MediaRef.loads(job.file_ref)) if job.file_ref else None
        where = ReplyParameters(reply_to, allow_sending_without_reply=True)
        for i, (name, data) in enumerate(subtitles.transcript_files(reply, original)):
            caption = messages.text(messages.TRANSCRIPT_FILES, job.lang) if i == 0 else None
            try:
                await pieces.send(lambda n=name, d=data, c=caption: with_flood_control(  # type: ignore[misc]
                    lambda: self.bot.send_document(chat_id, InputFile(d, filename=n), message_thread_id=thread,
                                                   reply_parameters=where, caption=c)))
            except (Forbidden, BadRequest) as err:
                raise Undeliverable(f"Telegram refused the transcript file: {err.message}") from err

    async def _download(self, media: MediaRef) -> Audio:
        if media.kind == "link":
            return await self.links.fetch(media.file_id)
        size = media.file_size or 0
        if self.capped and size > TELEGRAM_DOWNLOAD_LIMIT:
            raise AudioError(messages.TOO_BIG_TELEGRAM)
        check_length(size, self.settings.max_file_bytes)
        try:
            file = await with_flood_control(lambda: self.bot.get_file(media.file_id))
        except BadRequest as err:
            if "too big" in err.message.lower():
                raise AudioError(messages.TOO_BIG_TELEGRAM) from err
            raise
        data = await file.download_as_bytearray(read_timeout=DOWNLOAD_TIMEOUT)
        return Audio(bytes(data), filename=media.file_name, mime_type=media.mime_type)
