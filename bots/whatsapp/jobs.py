"""The WhatsApp adapter's side of durable jobs (core.flow.runner): how to fetch a job's audio again, show that it is
being worked on, and deliver its outcome. Called by the runner, in this process or, after a crash, in the next
one; everything needed is in the stored job (the chat is the user's wa_id, message_ref the wamid to quote).

A delivery is several sends (the answer's pieces, a voice note, transcript files, the buttons): a retried
delivery goes on after the sends already made, so nothing arrives twice.
"""
from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from core.audio import subtitles
from core.audio.links import fetcher_for
from core.config import Settings
from core.flow.audio_refs import AudioRefs
from core.flow.runner import JobRunner
from core.flow.taps import wants_buttons
from core.store.jobs import Job, Notice, Outcome
from core.values import Audio, ProgressCallback, Reply, Speech
from core.words import messages

from . import render
from .convert import PLATFORM, media_ref
from .graph import GraphError
from .outbox import Outbox

log = logging.getLogger(__name__)

Send = Callable[[], Awaitable[object]]


class WhatsAppJobs:
    """The runner's callbacks for WhatsApp jobs."""

    def __init__(self, runner: JobRunner, outbox: Outbox, settings: Settings, refs: AudioRefs | None = None) -> None:
        self.outbox = outbox
        self.graph = outbox.graph
        self.refs = refs                    # buttons under answers about audio need a token for it
        self.settings = settings
        self.links = fetcher_for(settings)
        # (job id, a notice?) -> sends of that delivery made, while it is retried
        self._sent: dict[tuple[int, bool], int] = {}
        runner.register(PLATFORM, fetch=self._fetch, deliver=self._deliver, attend=self._attend,
                        audio_id=self._audio_id)

    async def _fetch(self, job: Job) -> Audio:
        assert job.file_ref is not None
        media = media_ref(job.file_ref)
        if media is None:
            return await self.links.fetch(json.loads(job.file_ref)["link"])
        return await self.graph.download(media.id, max_bytes=self.settings.max_file_bytes, filename=media.filename)

    @staticmethod
    def _audio_id(job: Job) -> str | None:
        media = media_ref(job.file_ref) if job.file_ref else None
        return media.audio_id if media else None

    @contextlib.asynccontextmanager
    async def _attend(self, job: Job) -> AsyncIterator[ProgressCallback | None]:
        """Work starts: the user's message gets its blue ticks and "typing…" (a courtesy: a refusal is logged)."""
        if self.outbox.window_open(job.chat.chat_id, job.created):
            try:
                await self.graph.mark_read(job.message_ref)
            except (GraphError, OSError) as err:
                log.info("could not mark %s read: %s", job.message_ref, err)
        yield None

    async def _deliver(self, job: Job, outcome: Outcome) -> None:
        sends = self._sends(job, outcome)
        key = (job.id, isinstance(outcome, Notice))     # "the model is down" is a delivery of its own
        done = self._sent.get(key, 0)
        for i, send in enumerate(sends):
            if i < done:
                continue                 # sent by an earlier try of this delivery
            await send()
            self._sent[key] = i + 1
        self._sent.pop(key, None)
        if not isinstance(outcome, Notice):
            log.info("answered %s's message %s (job %d)", job.chat.chat_id, job.message_ref, job.id)

    def _sends(self, job: Job, outcome: Outcome) -> list[Send]:
        """The delivery's sends, in order, each made when its turn comes."""
        to, since = job.chat.chat_id, job.created
        reply = outcome if isinstance(outcome, Reply) else None
        if not outcome.text.strip() and reply is None:
            return []
        texts = render.pieces(outcome.text, markdown=reply is not None)

        def text(i: int, piece: str) -> Send:
            return lambda: self.outbox.send(to, render.text_message(piece), since=since,
                                            reply_to=job.message_ref if i == 0 else None)
        sends = [text(i, piece) for i, piece in enumerate(texts)]
        if reply is not None and reply.speech is not None:
            speech = reply.speech
            sends.append(lambda: self._voice(job, speech))
        if reply is not None and subtitles.wants_files(reply, render.MESSAGE_LIMIT):
            original = media.filename if job.file_ref and (media := media_ref(job.file_ref)) else None
            for i, (name, data) in enumerate(subtitles.transcript_files(reply, original)):
                caption = messages.text(messages.TRANSCRIPT_FILES, job.lang) if i == 0 else None
                sends.append(self._document(job, name, data, caption))
        if reply is not None and self.refs is not None and wants_buttons(job.task, job.file_ref):
            sends.append(lambda: self._buttons(job))
        return sends

    async def _voice(self, job: Job, speech: Speech) -> None:
        """The spoken answer: uploaded as OGG/Opus, then sent as audio, which WhatsApp shows as a voice note."""
        media_id = await self.outbox.upload(speech.ogg, "audio/ogg", "answer.ogg")
        await self.outbox.send(job.chat.chat_id, render.audio_message(media_id), since=job.created)

    def _document(self, job: Job, name: str, data: bytes, caption: str | None) -> Send:
        async def send() -> None:
            media_id = await self.outbox.upload(data, "text/plain", name)      # .srt too: WhatsApp takes text/plain
            await self.outbox.send(job.chat.chat_id, render.document_message(media_id, name, caption),
                                   since=job.created)
        return send

    async def _buttons(self, job: Job) -> None:
        """The other tasks for the same audio, under an answer about audio (render.answer_buttons)."""
        assert self.refs is not None and job.file_ref is not None
        token = await self.refs.mint(job.chat, job.file_ref, audio_id=self._audio_id(job))
        await self.outbox.send(job.chat.chat_id, render.answer_buttons(token, job.task, job.lang), since=job.created)
