"""Slack payloads and hosts that must not fool earshot: the bot token stays with Slack's own file host,
Slack Connect stubs are read through files.info, digests and bad zones are answered clearly."""
from __future__ import annotations

from typing import Any

from aiohttp import web

from core.words import messages
from tests.conftest import CHANNEL, World, answers, dm_clip, slack_running
from tests.fakes.server import Served
from tests.fakes.slack import BOT_USER_ID, FakeSlack, slash_body
from tests.waiting import until


class ElsewhereHost:
    """A second loopback server, on another port: it serves any path and records what it was sent."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.requests: list[dict[str, str]] = []
        self.app = web.Application()
        self.app.router.add_get("/{tail:.*}", self._serve)

    async def _serve(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.headers))
        return web.Response(body=self.data, content_type="audio/webm")


def _leaked(host: ElsewhereHost, token: str) -> list[dict[str, str]]:
    return [h for h in host.requests if "authorization" in {k.lower() for k in h} or token in str(h)]


async def test_token_never_goes_to_another_origin_even_on_the_same_host(world: World, clip: bytes) -> None:
    far = ElsewhereHost(clip)
    async with Served(far.app) as other:
        assert other.url.rsplit(":", 1)[0] == world.slack.url.rsplit(":", 1)[0] != other.url, "same host, another port"
        hosted = world.slack.add_file(clip, url=f"{other.url}/files-pri/T0-F1/clip.webm")
        remote = world.slack.add_file(clip, url=f"{other.url}/remote/clip.webm", mode="external",
                                      is_external=True)
        await world.event(dm_clip(world.slack, hosted))
        await world.event({"type": "app_mention", "channel": CHANNEL, "user": "U0ALICE", "ts": world.slack.ts(),
                           "text": f"<@{BOT_USER_ID}>", "files": [FakeSlack.event_file(remote)]})
        assert await until(lambda: len(answers(world.slack, "outside Slack")) == 2)
    assert not _leaked(far, world.slack.token), far.requests
    assert not world.model.calls


async def test_files_on_slacks_own_origin_still_get_the_token(world: World, clip: bytes) -> None:
    record = world.slack.add_file(clip)
    await world.event(dm_clip(world.slack, record))
    assert await until(lambda: answers(world.slack, "440Hz"))
    assert world.slack.downloads == [record["id"]]


async def test_slack_connect_stub_is_read_through_files_info(world: World, clip: bytes) -> None:
    in_dm = world.slack.add_file(clip)
    mentioned = world.slack.add_file(clip)
    event: dict[str, Any] = dm_clip(world.slack, in_dm)
    event["files"] = [FakeSlack.connect_stub(in_dm)]
    await world.event(event)
    await world.event({"type": "app_mention", "channel": CHANNEL, "user": "U0ALICE", "ts": world.slack.ts(),
                       "text": f"<@{BOT_USER_ID}>", "files": [FakeSlack.connect_stub(mentioned)]})
    assert await until(lambda: len(answers(world.slack, "440Hz")) == 2)
    assert sorted(world.slack.downloads) == sorted([in_dm["id"], mentioned["id"]])
    assert {c.params["file"] for c in world.slack.calls_to("files.info")} >= {in_dm["id"], mentioned["id"]}
    assert not answers(world.slack, "couldn't read that as audio|no audio here yet")


async def test_slack_connect_stub_that_is_not_audio_is_explained(world: World) -> None:
    pdf = world.slack.add_file(b"%PDF-1.4 not audio", name="notes.pdf", mimetype="application/pdf",
                               filetype="pdf", subtype=None)
    event: dict[str, Any] = dm_clip(world.slack, pdf)
    event["files"] = [FakeSlack.connect_stub(pdf)]
    await world.event(event)
    assert await until(lambda: answers(world.slack, "couldn't read that as audio"))
    assert not world.slack.downloads and not world.model.calls
    assert messages.NOT_AUDIO


async def test_bad_time_zone_is_answered_not_a_server_error(world: World) -> None:
    for zone in ("Europe", "y" * 300):
        r = await world.post(slash_body(f"digest daily 09:00 {zone}", channel=CHANNEL,
                                        response_url=world.slack.response_url()))
        assert r.status_code == 200 and "Unknown time zone" in r.text and "Europe/Berlin" in r.text, r.text
    await world.event({"type": "app_mention", "channel": CHANNEL, "user": "U0ALICE", "ts": world.slack.ts(),
                       "text": f"<@{BOT_USER_ID}> digest daily 09:00 Europe"})
    assert await until(lambda: answers(world.slack, "Unknown time zone"))


async def test_digest_listening_keeps_the_token_home_too(world: World, clip: bytes) -> None:
    """Nobody asks for a clip heard for digests: a file pointing elsewhere must not take the token along."""
    world.slack.add_user("U0ALICE", "Alice", admin=True)
    r = await world.post(slash_body("digest on", channel=CHANNEL, response_url=world.slack.response_url()))
    assert r.status_code == 200
    far = ElsewhereHost(clip)
    async with Served(far.app) as other:
        elsewhere = world.slack.add_file(clip, url=f"{other.url}/files-pri/T0-F9/clip.webm")
        home = world.slack.add_file(clip)
        for record in (elsewhere, home):
            await world.event({"type": "message", "subtype": "file_share", "channel": CHANNEL,
                               "channel_type": "channel", "user": "U0BOB", "text": "", "ts": world.slack.ts(),
                               "files": [FakeSlack.event_file(record)]})
        assert await until(lambda: world.slack.downloads == [home["id"]])
    assert not _leaked(far, world.slack.token), far.requests


async def test_rate_limited_clips_are_not_downloaded_and_the_sender_is_told_once(tmp_path, clip: bytes) -> None:
    async with slack_running(tmp_path, user_requests_per_minute=2) as w:
        slack = w.slack
        for _ in range(5):
            await w.event(dm_clip(slack, slack.add_file(clip)))
        assert await until(lambda: len(answers(slack, "440Hz")) == 2 and answers(slack, "Slow down"))
        await w.idle()
    assert len(slack.downloads) == 2 and len(answers(slack, "Slow down")) == 1
