"""What the Slack listeners share: the message listeners (.listeners) and those for shortcuts, reactions, the Home
tab and buttons (.actions) both build on these parts, and neither imports the other."""
from __future__ import annotations

import httpx
from slack_sdk.web.async_client import AsyncWebClient

from core.app import Earshot
from core.values import ChatKey, Sender

from .digests import SlackDigests
from .jobs import SlackJobs
from .outbox import Outbox


class SlackParts:
    """The Web API client, earshot's parts (core.app), the outbox, the runner's callbacks and the digests' side."""

    def __init__(self, client: AsyncWebClient, app: Earshot, http: httpx.AsyncClient) -> None:
        self.client, self.earshot = client, app
        self.outbox = Outbox(client, http)
        # answers are durable jobs (core.flow.runner): the runner's callbacks for them are in .jobs
        self.job_callbacks = SlackJobs(app.jobs, self.outbox, app.settings, app.audio_refs)
        self.digests = SlackDigests(app.digests, self.outbox)   # `/earshot digest`, quiet listening in channels

    async def lang_of(self, chat: ChatKey, sender: Sender) -> str:
        """The language to answer in: the chat's /earshot lang, else the asker's Slack locale (users.info)."""
        return await self.earshot.chat_state.language_for(chat, await self.digests.locale(sender.user_id))
