"""The Discord adapter's side of durable jobs (core.flow.runner): fetch a job's attachment again (a signed CDN URL,
never with the bot token), show "typing" while it works, and deliver its outcome — through the interaction
that asked while its token lasts (kept in memory only: it is a secret), else into the channel as a reply.

discord.py waits out 429s itself (its buckets, `retry_after`); a send it still can't make raises, the runner
retries the delivery later, and core.store.jobs.Deliveries makes the retry go on after what was sent."""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import discord
import httpx

from core.audio import subtitles
from core.audio.links import fetcher_for
from core.audio.pipeline import check_length
from core.config import DEFAULT_DISCORD_API, Settings
from core.errors import AudioError, InputError
from core.flow.audio_refs import AudioRefs
from core.flow.runner import JobRunner
from core.flow.taps import wants_buttons
from core.store.jobs import Deliveries, Job, Notice, Outcome, Undeliverable
from core.values import Audio, ProgressCallback, Reply, Speech
from core.words import messages

from .convert import PLATFORM, FileRef, Where
from .render import MESSAGE_LIMIT, NO_PINGS, answer_view, pieces, waveform

log = logging.getLogger(__name__)

# where Discord serves attachments from (signed URLs: no token needed, and none is sent)
CDN_HOSTS = {"cdn.discordapp.com", "media.discordapp.net"}
INTERACTION_LIFE = timedelta(minutes=14)      # a token lasts 15 minutes: a little less, to be safe
IS_VOICE_MESSAGE = 1 << 13
VOICE_REFUSED = {50159, 50160, 50161}         # Discord's refusals of a malformed voice message


def attachment_origins(api_url: str) -> set[str]:
    """Hosts an attachment may come from: Discord's CDN, or DISCORD_API_URL's host when it points elsewhere (a
    proxy, a stand-in)."""
    host = urlsplit(api_url).hostname or ""
    return set(CDN_HOSTS) if api_url.rstrip("/") == DEFAULT_DISCORD_API else {host, *CDN_HOSTS}


class DiscordJobs:
    """The runner's callbacks for Discord jobs; `client` is set once the bot is built."""

    def __init__(self, runner: JobRunner, settings: Settings, refs: AudioRefs | None, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.refs = refs
        self.http = http
        self.links = fetcher_for(settings)
        self.origins = attachment_origins(settings.discord_api_url)
        self.client: discord.Client | None = None
        self._asked: dict[str, discord.Interaction] = {}    # job key -> the interaction that asked
        self.deliveries = Deliveries()          # what each answer had sent, for a retried delivery
        runner.register(PLATFORM, fetch=self._fetch, deliver=self._deliver, attend=self._attend,
                        audio_id=self._audio_id)

    def reply_through(self, key: str, interaction: discord.Interaction) -> None:
        """The job `key` answers through this interaction's followups while its token lasts."""
        self._asked[key] = interaction

    def _interaction(self, job: Job) -> discord.Interaction | None:
        it = self._asked.get(job.key)
        if it is not None and discord.utils.utcnow() - it.created_at > INTERACTION_LIFE:
            self._asked.pop(job.key, None)
            return None
        return it

    # --- fetch ---------------------------------------------------------------------------------------
    @staticmethod
    def _audio_id(job: Job) -> str | None:
        return FileRef.loads(job.file_ref).id if job.file_ref else None

    async def _fetch(self, job: Job) -> Audio:
        assert job.file_ref is not None
        ref = FileRef.loads(job.file_ref)
        if ref.link:
            return await self.links.fetch(ref.url)
        return await self.download(ref)

    async def download(self, ref: FileRef) -> Audio:
        """The attachment's bytes from its signed URL: no Authorization header (CDN URLs need none, and the
        token goes to no one but the API), at most EARSHOT_MAX_FILE_MB."""
        check_length(ref.size or 0, self.settings.max_file_bytes)
        if (urlsplit(ref.url).hostname or "") not in self.origins:
            raise InputError(messages.DISCORD_FILE_UNAVAILABLE, f"attachment {ref.id} is not on Discord's CDN")
        got, chunks = 0, []
        try:
            async with self.http.stream("GET", ref.url, follow_redirects=True) as resp:
                if resp.status_code != 200:
                    raise InputError(messages.DISCORD_FILE_UNAVAILABLE,
                                     f"attachment {ref.id} answered HTTP {resp.status_code}")
                async for chunk in resp.aiter_bytes():
                    got += len(chunk)
                    check_length(got, self.settings.max_file_bytes)
                    chunks.append(chunk)
        except httpx.HTTPError as err:
            raise InputError(messages.DISCORD_FILE_UNAVAILABLE,
                             f"attachment {ref.id} failed: {type(err).__name__}") from err
        if not got:
            raise AudioError(messages.EMPTY_FILE)
        return Audio(b"".join(chunks), filename=ref.name, mime_type=ref.content_type)

    # --- while it works --------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _attend(self, job: Job) -> AsyncIterator[ProgressCallback | None]:
        """"earshot is typing…" in the channel while the job works (an interaction shows its own "thinking")."""
        if self._interaction(job) is not None or self.client is None:
            yield None
            return
        channel = self.client.get_partial_messageable(Where.loads(job.message_ref).channel)
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(channel.typing())
            except discord.HTTPException as err:     # a courtesy: never let it stop the answer
                log.info("typing indicator refused: %s", err.status)
            yield None

    # --- deliver ---------------------------------------------------------------------------------------
    async def _deliver(self, job: Job, outcome: Outcome) -> None:
        where = Where.loads(job.message_ref)
        # a retried delivery goes on after the pieces already sent (core.store.jobs.Deliveries)
        async with self.deliveries.resume(job) as sent:
            if isinstance(outcome, Notice):
                await sent.send(lambda: self._guard(job, lambda: self._text(job, where, outcome.text, reply=True)))
                return
            texts = pieces(outcome.text)
            view = await self._buttons(job) if isinstance(outcome, Reply) else None
            for i, piece in enumerate(texts):
                last = i == len(texts) - 1
                await sent.send(lambda p=piece, first=i == 0, v=view if last else None:  # type: ignore[misc]
                                self._guard(job, lambda: self._text(job, where, p, reply=first, view=v)))
            if isinstance(outcome, Reply) and outcome.speech is not None:
                speech = outcome.speech
                await sent.send(lambda: self._guard(job, lambda: self._voice(where, speech)))
            if isinstance(outcome, Reply) and subtitles.wants_files(outcome, MESSAGE_LIMIT):
                reply = outcome
                await sent.send(lambda: self._guard(job, lambda: self._transcript(job, where, reply)))
        self._asked.pop(job.key, None)
        log.info("channel %s: answered (job %d)", where.channel, job.id)

    async def _buttons(self, job: Job) -> discord.ui.View | None:
        if self.refs is None or job.file_ref is None or not wants_buttons(job.task, job.file_ref):
            return None
        token = await self.refs.mint(job.chat, job.file_ref, audio_id=self._audio_id(job))
        return answer_view(token, job.task, lang=job.lang)

    async def _guard(self, job: Job, send: Any) -> None:
        """One send, its failure sorted: retrying can help (a 429 discord.py gave up on, a 5xx, the network),
        can't (forbidden, gone, refused), or the interaction's token ran out (the channel takes over)."""
        via = self._interaction(job)
        try:
            await send()
        except discord.NotFound as err:
            if via is not None:       # the token expired or the interaction is gone: answer in the channel
                self._asked.pop(job.key, None)
                raise RuntimeError("the interaction's token is no longer valid") from None
            raise Undeliverable(f"Discord: {err.status} {err.text[:100]}") from None
        except discord.Forbidden as err:
            raise Undeliverable(f"Discord refused: {err.text[:100]}") from None
        except discord.HTTPException as err:
            if err.status == 429 or err.status >= 500:
                raise RuntimeError(f"Discord answered {err.status}") from None
            raise Undeliverable(f"Discord refused ({err.status} {err.code}): {err.text[:100]}") from None
        except (OSError, TimeoutError) as err:
            raise RuntimeError(f"sending to Discord failed: {type(err).__name__}") from None

    def _channel(self, where: Where) -> discord.PartialMessageable:
        assert self.client is not None
        return self.client.get_partial_messageable(where.channel)

    @staticmethod
    def _reference(where: Where) -> discord.MessageReference | None:
        if where.reply_to is None:
            return None
        return discord.MessageReference(message_id=where.reply_to, channel_id=where.channel, fail_if_not_exists=False)

    async def _text(self, job: Job, where: Where, text: str, *, reply: bool,
                    view: discord.ui.View | None = None) -> None:
        """A piece of the answer: the interaction's followup (the first one fills its "thinking" message, which
        for a message command is a reply to the target), else a message in the channel, the first replying."""
        extra: dict[str, Any] = {"view": view} if view is not None else {}
        if (it := self._interaction(job)) is not None:
            await it.followup.send(text, allowed_mentions=NO_PINGS, wait=True, **extra)
            return
        await self._channel(where).send(text, reference=self._reference(where) if reply else None,  # type: ignore[arg-type]
                                        allowed_mentions=NO_PINGS, **extra)

    async def _voice(self, where: Where, speech: Speech) -> None:
        """The spoken answer as a voice message (IS_VOICE_MESSAGE with duration_secs and waveform; discord.py has
        no call for it, so a raw Create Message); if Discord refuses that, as an audio attachment."""
        assert self.client is not None
        meta = {"id": 0, "filename": "voice-message.ogg", "duration_secs": round(speech.seconds, 2),
                "waveform": await asyncio.to_thread(waveform, speech.ogg, speech.seconds,
                                                    timeout=self.settings.ffmpeg_timeout)}
        payload: dict[str, Any] = {"flags": IS_VOICE_MESSAGE, "attachments": [meta], "allowed_mentions": {"parse": []}}
        if where.reply_to is not None:
            payload["message_reference"] = {"message_id": str(where.reply_to), "channel_id": str(where.channel),
                                            "fail_if_not_exists": False}
        form: list[dict[str, Any]] = [{"name": "payload_json", "value": json.dumps(payload)},
                {"name": "files[0]", "value": speech.ogg, "filename": "voice-message.ogg", "content_type": "audio/ogg"}]
        route = discord.http.Route("POST", "/channels/{channel_id}/messages", channel_id=where.channel)
        try:
            await self.client.http.request(route, form=form)
            return
        except discord.HTTPException as err:
            if err.status != 400 or err.code not in VOICE_REFUSED:
                raise
            log.warning("Discord refused the voice message (%s); sending the audio as a file", err.code)
        await self._channel(where).send(file=discord.File(io.BytesIO(speech.ogg), filename="answer.ogg"),
                                        reference=self._reference(where), allowed_mentions=NO_PINGS)  # type: ignore[arg-type]

    async def _transcript(self, job: Job, where: Where, reply: Reply) -> None:
        """A long transcript also as .txt and .srt attachments, named after the user's file if it had a name."""
        ref = FileRef.loads(job.file_ref) if job.file_ref else None
        original = ref.name if ref is not None and not ref.voice else None
        files = [discord.File(io.BytesIO(data), filename=name)
                 for name, data in subtitles.transcript_files(reply, original)]
        caption = messages.text(messages.TRANSCRIPT_FILES, job.lang)
        if (it := self._interaction(job)) is not None:
            await it.followup.send(caption, files=files, allowed_mentions=NO_PINGS, wait=True)
            return
        await self._channel(where).send(caption, files=files, allowed_mentions=NO_PINGS)
