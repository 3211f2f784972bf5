"""A link in Telegram or a Slack DM is fetched and answered like an upload; access comes before the fetch."""
from __future__ import annotations

import pytest
from aiohttp import web

from core.words import messages
from tests.conftest import DM, bot_running, slack_running
from tests.fakes.dashscope import tone_audio
from tests.fakes.server import Served
from tests.waiting import until

CLIP = tone_audio((0, 0.5), (660, 1.0), (0, 0.5), fmt="mp3")


class Origin:
    def __init__(self) -> None:
        self.hits = 0
        self.app = web.Application()
        self.app.router.add_get("/memo.mp3", self.memo)

    async def memo(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(body=CLIP, content_type="audio/mpeg")


@pytest.fixture
async def origin():
    o = Origin()
    async with Served(o.app) as s:
        o.url = s.url
        yield o


async def test_telegram_answers_a_link_like_an_upload(tmp_path, origin):
    async with bot_running(tmp_path, url_allow_private=True) as bot:
        bot.tg.push(501, text=origin.url + "/memo.mp3 which tone is it?")
        [answer] = await bot.said(501)
        assert "660Hz" in answer["text"] and origin.hits == 1
        assert any("which tone is it?" in t for t in bot.ds.calls[-1].texts)
        bot.tg.push(501, text="/transcribe")          # the link is now the chat's latest audio
        answers = await bot.said(501, 2)
        assert "660Hz" in answers[1]["text"]


async def test_telegram_refuses_a_loopback_link_by_default(tmp_path, origin):
    async with bot_running(tmp_path) as bot:
        bot.tg.push(502, text=origin.url + "/memo.mp3")
        [answer] = await bot.said(502)
        assert answer["text"] == messages.LINK_PRIVATE and origin.hits == 0 and not bot.ds.calls


async def test_telegram_checks_access_before_fetching_a_link(tmp_path, origin):
    async with bot_running(tmp_path, url_allow_private=True, allowed_users=("1",)) as bot:
        bot.tg.push(503, text=origin.url + "/memo.mp3")
        await bot.said(503)
        assert origin.hits == 0 and not bot.ds.calls


async def test_slack_dm_link_is_fetched_and_answered(tmp_path, origin):
    async with slack_running(tmp_path, url_allow_private=True) as world:
        slack, model = world.slack, world.model
        event = {"type": "message", "channel": DM, "channel_type": "im", "user": "U0ALICE",
                 "text": f"<{origin.url}/memo.mp3> summarize", "ts": slack.ts()}
        await world.event(event)
        await until(lambda: any("660Hz" in t for t in slack.texts()), within=20)
        assert origin.hits == 1 and "summar" in " ".join(model.calls[-1].texts).lower()
