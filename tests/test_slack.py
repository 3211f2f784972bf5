"""The Slack app end to end: signed requests to its HTTP server, the real slack-sdk client talking to the
Slack stand-in, the real Assistant talking to the DashScope stand-in. Nothing of earshot's is mocked."""
from __future__ import annotations

import logging
import re
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from bots.slack import SlackServer, convert, render
from bots.slack.listeners import Handlers
from core.config import Settings
from core.errors import EarshotError
from core.words import messages
from tests.conftest import CHANNEL, DM, World, answers, dm_clip, free_port, serving, settings_for
from tests.conftest import SLACK_SECRET as SECRET
from tests.fakes.dashscope import FakeDashScope, tone_audio
from tests.fakes.slack import BOT_ID, BOT_USER_ID, FakeSlack, event_body, signed_headers, slash_body
from tests.waiting import until, until_sync

# ---- the HTTP endpoint --------------------------------------------------------------------------------

async def test_bad_stale_and_missing_signatures_are_refused(world: World) -> None:
    body = slash_body("help", response_url=world.slack.response_url())
    wrong = await world.http.post("/slack/events", content=body,
                                  headers=signed_headers("not-the-secret", body))
    stale = await world.post(body, timestamp=int(time.time()) - 6 * 60)
    unsigned = await world.http.post("/slack/events", content=body,
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    tampered = await world.http.post("/slack/events", content=body + b"&x=1",
                                     headers=signed_headers(SECRET, body))
    assert [r.status_code for r in (wrong, stale, unsigned, tampered)] == [401] * 4
    ok = await world.post(body, timestamp=int(time.time()) - 4 * 60)     # within the 5 minutes: accepted
    assert ok.status_code == 200 and "/earshot transcribe" in ok.text
    assert not world.slack.posts and not world.model.calls


async def test_url_verification_challenge_is_answered(world: World) -> None:
    body = b'{"token":"x","challenge":"abc123","type":"url_verification"}'
    r = await world.post(body)
    assert r.status_code == 200 and "abc123" in r.text


# ---- slash command ----------------------------------------------------------------------------------------

async def test_slash_command_acks_fast_then_delivers(world: World, clip: bytes) -> None:
    record = world.slack.add_file(clip)
    world.slack.add_message(CHANNEL, {"subtype": "file_share", "user": "U0BOB", "text": "",
                                      "files": [FakeSlack.event_file(record)]})
    world.model.latency = 1.5                      # the answer takes a while; the ack must not wait for it
    start = time.monotonic()
    r = await world.post(slash_body("transcribe", channel=CHANNEL, response_url=world.slack.response_url()))
    acked = time.monotonic() - start
    assert r.status_code == 200 and "Listening" in r.text
    assert acked < 1.0, acked
    got = await until(lambda: answers(world.slack, r"440Hz@0\.\ds"))
    assert got and got[0]["channel"] == CHANNEL and got[0]["thread_ts"] is None
    assert "/earshot transcribe" in str(got[0]["blocks"]) and "<@U0ALICE>" in str(got[0]["blocks"])
    assert world.model.calls and world.slack.downloads == [record["id"]]


async def test_slash_command_without_audio_says_how_to_the_asker_alone(world: World) -> None:
    r = await world.post(slash_body("summarize", channel=CHANNEL, response_url=world.slack.response_url()))
    assert r.status_code == 200
    said = render.escape(messages.NO_AUDIO_YET)[:40]
    assert await until(lambda: [b for b in world.slack.responses if said in str(b)])
    [response] = [b for b in world.slack.responses if said in str(b)]
    assert response["response_type"] == "ephemeral"
    assert not answers(world.slack, re.escape(said)), "said to the whole channel"
    assert not world.model.calls


async def test_slash_command_falls_back_to_response_url(world: World, clip: bytes) -> None:
    """A channel the bot isn't in: it can't read history or post, so it uses the audio it last saw there
    and answers through response_url."""
    record = world.slack.add_file(clip)
    await world.event({"type": "app_mention", "channel": CHANNEL, "user": "U0ALICE", "ts": world.slack.ts(),
                       "text": f"<@{BOT_USER_ID}>", "files": [FakeSlack.event_file(record)]})
    assert await until(lambda: answers(world.slack, "440Hz"))
    world.slack.failures |= {"conversations.history": "not_in_channel", "chat.postMessage": "not_in_channel"}
    r = await world.post(slash_body("events", channel=CHANNEL, response_url=world.slack.response_url()))
    assert r.status_code == 200
    got = await until(lambda: [x for x in world.slack.responses if "440Hz" in str(x)])
    assert got and got[0]["response_type"] == "in_channel"


async def test_slash_command_simple_words(world: World) -> None:
    async def say(text: str) -> str:
        r = await world.post(slash_body(text, channel=CHANNEL, response_url=world.slack.response_url()))
        assert r.status_code == 200
        return r.text
    assert "/earshot ask" in await say("")
    assert messages.DIGEST_ADMINS_ONLY in await say("digest on")          # U0ALICE is no workspace admin
    assert "don't know" in await say("dance")
    assert messages.NEED_LANGUAGE in await say("translate")
    assert "0 tokens" in await say("usage")
    assert "forgotten" in await say("reset")
    assert not world.slack.posts and not world.model.calls


async def test_usage_and_reset_act_on_the_chat(world: World, clip: bytes) -> None:
    record = world.slack.add_file(clip)
    await world.event(dm_clip(world.slack, record))
    assert await until(lambda: answers(world.slack, "440Hz"))
    r = await world.post(slash_body("usage", channel=DM, response_url=world.slack.response_url()))
    assert re.search(r"Used here today: [1-9][\d,]* tokens", r.text), r.text
    await world.event({"type": "message", "channel": DM, "channel_type": "im", "user": "U0ALICE",
                       "text": "reset", "ts": world.slack.ts()})
    assert await until(lambda: answers(world.slack, "forgotten"))
    await world.event({"type": "message", "channel": DM, "channel_type": "im", "user": "U0ALICE",
                       "text": "what was the tone?", "ts": world.slack.ts()})
    follow = await until(lambda: answers(world.slack, r"text-only|Send me a voice note"))
    assert follow and "440Hz" not in follow[0]["text"], "reset forgot the DM's history"


# ---- DMs ------------------------------------------------------------------------------------------------

async def test_dm_clip_is_answered_in_its_thread_then_followed_up(world: World, clip: bytes) -> None:
    record = world.slack.add_file(clip)
    event = dm_clip(world.slack, record)
    start = time.monotonic()
    await world.event(event)
    assert time.monotonic() - start < 1.0
    got = await until(lambda: answers(world.slack, r"440Hz@0\.\ds"))
    assert got and got[0]["channel"] == DM and got[0]["thread_ts"] == event["ts"]
    assert world.slack.calls_to("files.info"), "the slim file entry needs files.info for its URL"
    assert "voice chat" in str(world.model.calls[0].texts).lower() or world.model.calls[0].items

    await world.event({"type": "message", "channel": DM, "channel_type": "im", "user": "U0ALICE",
                       "text": "and what came after it?", "ts": world.slack.ts()})
    follow = await until(lambda: answers(world.slack, r"\[text-only\]"))
    assert follow and follow[0]["thread_ts"] is None, "a follow-up is answered in the DM itself"
    assert "440Hz@0." in follow[0]["text"], "the follow-up saw the DM's history"


async def test_dm_clip_with_text_asks_that_question(world: World, clip: bytes) -> None:
    record = world.slack.add_file(clip, name="memo.mp3", mimetype="audio/mpeg", filetype="mp3", subtype=None)
    await world.event(dm_clip(world.slack, record, text="what pitch is it?"))
    assert await until(lambda: answers(world.slack, "440Hz"))
    assert any("what pitch is it?" in t for t in world.model.calls[0].texts)


async def test_answer_that_slack_fails_to_take_is_posted_once_it_recovers(world: World, clip: bytes) -> None:
    world.slack.failures["chat.postMessage"] = "internal_error"
    await world.event(dm_clip(world.slack, world.slack.add_file(clip)))
    assert await until(lambda: world.slack.calls_to("chat.postMessage"))
    del world.slack.failures["chat.postMessage"]
    got = await until(lambda: answers(world.slack, r"440Hz@0\.\ds"), within=15)
    assert len(got) == 1, "the failed post was retried, and only once it went through"
    assert len(world.model.calls) == 1, "a retried delivery does not ask the model again"


async def test_dm_non_audio_file_is_explained(world: World) -> None:
    record = world.slack.add_file(b"%PDF-1.4", name="notes.pdf", mimetype="application/pdf", filetype="pdf",
                                  subtype=None)
    await world.event(dm_clip(world.slack, record))
    assert await until(lambda: answers(world.slack, "couldn't read that as audio"))
    assert not world.model.calls and not world.slack.downloads


# ---- channels ---------------------------------------------------------------------------------------------

async def test_mention_with_audio_is_answered_in_thread(world: World, clip: bytes) -> None:
    record = world.slack.add_file(clip)
    ts = world.slack.ts()
    await world.event({"type": "app_mention", "channel": CHANNEL, "user": "U0ALICE", "ts": ts,
                       "text": f"<@{BOT_USER_ID}> summarize", "files": [FakeSlack.event_file(record)]})
    got = await until(lambda: answers(world.slack, "440Hz"))
    assert got and got[0]["channel"] == CHANNEL and got[0]["thread_ts"] == ts
    assert "summar" in str(world.model.calls[0].texts).lower()


async def test_mention_in_a_thread_uses_the_threads_latest_audio(world: World, clip: bytes) -> None:
    old = world.slack.add_file(tone_audio((0, 0.3), (660, 1.0), (0, 0.5), fmt="webm"))
    new = world.slack.add_file(clip)
    root = world.slack.add_message(CHANNEL, {"user": "U0BOB", "text": "standup recording",
                                             "files": [FakeSlack.event_file(old)]})
    world.slack.add_message(CHANNEL, {"user": "U0BOB", "thread_ts": root["ts"], "text": "take two",
                                      "files": [FakeSlack.event_file(new)]})
    world.slack.add_message(CHANNEL, {"user": "U0BOT2", "bot_id": "B0OTHER", "thread_ts": root["ts"],
                                      "files": [FakeSlack.event_file(old)]})   # a bot's file doesn't count
    mention = world.slack.add_message(CHANNEL, {"user": "U0ALICE", "thread_ts": root["ts"],
                                                "text": f"<@{BOT_USER_ID}> which tone is this?"})
    await world.event({**mention, "type": "app_mention", "channel": CHANNEL})
    got = await until(lambda: answers(world.slack, "Hz@"))
    assert got and got[0]["thread_ts"] == root["ts"], world.slack.posts
    assert "440Hz" in got[0]["text"] and "660Hz" not in got[0]["text"]
    assert world.slack.downloads == [new["id"]]


async def test_mention_without_audio_says_how(world: World) -> None:
    ts = world.slack.ts()
    await world.event({"type": "app_mention", "channel": CHANNEL, "user": "U0ALICE", "ts": ts,
                       "text": f"<@{BOT_USER_ID}> hello?"})
    got = await until(lambda: answers(world.slack, "no audio here yet"))
    assert got and got[0]["thread_ts"] == ts and not world.model.calls


# ---- things never answered, or answered once ------------------------------------------------------------

async def test_own_and_other_bots_messages_and_unaddressed_channels_are_ignored(world: World,
                                                                                 clip: bytes) -> None:
    record = world.slack.add_file(clip)
    files = [FakeSlack.event_file(record)]
    base = {"channel": DM, "channel_type": "im", "files": files, "text": "hi"}
    for event in (
        # ourselves, then other bots
        {"type": "message", "subtype": "file_share", "bot_id": BOT_ID, "user": BOT_USER_ID, **base},
        {"type": "message", "subtype": "bot_message", "bot_id": "B0OTHER", **base},
        {"type": "message", "subtype": "file_share", "bot_id": "B0OTHER", "user": "U0BOT2", **base},
        {"type": "message", "subtype": "message_changed", "channel": DM, "channel_type": "im",
         "message": {"text": "edited"}},
        # a channel message that doesn't address us
        {"type": "message", "subtype": "file_share", "channel": CHANNEL, "channel_type": "channel",
         "user": "U0ALICE", "files": files, "text": "unaddressed"},
        {"type": "app_mention", "channel": CHANNEL, "bot_id": "B0OTHER", "text": f"<@{BOT_USER_ID}>",
         "files": files},
        {"type": "reaction_added", "user": "U0ALICE", "reaction": "wave"},
    ):
        await world.event({"ts": world.slack.ts(), **event})
    await world.idle()      # each listener was done when its request returned; no job is left either
    assert not world.slack.posts and not world.model.calls and not world.slack.downloads


async def test_retried_event_is_answered_once_even_after_a_restart(world: World, clip: bytes) -> None:
    record = world.slack.add_file(clip)
    event = dm_clip(world.slack, record)
    await world.event(event, event_id="Ev0RETRY01")
    await world.event(event, event_id="Ev0RETRY01", retry=1)
    assert await until(lambda: answers(world.slack, "440Hz"))
    await world.server.stop()
    again = SlackServer(world.settings, host="127.0.0.1", port=0)
    port = await again.start()
    try:
        body = event_body(event, event_id="Ev0RETRY01")
        r = await world.http.post(f"http://127.0.0.1:{port}/slack/events", content=body,
                                  headers=signed_headers(SECRET, body, retry=2))
        assert r.status_code == 200
        await world.idle()  # the listener was done when the request returned; any job it made is done too
    finally:
        await again.stop()
        world.server = SlackServer(world.settings, host="127.0.0.1", port=0)
        await world.server.start()   # the fixture stops it
    assert len(answers(world.slack, "440Hz")) == 1
    assert len(world.model.calls) == 1


# ---- errors ---------------------------------------------------------------------------------------------

async def test_missing_files_read_scope_apologises_and_tells_the_operator(
        world: World, clip: bytes, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    world.slack.files_scope = False
    record = world.slack.add_file(clip)
    event = dm_clip(world.slack, record)
    await world.event(event)
    got = await until(lambda: answers(world.slack, "misconfigured"))
    assert got and got[0]["thread_ts"] == event["ts"]
    assert got[0]["text"] == render.escape(messages.MISCONFIGURED)
    operator = [r for r in caplog.records if r.levelno >= logging.ERROR and "files:read" in r.getMessage()]
    assert operator, [r.getMessage() for r in caplog.records]
    assert not world.model.calls
    assert world.slack.token not in caplog.text and SECRET not in caplog.text


async def test_refused_model_key_apologises_and_tells_the_operator(world: World, clip: bytes,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    world.model.api_key = "sk-someone-else"
    record = world.slack.add_file(clip)
    await world.event(dm_clip(world.slack, record))
    got = await until(lambda: answers(world.slack, "misconfigured"))
    assert got
    assert any(r.levelno >= logging.ERROR and "DASHSCOPE_API_KEY" in r.getMessage() for r in caplog.records)
    assert "sk-test" not in str(world.slack.posts)


async def test_long_answer_is_split_and_escaped(world: World, clip: bytes) -> None:
    paragraph = "Tom & Jerry <script> said > less. " * 25     # 850 characters, 1,100 once escaped
    world.model.reply = lambda call: "\n\n".join(f"{n}. {paragraph}" for n in range(9))
    record = world.slack.add_file(clip)
    event = dm_clip(world.slack, record)
    await world.event(event)
    await until(lambda: len(world.slack.posts) >= 4)
    await world.idle()                  # the answer's job delivered: every part of it is posted
    posts = world.slack.posts
    sections = [b["text"]["text"] for p in posts for b in p["blocks"] if b["type"] == "section"]
    assert len(posts) >= 4 and all(len(s) <= 3000 for s in sections)
    assert all(p["thread_ts"] == event["ts"] for p in posts)
    joined = " ".join(sections)
    assert "<script>" not in joined and "&lt;script&gt;" in joined and "Tom &amp; Jerry" in joined
    assert re.sub(r"\s+", " ", joined).count("Tom &amp; Jerry") == 9 * 25
    assert [int(m) for m in re.findall(r"(\d)\. Tom", joined)] == list(range(9))


async def test_long_audio_gets_a_status_message_that_becomes_the_answer(world: World) -> None:
    plan = [(0, 1), (440, 2), (0, 30), (660, 2), (0, 30), (880, 2), (0, 3)]     # 70 s: three chunks
    record = world.slack.add_file(tone_audio(*plan, fmt="webm"))
    world.model.latency = 0.7
    event = dm_clip(world.slack, record)
    await world.event(event)
    done = await until(lambda: [p for p in world.slack.posts if "880Hz" in p["text"]], 40)
    assert done, world.slack.posts
    status = done[0]
    assert status["edits"] >= 1 and status["thread_ts"] == event["ts"]
    assert any("Listening" in u["text"] for u in world.slack.updates) or status["edits"] >= 1
    gaps = [b["at"] - a["at"] for a, b in pairwise(world.slack.updates)]
    # progress edits at most ~1/s; the answer itself may follow at once
    assert all(g >= 0.9 for g in gaps[:-1]), gaps
    marks = [status["text"].find(f"{hz}Hz") for hz in (440, 660, 880)]
    assert all(m >= 0 for m in marks) and marks == sorted(marks)


# ---- pieces -------------------------------------------------------------------------------------------

@hsettings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab &<>\n.")), max_size=9000), st.integers(20, 3000))
def test_split_fits_and_never_breaks_an_entity(text: str, limit: int) -> None:
    escaped = render.escape(text)
    pieces = render.split(escaped, limit)
    assert all(len(p) <= limit for p in pieces)
    for p in pieces:
        assert re.fullmatch(r"(?:[^&]|&(?:amp|lt|gt);)*", p), p
    assert "".join(pieces).replace(" ", "").replace("\n", "") == escaped.replace(" ", "").replace("\n", "") \
        or not escaped.strip()


def test_markdown_becomes_mrkdwn() -> None:
    assert render.to_mrkdwn("## Summary\n**Alice** & <Bob>") == "*Summary*\n*Alice* &amp; &lt;Bob&gt;"


def test_commands_and_audio_files_are_recognised() -> None:
    assert convert.parse_command("translate French please") == convert.Command("translate", "French please",
                                                                               convert.Task.TRANSLATE)
    assert convert.parse_command("help me with this", strict=True) is None
    assert convert.task_for_text("") == (convert.Task.CHAT, None)
    assert convert.task_for_text("who speaks?") == (convert.Task.ASK, "who speaks?")
    assert convert.task_for_text("transcribe") == (convert.Task.TRANSCRIBE, None)
    assert convert.strip_mentions(f"<@{BOT_USER_ID}>  what <@U1|bob> said") == "what said"
    assert convert.is_audio_file({"name": "clip.webm", "mimetype": "video/webm", "subtype": "slack_video"})
    assert convert.is_audio_file({"name": "talk.flac", "mimetype": "application/octet-stream"})
    assert not convert.is_audio_file({"name": "notes.pdf", "mimetype": "application/pdf", "filetype": "pdf"})


def test_missing_credentials_are_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(EarshotError) as err:
        SlackServer(Settings(db_path=tmp_path / "db", slack_bot_token="xoxb-x"))
    assert "SLACK_SIGNING_SECRET" in err.value.user_message


async def test_wrong_bot_token_stops_startup(tmp_path: Path) -> None:
    async with serving(FakeSlack(token="xoxb-the-real-one")) as slack:
        settings = settings_for(FakeDashScope(), tmp_path, slack=slack, slack_bot_token="xoxb-wrong",
                                dashscope_base_url="http://127.0.0.1:9/api/v1")
        server = SlackServer(settings, host="127.0.0.1", port=0)
        with pytest.raises(EarshotError) as err:
            await server.start()
    assert "invalid_auth" in err.value.user_message and "SLACK_BOT_TOKEN" in err.value.user_message


# ---- the manifest --------------------------------------------------------------------------------------

MANIFEST = Path(__file__).parent.parent / "deploy" / "slack-manifest.yml"


def _parse_block_yaml(text: str) -> Any:
    """Enough YAML for the manifest (block mappings, block lists of scalars or mappings, quoted scalars):
    PyYAML isn't a dependency, and a parse beats grepping."""
    lines = [(len(raw) - len(raw.lstrip(" ")), raw.strip()) for raw in text.splitlines()
             if raw.strip() and not raw.lstrip().startswith("#")]

    def scalar(v: str) -> Any:
        v = v.strip()
        if v[:1] in "\"'":
            return v[1:-1]
        return {"true": True, "false": False}.get(v, v)

    def block(i: int, indent: int) -> tuple[Any, int]:
        if lines[i][1].startswith("- "):
            items: list[Any] = []
            while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                rest = lines[i][1][2:]
                if re.match(r"^[\w.-]+:( |$)", rest):           # a mapping inside a list item
                    lines[i] = (indent + 2, rest)
                    value, i = block(i, indent + 2)
                    items.append(value)
                else:
                    items.append(scalar(rest))
                    i += 1
            return items, i
        mapping: dict[str, Any] = {}
        while i < len(lines) and lines[i][0] == indent and not lines[i][1].startswith("- "):
            key, _, value = lines[i][1].partition(":")
            i += 1
            if value.strip():
                mapping[key] = scalar(value)
            elif i < len(lines) and lines[i][0] > indent:
                mapping[key], i = block(i, lines[i][0])
            elif i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                mapping[key], i = block(i, indent)
            else:
                mapping[key] = None
        return mapping, i

    value, end = block(0, 0)
    assert end == len(lines), f"unparsed from line {end}: {lines[end]}"
    return value


def test_manifest_declares_what_the_app_listens_to() -> None:
    m = _parse_block_yaml(MANIFEST.read_text())
    assert m["display_information"]["name"] and m["features"]["bot_user"]["display_name"]
    [command] = m["features"]["slash_commands"]
    assert command["command"] == "/earshot" and command["url"].endswith("/slack/events")
    scopes = set(m["oauth_config"]["scopes"]["bot"])
    assert {"app_mentions:read", "chat:write", "commands", "files:read", "channels:history", "groups:history",
            "im:history", "mpim:history", "users:read"} <= scopes
    events = m["settings"]["event_subscriptions"]
    assert events["request_url"].endswith("/slack/events")
    # reaction_added and app_home_opened: the :memo: reaction and the Home tab (tests/test_native_slack.py)
    assert set(events["bot_events"]) == {"app_mention", "message.im", "message.channels", "message.groups",
                                         "reaction_added", "app_home_opened"}
    assert m["settings"]["interactivity"]["is_enabled"] is True
    assert m["settings"]["socket_mode_enabled"] is False

    # ...and the code listens to exactly those: the events, the command, at that path
    source = (Path(convert.__file__).parent / "listeners.py").read_text()
    assert 'app.event("app_mention")' in source and 'app.event("message")' in source
    assert f'app.command("{command["command"]}")' in source
    from bots.slack.server import EVENTS_PATH
    assert command["url"].endswith(EVENTS_PATH)
    assert callable(Handlers.on_command)


# ---- the command ---------------------------------------------------------------------------------------

def test_earshot_slack_serves_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from tests.fakes.server import Threaded

    slack = FakeSlack()
    with Threaded(slack.app) as s:
        slack.url = s.url
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DASHSCOPE_", "EARSHOT_"))}
        env |= {"SLACK_BOT_TOKEN": slack.token, "SLACK_SIGNING_SECRET": SECRET,
                "SLACK_API_URL": s.url + "/api/", "DASHSCOPE_API_KEY": "sk-test",
                "EARSHOT_DB": str(tmp_path / "db"), "HOME": str(tmp_path)}
        log = tmp_path / "slack.log"
        with open(log, "wb") as out:
            cli = [sys.executable, "-c", "from bots.cli import main; main()"]
            proc = subprocess.Popen([*cli, "slack", "--port", str(port)], env=env, stdout=out,
                                    stderr=subprocess.STDOUT,
                                    cwd=Path(__file__).parent.parent)
            try:
                url = f"http://127.0.0.1:{port}"
                def up() -> bool:
                    try:
                        return proc.poll() is not None or httpx.get(url + "/healthz", timeout=1).status_code == 200
                    except httpx.HTTPError:
                        return False
                until_sync(up, 20, "the Slack app's health check")
                body = slash_body("help", response_url=slack.response_url())
                r = httpx.post(url + "/slack/events", content=body, headers=signed_headers(SECRET, body),
                               timeout=5)
                assert r.status_code == 200 and "/earshot transcribe" in r.text, log.read_text()
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(15) == 0, log.read_text()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    text = log.read_text()
    assert "shutting down" in text and "Traceback" not in text
    assert slack.token not in text and SECRET not in text


async def test_socket_mode_answers_events_and_commands(tmp_path: Path, clip: bytes) -> None:
    import json
    import urllib.parse

    from bots.slack import SlackSocketMode

    async with serving(FakeSlack()) as slack, serving(FakeDashScope()) as model:
        wrong = SlackSocketMode(settings_for(model, tmp_path, slack=slack, slack_app_token="xapp-wrong"))
        with pytest.raises(EarshotError, match="SLACK_APP_TOKEN"):
            await wrong.start()
        # Socket Mode needs no signing secret
        app = SlackSocketMode(settings_for(model, tmp_path, slack=slack, slack_app_token=slack.app_token,
                                           slack_signing_secret=None))
        await app.start()
        try:
            assert await until(lambda: slack.sockets, 5)
            record = slack.add_file(clip)
            event = dm_clip(slack, record)
            await slack.send_envelope("events_api", json.loads(event_body(event)))
            got = await until(lambda: answers(slack, "440Hz"))
            assert got and got[0]["thread_ts"] == event["ts"]
            form = slash_body("help", response_url=slack.response_url()).decode()
            command = dict(urllib.parse.parse_qsl(form))
            ack = await slack.send_envelope("slash_commands", command)
            assert "/earshot transcribe" in json.dumps(ack)
        finally:
            await app.stop()
