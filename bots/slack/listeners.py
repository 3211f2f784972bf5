"""What earshot does with each Slack event: DMs, @mentions and `/earshot`, turned into core Requests.

Every answer goes through `_answer`, so errors are reported the same way everywhere: a user error is
told to the user in the thread; an operator error is logged with what to fix, and the user gets a
short apology.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from core import messages, subtitles
from core.config import Settings
from core.access import usage_text
from core.errors import AccessRefused, EarshotError, VoiceUnavailable
from core.jobs import Job, NewJob, Notice, Outcome, Undeliverable
from core.links import fetcher_for, find_link
from core.models import Audio, ChatKey, Progress, ProgressCallback, Reply, Sender, Speech, Task
from core.runner import JobRunner
from core.service import Assistant

from . import render
from .convert import (DIGEST_WORDS, PLATFORM, Command, audio_files, chat_key, is_dm, is_from_bot,
                      latest_audio, parse_command, sender_of, strip_mentions, task_for_text, thread_of)
from .digests import SlackDigests, help_text
from .files import download, file_ref, scope_error
from .webapi import api_error, read

log = logging.getLogger(__name__)

LISTENING = "Listening…"
STATUS_INTERVAL = 1.0          # seconds between status edits: chat.update is rate limited
HISTORY_LOOKBACK = 100         # messages searched for the channel's latest audio
# Web API errors that mean "the bot can't post here", so a slash command answers through response_url
_CANNOT_POST = {"not_in_channel", "channel_not_found", "is_archived", "restricted_action", "cannot_dm_bot"}
# Web API errors worth another try when delivering an answer
_PASSING = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
_ANSWERED_MESSAGE_SUBTYPES = {None, "file_share", "thread_broadcast"}

HELP = """*earshot* listens to audio and answers about it.
• *In a DM:* send a voice clip or an audio file (mp3, m4a, wav, ogg, flac…) or a link to one, maybe with \
a question; type to follow up.
• *In a channel:* @mention me with an audio file, or in a thread that has one.
• `/earshot transcribe` · `summarize` · `sentiment` · `events` — about the latest audio here
• `/earshot ask <question>` · `/earshot translate <language>`
• `/earshot voice on [VOICE]` · `voice off` — answers spoken back as audio in the thread (models that speak)
• `/earshot reset` forgets this conversation · `/earshot usage` shows today's tokens"""


@dataclass(frozen=True, slots=True)
class Destination:
    """Where an answer goes: a channel, maybe a thread, and for slash commands a response_url fallback."""

    channel: str
    thread_ts: str | None = None
    response_url: str | None = None


class Status:
    """A "Listening…" message for long work, edited as chunks finish and finally replaced by the answer."""

    def __init__(self, handlers: "Handlers", dest: Destination) -> None:
        self._h = handlers
        self._dest = dest
        self.ts: str | None = None
        self._last = 0.0

    async def progress(self, p: Progress) -> None:
        now = time.monotonic()
        if now - self._last < STATUS_INTERVAL or (p.total <= 1 and p.partial is None):
            return
        self._last = now
        text = f"{LISTENING} {p.done}/{p.total} parts done" if p.partial is None else p.partial
        payload = render.messages(text, plain=p.partial is None)[0]
        try:
            if self.ts is None:
                resp = await self._h.client.chat_postMessage(channel=self._dest.channel,
                                                             thread_ts=self._dest.thread_ts, **payload)
                self.ts = resp["ts"]
            else:
                await self._h.client.chat_update(channel=self._dest.channel, ts=self.ts, **payload)
        except SlackApiError as err:
            # progress is a courtesy: never let it stop the answer
            log.warning("status message not posted: %s", api_error(err))


class Handlers:
    """The listeners, holding what they share: the Web API client, the Assistant, an HTTP pool for files."""

    def __init__(self, client: AsyncWebClient, assistant: Assistant, settings: Settings,
                 http: httpx.AsyncClient) -> None:
        self.client = client
        self.assistant = assistant
        self.settings = settings
        self.http = http
        self._inflight: set[asyncio.Task[Any]] = set()
        # answers are durable jobs (core.runner): stored before Slack gets its ack, resumed after a crash
        self.jobs = JobRunner(assistant)
        self.jobs.register(PLATFORM, fetch=self._fetch, deliver=self._deliver_job, attend=self._attend,
                           audio_id=self._audio_id)
        self.links = fetcher_for(settings)
        self._statuses: dict[int, Status] = {}          # job id -> its "Listening…" message, in this process
        self._response_urls: dict[str, str] = {}        # job key -> slash command response_url (never stored)
        self._posted: dict[int, list[int]] = {}          # job id -> parts of its answer posted, while retrying
        self.digests = SlackDigests(self)                # `/earshot digest`, quiet listening in channels
        self.help = HELP + "\n• " + help_text(settings.retention_days)

    def register(self, app: AsyncApp) -> None:
        app.event("message")(self.on_message)
        app.event("app_mention")(self.on_mention)
        app.command("/earshot")(self.on_command)
        # Acknowledge everything else (Slack retries unacknowledged events) and do nothing.
        app.event(re.compile(".*"))(self._ignore)
        app.action(re.compile(".*"))(self._ack_only)
        app.error(self.on_error)

    async def drain(self, timeout: float) -> None:
        """Let listeners in progress finish, then jobs at work (or give up after `timeout` seconds each);
        jobs left unfinished resume on the next start."""
        pending = {t for t in self._inflight if not t.done()}
        if pending:
            log.info("waiting for %d answer(s) in progress", len(pending))
            await asyncio.wait(pending, timeout=timeout)
        await self.jobs.stop(grace=timeout)

    # ---- listeners ---------------------------------------------------------------------------------
    async def on_message(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        """A DM: audio gets an answer in its thread; text is a command or a follow-up. In a channel, audio is
        only heard for digests (mentions arrive as app_mention)."""
        if is_from_bot(event) or event.get("subtype") not in _ANSWERED_MESSAGE_SUBTYPES:
            return
        if not is_dm(event):
            await self.digests.overhear(event, body)
            return
        if not await self._first_delivery(body):
            return
        channel = event["channel"]
        chat = chat_key(channel)                       # one history per DM
        text = strip_mentions(event.get("text"))
        sender = sender_of(event, body)
        files = audio_files(event)
        key = f"{channel}:{event.get('ts')}"           # one job per message, whatever Slack redelivers
        async with self._handling(body):
            if files:
                await self.assistant.remember_audio(chat, files[-1]["id"])
                task, arg = task_for_text(text)
                await self._answer(Destination(channel, thread_of(event)), chat, task, arg, files[-1], sender,
                                   key=key)
            elif event.get("files"):
                await self._say(Destination(channel, thread_of(event)), messages.NOT_AUDIO)
            elif (link := link_file(text)) is not None:     # a link to an audio file: handled like an upload
                task, arg = task_for_text(link.pop("rest"))
                await self._answer(Destination(channel, thread_of(event)), chat, task, arg, link, sender, key=key)
            elif (cmd := parse_command(text, strict=True)) is not None:
                await self._run_command(cmd, Destination(channel, event.get("thread_ts")), chat, sender, key=key)
            elif text:
                await self._answer(Destination(channel, event.get("thread_ts")), chat, Task.FOLLOW_UP, text,
                                   None, sender, key=key)

    async def on_mention(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        """An @mention in a channel: answer about its audio, or the latest audio in its thread."""
        if is_dm(event) or is_from_bot(event):
            return                                     # DMs arrive as message.im; bots are never answered
        if not await self._first_delivery(body):
            return
        channel = event["channel"]
        dest = Destination(channel, thread_of(event))
        chat = chat_key(channel, dest.thread_ts)       # one history per thread
        text = strip_mentions(event.get("text"))
        sender = sender_of(event, body)
        key = f"{channel}:{event.get('ts')}"
        async with self._handling(body):
            try:
                file = await self._mention_audio(event)
            except EarshotError as err:
                await self._report(dest, err, None)
                return
            if not audio_files(event) and (link := link_file(text)) is not None:
                file, text = link, link.pop("rest")
            cmd = parse_command(text, strict=True)
            if cmd is not None and cmd.task is None:
                await self._run_command(cmd, dest, chat, sender, key=key)
                return
            if file is None:
                await self._say(dest, messages.NO_AUDIO_YET)
                return
            if "id" in file:
                await self.assistant.remember_audio(chat_key(channel), file["id"])
            task, arg = task_for_text(text)
            await self._answer(dest, chat, task, arg, file, sender, key=key)

    async def on_command(self, ack: AsyncAck, command: dict[str, Any]) -> None:
        """`/earshot <task> [args]`: acknowledge at once (Slack drops acks after 3 s), then work."""
        cmd = parse_command(command.get("text"))
        assert cmd is not None
        channel = command["channel_id"]
        chat = chat_key(channel)
        if cmd.word in ("", "help"):
            await ack(self.help)
            return
        sender = sender_of(command)
        try:   # strangers are told once, in the ack, and nothing is fetched or spent for them
            await self.assistant.check_access(chat, sender, spending=cmd.task is not None)
        except AccessRefused as err:
            await ack("" if err.silent else err.user_message)     # an empty ack shows nothing
            return
        if cmd.word in DIGEST_WORDS:
            await self.digests.on_command(ack, command, cmd)
            return
        if cmd.word in ("reset", "usage", "voice"):
            await ack(await self._chat_state(cmd.word, chat, sender, cmd.arg) or "")   # local SQLite: well inside 3 s
            return
        if cmd.task is None:
            await ack(f"I don't know `/earshot {render.escape(cmd.word)}`.\n\n{self.help}")
            return
        if cmd.task is Task.TRANSLATE and not cmd.arg:
            await ack(messages.NEED_LANGUAGE)
            return
        await ack(LISTENING)
        dest = Destination(channel, None, command.get("response_url") or None)
        with self._tracked():
            await self._run_command(cmd, dest, chat, sender, header=True,
                                    key="command:" + (command.get("trigger_id") or uuid.uuid4().hex))

    async def on_error(self, error: Exception, body: dict[str, Any] | None = None) -> None:
        # Bolt calls this for anything a listener lets escape; log it, keep serving.
        kind = (body or {}).get("type") or (body or {}).get("command") or "request"
        log.error("unhandled error in a Slack %s: %s", kind, type(error).__name__, exc_info=error)

    async def _ignore(self) -> None:
        return None

    async def _ack_only(self, ack: AsyncAck) -> None:
        await ack()

    # ---- shared steps ------------------------------------------------------------------------------
    async def _run_command(self, cmd: Command, dest: Destination, chat: ChatKey, sender: Sender, *,
                           header: bool = False, key: str | None = None) -> None:
        """A named command, from `/earshot` or typed in a DM or mention, acting on the chat's latest audio."""
        if cmd.word in ("", "help"):
            await self._say(dest, self.help, markdown=True)
        elif cmd.word in DIGEST_WORDS:
            await self.digests.in_chat(cmd, dest, sender)
        elif cmd.word in ("reset", "usage", "voice"):
            if (said := await self._chat_state(cmd.word, chat, sender, cmd.arg)) is not None:
                await self._say(dest, said)
        elif cmd.task is not None:
            task, arg = cmd.task, cmd.arg or None
            if task is Task.ASK and not arg:
                task = Task.CHAT
            try:
                file = await self._channel_audio(dest.channel, chat)
            except EarshotError as err:
                await self._report(dest, err, None)
                return
            if file is None:
                await self._say(dest, messages.NO_AUDIO_YET)
                return
            top = None
            if header:   # in a channel, say who asked what about which file
                asked = render.escape(f"/earshot {cmd.word} {cmd.arg}".strip())
                who = f"<@{sender.user_id}> " if sender.user_id else ""
                top = f"{who}`{asked}` · {render.escape(file.get('name') or file['id'])}"
            await self._answer(dest, chat, task, arg, file, sender, header=top, key=key)

    async def _chat_state(self, word: str, chat: ChatKey, sender: Sender, arg: str = "") -> str | None:
        """What reset, usage or voice says; None when a stranger was already told no."""
        try:
            if word == "voice":
                await self.assistant.check_access(chat, sender, spending=False)
                return await self._voice(chat, arg)
            if word == "reset":
                await self.assistant.check_access(chat, sender, spending=False)
                await self.assistant.reset(chat)
                return "Done: I've forgotten our conversation here."
            report = await self.assistant.usage_report(chat, sender, private=chat.chat_id.startswith("D"))
        except AccessRefused as err:
            return None if err.silent else err.user_message
        return usage_text(report)

    async def _voice(self, chat: ChatKey, arg: str) -> str:
        """voice on [VOICE] | voice off: answers here come back spoken too, or text only."""
        words = arg.split()
        action = words[0].lower() if words else ""
        if action == "off":
            await self.assistant.voice_off(chat)
            return messages.VOICE_OFF
        if action != "on":
            return messages.VOICE_USAGE
        try:
            voice = await self.assistant.voice_on(chat, words[1] if len(words) > 1 else None)
        except VoiceUnavailable as err:
            return err.user_message
        return messages.VOICE_ON.format(voice=voice).replace("/voice off", "`/earshot voice off`")

    async def _answer(self, dest: Destination, chat: ChatKey, task: Task, text: str | None,
                      file: dict[str, Any] | None, sender: Sender, *, header: str | None = None,
                      key: str | None = None) -> None:
        """Store the request as a job (before the listener returns, so before Slack's ack); the runner
        fetches the file, asks the model and answers through _fetch, _attend and _deliver_job."""
        try:
            await self.assistant.check_access(chat, sender, count=True)   # before fetching the file
        except EarshotError as err:
            await self._report(dest, err, None)
            return
        key = key or "once:" + uuid.uuid4().hex
        if dest.response_url:
            self._response_urls[key] = dest.response_url
        where = {"channel": dest.channel, "thread_ts": dest.thread_ts, "header": header}
        await self.jobs.submit(NewJob(
            key=key, chat=chat, task=task, message_ref=json.dumps(where), text=text, sender=sender,
            file_ref=file_ref(file) if file is not None else None))

    # ---- jobs: called by the runner, in this process or in the next one after a crash ---------------------
    def _destination(self, job: Job) -> Destination:
        where = json.loads(job.message_ref)
        return Destination(where["channel"], where.get("thread_ts"), self._response_urls.get(job.key))

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
        status = self._statuses.setdefault(job.id, Status(self, self._destination(job)))
        yield status.progress

    async def _deliver_job(self, job: Job, outcome: Outcome) -> None:
        dest = self._destination(job)
        if isinstance(outcome, Notice):
            await self._say(dest, outcome.text)
            return
        status = self._statuses.pop(job.id, None)    # the answer replaces the "Listening…" message
        self._response_urls.pop(job.key, None)
        if isinstance(outcome, Reply):
            payloads = render.messages(outcome.text, header=json.loads(job.message_ref).get("header"))
        else:
            payloads = render.messages(outcome.text, plain=True)
        # a retried delivery goes on after the parts already posted
        posted = self._posted.setdefault(job.id, [0])
        await self._deliver(dest, payloads, status, posted=posted)
        # then the files, each once: a retried delivery goes on after the ones already uploaded
        step = len(payloads)
        if isinstance(outcome, Reply) and outcome.speech is not None:
            step += 1
            if posted[0] < step:
                await self._upload_speech(dest, outcome.speech)
                posted[0] = step
        if isinstance(outcome, Reply) and subtitles.wants_files(outcome, render.SECTION_LIMIT):
            step += 1
            if posted[0] < step:
                await self._upload_transcript(job, dest, outcome)
                posted[0] = step
        del self._posted[job.id]

    async def _upload_speech(self, dest: Destination, speech: Speech) -> None:
        """The spoken answer as an audio file in the thread, beside its text (files:write scope)."""
        try:
            await self.client.files_upload_v2(
                channel=dest.channel, thread_ts=dest.thread_ts, content=speech.ogg, filename="answer.ogg",
                title=f"earshot's answer ({speech.voice}, {round(speech.seconds)} s)")
        except SlackApiError as err:
            error = api_error(err)
            scoped = scope_error(err, "refused the spoken answer")
            log.error("uploading the spoken answer failed: %s", scoped.operator_message if scoped else error)
            if error in _PASSING or err.response.status_code >= 500:
                raise RuntimeError(f"Slack answered {error}") from None
        except Exception as err:     # the text is out; a retry tries the audio again
            log.error("uploading the spoken answer failed: %s", type(err).__name__)
            raise RuntimeError(f"uploading to Slack failed: {type(err).__name__}") from None

    async def _upload_transcript(self, job: Job, dest: Destination, reply: Reply) -> None:
        """A long transcript also as .txt and .srt files in the answer's thread (files_upload_v2)."""
        original = json.loads(job.file_ref).get("name") if job.file_ref else None
        uploads = [{"content": data, "filename": name, "title": name}
                   for name, data in subtitles.transcript_files(reply, original)]
        try:
            await self.client.files_upload_v2(file_uploads=uploads, channel=dest.channel, thread_ts=dest.thread_ts,
                                              initial_comment=messages.TRANSCRIPT_FILES)
        except SlackApiError as err:
            error = api_error(err)
            scoped = scope_error(err, "refused to upload the transcript files")
            log.error("uploading the transcript to Slack failed: %s", scoped.operator_message if scoped else error)
            if error in _PASSING:
                raise RuntimeError(f"Slack answered {error}") from None
            raise Undeliverable(f"Slack answered {error}") from None

    async def _report(self, dest: Destination, err: EarshotError, status: Status | None) -> None:
        if err.silent:   # refused again: the user has been told already
            return
        if err.operator:
            log.error("operator action needed: %s", err.operator_message)
        else:
            log.info("told the user: %s (%s)", err.user_message, err.operator_message)
        await self._deliver(dest, render.messages(err.user_message, plain=True), status)

    async def _say(self, dest: Destination, text: str, *, markdown: bool = False) -> None:
        await self._deliver(dest, render.messages(text, plain=not markdown), None)

    async def _deliver(self, dest: Destination, payloads: list[dict[str, Any]],
                       status: Status | None, *, posted: list[int] | None = None) -> None:
        """Post the payloads in order; the first replaces the status message if there is one.

        posted: for a job's answer, how many payloads went out already. Failures then raise, so the
        job runner retries (a passing fault) or gives up (Undeliverable), and a retry resumes after
        the payloads already posted instead of repeating them.
        """
        for i, payload in enumerate(payloads):
            if posted is not None and i < posted[0]:
                continue
            try:
                if i == 0 and status is not None and status.ts is not None:
                    try:
                        await self.client.chat_update(channel=dest.channel, ts=status.ts, **payload)
                        if posted is not None:
                            posted[0] = i + 1
                        continue
                    except SlackApiError as err:
                        log.warning("could not replace the status message: %s", api_error(err))
                await self.client.chat_postMessage(channel=dest.channel, thread_ts=dest.thread_ts,
                                                   unfurl_links=False, unfurl_media=False, **payload)
            except SlackApiError as err:
                error = api_error(err)
                if dest.response_url and error in _CANNOT_POST:
                    await self._respond(dest.response_url, payload)
                    continue
                scoped = scope_error(err, "refused to post an answer")
                log.error("posting to Slack failed: %s", scoped.operator_message if scoped else error)
                if posted is None:
                    return
                if error in _PASSING or err.response.status_code >= 500:
                    raise RuntimeError(f"Slack answered {error}") from None
                raise Undeliverable(f"Slack answered {error}") from None
            except Exception as err:   # a network failure must not crash the listener
                log.error("posting to Slack failed: %s", type(err).__name__)
                if posted is None:
                    return
                raise RuntimeError(f"posting to Slack failed: {type(err).__name__}") from None
            if posted is not None:
                posted[0] = i + 1

    async def _respond(self, response_url: str, payload: dict[str, Any]) -> None:
        """Answer a slash command through its response_url (valid 30 minutes, 5 uses)."""
        try:
            r = await self.http.post(response_url, json={"response_type": "in_channel", **payload})
            if r.status_code >= 400:
                log.error("response_url answered HTTP %d", r.status_code)
        except httpx.HTTPError as err:
            log.error("response_url failed: %s", type(err).__name__)

    async def _first_delivery(self, body: dict[str, Any]) -> bool:
        """False for an event already handled (Slack retries; we may have restarted since)."""
        event_id = body.get("event_id")
        if not event_id:
            return True
        if not await self.assistant.history.event_seen(PLATFORM, str(event_id)):
            return True
        log.info("skipping repeated delivery of %s", event_id)
        return False

    @contextlib.asynccontextmanager
    async def _handling(self, body: dict[str, Any]) -> AsyncIterator[None]:
        """Tracked for shutdown; the event is claimed once handled, not before: if we die first, Slack's
        retry gets through, and a job it already became is known by its key, so it can't answer twice."""
        with self._tracked():
            try:
                yield
            finally:
                if (event_id := body.get("event_id")):
                    await self.assistant.claim_event(PLATFORM, str(event_id))

    async def _mention_audio(self, event: dict[str, Any]) -> dict[str, Any] | None:
        files = audio_files(event)
        if files:
            return files[-1]
        if not event.get("thread_ts"):
            return None
        try:
            resp = await read(self.client, "conversations.replies", channel=event["channel"],
                              ts=event["thread_ts"], limit=200)
        except SlackApiError as err:
            if (scoped := scope_error(err, "refused to read a thread")):
                raise scoped from err
            log.warning("conversations.replies failed: %s", api_error(err))
            return None
        return latest_audio(resp.get("messages") or [])

    async def _channel_audio(self, channel: str, chat: ChatKey) -> dict[str, Any] | None:
        """The most recent audio in a channel: its history, else the last one we saw there."""
        try:
            resp = await read(self.client, "conversations.history", channel=channel, limit=HISTORY_LOOKBACK)
            found = latest_audio(resp.get("messages") or [])
            if found:
                return found
        except SlackApiError as err:
            # not a member of the channel, say: fall back to what we remember
            if (scoped := scope_error(err, "refused to read channel history")):
                log.error("operator action needed: %s", scoped.operator_message)
            else:
                log.info("conversations.history of %s failed: %s", channel, api_error(err))
        ref = await self.assistant.latest_audio(chat)
        return {"id": ref} if ref else None

    def _tracked(self) -> "_Tracked":
        return _Tracked(self._inflight)


def link_file(text: str) -> dict[str, Any] | None:
    """A message that starts with a link, as a file reference to fetch (core.links); "rest": the words after it."""
    link = find_link(text)
    if link is None:
        return None
    words = text.strip()
    rest = words.split(">", 1)[1] if words.startswith("<") else words[len(link):]
    name = link.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return {"link": link, "name": name if "." in name else None, "rest": rest.strip()}


class _Tracked:
    """Registers the running listener task so shutdown can wait for it."""

    def __init__(self, tasks: set[asyncio.Task[Any]]) -> None:
        self._tasks = tasks
        self._task = asyncio.current_task()

    def __enter__(self) -> None:
        if self._task is not None:
            self._tasks.add(self._task)

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._tasks.discard(self._task)
