"""The Slack adapter's side of durable jobs (core.flow.runner): how to fetch a job's file again, show that it is
being worked on, and deliver its outcome, resuming after the parts already posted when a delivery is
retried. Called by the runner, in this process or, after a crash, in the next one."""
from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from slack_sdk.errors import SlackApiError

from core.audio import subtitles
from core.audio.links import fetcher_for
from core.config import Settings
from core.flow.audio_refs import AudioRefs
from core.flow.progress import Throttle
from core.flow.runner import JobRunner
from core.flow.taps import wants_buttons
from core.store.jobs import Deliveries, Job, Notice, Outcome, Undeliverable
from core.values import Audio, ProgressCallback, Reply, Speech
from core.words import messages

from . import render
from .blocks import answer_actions
from .convert import PLATFORM
from .files import download, scope_error
from .outbox import PASSING, Destination, Outbox, Status
from .webapi import api_error

log = logging.getLogger(__name__)


class SlackJobs:
    """The runner's callbacks for Slack jobs."""

    def __init__(self, runner: JobRunner, outbox: Outbox, settings: Settings, refs: AudioRefs | None = None) -> None:
        self.outbox = outbox
        self.refs = refs                                 # buttons under answers about audio need a token for it
        self.client = outbox.client
        self.http = outbox.http
        self.settings = settings
        self.links = fetcher_for(settings)
        self.throttle = Throttle()                       # status edits per channel (core.flow.progress)
        self._statuses: dict[int, Status] = {}          # job id -> its "Listening…" message, in this process
        self._response_urls: dict[str, tuple[str, bool]] = {}   # job key -> response_url, ephemeral (never stored)
        self.deliveries = Deliveries()                   # what each answer had posted, for a retried delivery
        runner.register(PLATFORM, fetch=self._fetch, deliver=self._deliver_job, attend=self._attend,
                        audio_id=self._audio_id)

    def reply_through(self, key: str, response_url: str, *, ephemeral: bool = False) -> None:
        """A slash command's job may answer through its response_url (kept in memory only: it is a secret);
        ephemeral: shown only to the one who asked (a message shortcut where the app can't post)."""
        self._response_urls[key] = (response_url, ephemeral)

    def _destination(self, job: Job) -> Destination:
        where = json.loads(job.message_ref)
        url, ephemeral = self._response_urls.get(job.key, (None, False))
        return Destination(where["channel"], where.get("thread_ts"), url, ephemeral)

    async def _fetch(self, job: Job) -> Audio:
        assert job.file_ref is not None
        ref = json.loads(job.file_ref)
        if ref.get("link"):
            return await self.links.fetch(ref["link"])
        return await download(self.client, json.loads(job.file_ref), token=self.client.token or "",
                              max_bytes=self.settings.max_file_bytes, http=self.http,
                              api_url=self.settings.slack_api_url)

    @staticmethod
    def _audio_id(job: Job) -> str | None:
        """A Slack file keeps its id wherever it is shared: its cached answer needs no download."""
        return json.loads(job.file_ref).get("id") if job.file_ref else None

    @contextlib.asynccontextmanager
    async def _attend(self, job: Job) -> AsyncIterator[ProgressCallback]:
        status = self._statuses.setdefault(job.id, Status(self.client, self._destination(job), self.throttle,
                                                               job.lang))
        yield status.progress

    async def _deliver_job(self, job: Job, outcome: Outcome) -> None:
        dest = self._destination(job)
        if isinstance(outcome, Notice):
            await self.outbox.say(dest, outcome.text)
            return
        status = self._statuses.pop(job.id, None)    # the answer replaces the "Listening…" message
        self._response_urls.pop(job.key, None)
        if isinstance(outcome, Reply):
            payloads = render.messages(outcome.text, header=json.loads(job.message_ref).get("header"))
            if (buttons := await self._buttons(job)) is not None:     # under the answer's last message
                payloads[-1] = {**payloads[-1], "blocks": [*payloads[-1]["blocks"], buttons]}
        else:
            payloads = render.messages(outcome.text, plain=True)
        # a retried delivery goes on after the messages and files already posted
        async with self.deliveries.resume(job) as pieces:
            await self.outbox.deliver(dest, payloads, status, pieces=pieces)
            if isinstance(outcome, Reply) and (speech := outcome.speech) is not None:
                await pieces.send(lambda: self._upload_speech(dest, speech))
            if isinstance(outcome, Reply) and subtitles.wants_files(outcome, render.SECTION_LIMIT):
                reply = outcome
                await pieces.send(lambda: self._upload_transcript(job, dest, reply))

    async def _buttons(self, job: Job) -> dict[str, Any] | None:
        """The other tasks for the same audio, under an answer about audio (.blocks.answer_actions)."""
        if self.refs is None or job.file_ref is None or not wants_buttons(job.task, job.file_ref):
            return None
        token = await self.refs.mint(job.chat, job.file_ref, audio_id=self._audio_id(job))
        return answer_actions(token, job.task, lang=job.lang)

    async def _upload_speech(self, dest: Destination, speech: Speech) -> None:
        """The spoken answer as an audio file in the thread, beside its text (files:write scope)."""
        await self._upload("the spoken answer", final=False, channel=dest.channel, thread_ts=dest.thread_ts,
                           content=speech.ogg, filename="answer.ogg",
                           title=f"earshot's answer ({speech.voice}, {round(speech.seconds)} s)")

    async def _upload_transcript(self, job: Job, dest: Destination, reply: Reply) -> None:
        """A long transcript also as .txt and .srt files in the answer's thread."""
        original = json.loads(job.file_ref).get("name") if job.file_ref else None
        uploads = [{"content": data, "filename": name, "title": name}
                   for name, data in subtitles.transcript_files(reply, original)]
        await self._upload("the transcript files", final=True, file_uploads=uploads, channel=dest.channel,
                           thread_ts=dest.thread_ts, initial_comment=messages.text(messages.TRANSCRIPT_FILES, job.lang))

    async def _upload(self, what: str, *, final: bool, **upload: Any) -> None:
        """files_upload_v2; a passing fault raises for a retry, a refusal is logged (and ends the delivery
        when `final`: the text went out, the files can't)."""
        try:
            await self.client.files_upload_v2(**upload)
        except SlackApiError as err:
            error = api_error(err)
            scoped = scope_error(err, f"refused {what}")
            log.error("uploading %s to Slack failed: %s", what, scoped.operator_message if scoped else error)
            if error in PASSING or err.response.status_code >= 500:
                raise RuntimeError(f"Slack answered {error}") from None
            if final:
                raise Undeliverable(f"Slack answered {error}") from None
        except Exception as err:     # the text is out; a retry tries the file again
            log.error("uploading %s to Slack failed: %s", what, type(err).__name__)
            raise RuntimeError(f"uploading to Slack failed: {type(err).__name__}") from None
