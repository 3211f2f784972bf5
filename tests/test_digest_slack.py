"""Group digests in Slack, end to end: signed events and slash commands to the app's HTTP server, the real
slack-sdk client against the Slack stand-in, the real Assistant against the DashScope stand-in."""
from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bots.slack import render
from core.words import messages
from tests.conftest import World, slack_running
from tests.fakes.dashscope import heard, tone_audio
from tests.fakes.slack import BOT_USER_ID, FakeSlack, event_body
from tests.test_digest import Clock, rows_mentioning
from tests.waiting import job_rows, until

CHANNEL = "C0DIGEST7"
ANA, BO, CHEN = "U0ANA", "U0BO", "U0CHEN"        # Ana is a workspace admin


class Channel(World):
    """The Slack app with a channel whose members are Ana (an admin), Bo and Chen."""

    @property
    def db(self) -> Path:
        return self.settings.db_path

    async def command(self, text: str, user: str, channel: str = CHANNEL) -> str:
        return (await self.slash(text, user=user, channel=channel)).text

    async def clip(self, user: str, hz: int, **extra: Any) -> dict[str, Any]:
        record = self.slack.add_file(tone_audio((0, 0.5), (hz, 1.0), (0, 0.5), fmt="webm"), name=f"{hz}.webm")
        event = {"type": "message", "subtype": "file_share", "channel": CHANNEL, "channel_type": "channel",
                 "user": user, "text": "", "ts": self.slack.ts(), "files": [FakeSlack.event_file(record)], **extra}
        await self.event(event)
        return event

    async def stored(self, n: int) -> None:
        store = self.server.earshot.digests.store
        async def stored() -> bool:
            return len(await store.notes("slack", CHANNEL, 0, float("inf"))) >= n
        await until(stored, 20, f"{n} clips stored")
        await self.idle()                # a note is stored a moment before its job is marked done

    def posted(self) -> list[str]:
        """What the channel shows of each post: its blocks' text (else its plain text)."""
        return ["\n".join(b["text"]["text"] for b in p["blocks"] or []) or p["text"] or ""
                for p in self.slack.said(CHANNEL)]

    async def posts(self, n: int) -> list[str]:
        """The channel's posts once there are n and every job is done; checking there are no more."""
        await until(lambda: len(self.slack.said(CHANNEL)) >= n, 20, f"{n} posts in the channel")
        await self.idle()
        got = self.posted()
        assert len(got) == n, got
        return got


@pytest.fixture
async def channel(tmp_path: Path) -> AsyncIterator[Channel]:
    slack = FakeSlack()
    slack.add_user(ANA, "Ana", admin=True)
    slack.add_user(BO, "Bo")
    slack.add_user(CHEN, "Chen")
    async with slack_running(tmp_path, sl=slack) as w:
        yield Channel(w.slack, w.model, w.server, w.http, w.settings)


async def test_clips_are_heard_quietly_and_summed_up_in_order(channel: Channel) -> None:
    c = channel
    assert messages.DIGEST_ADMINS_ONLY in await c.command("digest on", BO)
    assert await c.command("digest on", ANA) == ""              # said in the channel, for everyone to see
    [on] = await c.posts(1)
    assert render.escape(messages.DIGEST_ON.format(prefix="/earshot ", days="30 days"))[:60] in on
    for user, hz in ((ANA, 440), (BO, 550), (CHEN, 660)):
        await c.clip(user, hz)
    await c.stored(3)
    assert len(c.slack.said(CHANNEL)) == 1, "clips get no replies"
    assert messages.DIGEST_WORKING in await c.command("digest", CHEN)
    _, digest = await c.posts(2)
    assert "Digest: 3 voice notes, 1 minute." in digest
    assert heard(digest) == [440, 550, 660], "all of them, in order of time"
    [summing] = [call for call in c.model.calls if not call.items]
    prompt = "\n".join(summing.texts)
    assert prompt.index("] Ana (") < prompt.index("] Bo (") < prompt.index("] Chen ("), "who said what"

    # forget: refused to members; for an admin, nothing about the channel is left in the database
    assert messages.DIGEST_ADMINS_ONLY in await c.command("forget", BO)
    assert rows_mentioning(c.db, CHANNEL)
    assert await c.command("forget", ANA) == ""
    assert render.escape(messages.FORGOTTEN)[:50] in (await c.posts(3))[2]
    assert rows_mentioning(c.db, CHANNEL) == {}
    calls = len(c.model.calls)
    await c.clip(BO, 770)                                          # not listening any more
    await c.idle()                              # its listener is done, and any job it made
    assert len(c.model.calls) == calls and not [r for r in job_rows(c.db) if r["chat_id"] == CHANNEL]


async def test_digest_in_a_mention_and_in_a_dm(channel: Channel) -> None:
    c = channel
    await c.command("digest on", ANA)
    await c.clip(BO, 440)
    await c.stored(1)
    ts = c.slack.ts()
    body = event_body({"type": "app_mention", "channel": CHANNEL, "user": CHEN, "ts": ts,
                       "text": f"<@{BOT_USER_ID}> digest 2h"})
    await c.post(body)
    _, digest = await c.posts(2)
    assert "Digest of the last 2 hours: 1 voice note" in digest and heard(digest) == [440]
    assert c.slack.said(CHANNEL)[1]["thread_ts"] == ts
    assert messages.DIGEST_GROUPS_ONLY.format(prefix="/earshot ") in await c.command("digest", ANA,
                                                                                     channel="D0ANA0001")
    assert "/earshot digest 2h" in await c.command("digest soon", ANA)
    assert len(c.slack.said(CHANNEL)) == 2, "how to write it is told to the asker alone"


async def test_daily_digest_is_posted_in_the_channel(channel: Channel) -> None:
    c = channel
    digests = c.server.earshot.digests
    berlin = ZoneInfo("Europe/Berlin")
    clock = digests.clock = Clock(datetime(2030, 7, 1, 17, 0, tzinfo=berlin).timestamp())
    assert messages.DIGEST_ADMINS_ONLY in await c.command("digest daily 18:30 Europe/Berlin", CHEN)
    await c.command("digest daily 18:30 Europe/Berlin", ANA)
    [scheduled] = await c.posts(1)
    assert "18:30 (Europe/Berlin)" in scheduled
    await c.clip(CHEN, 550)
    await c.clip(BO, 660)
    await c.stored(2)
    clock.now += 90 * 60 + 1
    digests.wake()
    posted = (await c.posts(2))[1]
    assert "Digest: 2 voice notes, 1 minute." in posted and heard(posted) == [550, 660]
