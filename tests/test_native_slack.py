"""Native to Slack: message shortcuts, the :memo: reaction, the Home tab and buttons under answers.

The builders (bots/slack/blocks.py) and parsers (bots/slack/interactions.py) are checked against the Slack
stand-in, which posts real payload shapes signed as Slack signs them to a real slack-bolt app, and answers the
real AsyncWebClient as the Web API does (views.publish, reactions.get, chat.postEphemeral, history windows)."""
from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.blocks import (
    HOME_LANGUAGE_ACTION,
    HOME_VOICE_ACTION,
    TASK_ACTION_PREFIX,
    TRANSLATE_ACTION,
    HomeSettings,
    answer_actions,
    home_view,
)
from bots.slack.interactions import (
    SHORTCUTS,
    HomeChange,
    HomeOpened,
    Reaction,
    TaskButton,
    parse_block_actions,
    parse_home_opened,
    parse_reaction,
    parse_shortcut,
)
from bots.slack.webapi import read
from core.config import Settings
from core.flow.access import Allowance, UsageReport
from core.flow.audio_refs import AudioRefs, MemoryAudioRefStore
from core.store.history import HistoryStore
from core.values import ChatKey, Task, Usage
from tests.fakes.server import Served
from tests.fakes.slack import BOT_SCOPES, FakeSlack, block_problems, event_body, signed_headers
from tests.waiting import until

SECRET = "native-signing-secret"
CHANNEL = "C0GENERAL"
TOKEN = "AbCdEfGhIjKl"
MANIFEST = Path(__file__).resolve().parents[1] / "deploy" / "slack-manifest.yml"
REPORT = UsageReport(here=Usage(1200, 300, 150), user=Allowance(1650, 10_000), chat=Allowance(1650, 15_000),
                     everyone=Allowance(4000, 20_000), resets_in=5400, requests_per_minute=10)


class Workspace:
    """The stand-in, a client pointed at it, and a slack-bolt app that records what its listeners were given."""

    def __init__(self, slack: FakeSlack, url: str) -> None:
        self.slack = slack
        self.client = AsyncWebClient(token=slack.token, base_url=f"{url}/api/")
        self.app = AsyncApp(signing_secret=SECRET, client=self.client)
        self.got: list[tuple[str, dict[str, Any]]] = []

        async def record(ack: Any, body: dict[str, Any]) -> None:
            await ack()
            self.got.append((body.get("type", ""), body))

        for callback_id in SHORTCUTS:
            self.app.shortcut(callback_id)(record)
        self.app.action(re.compile("^earshot_"))(record)
        self.app.event("reaction_added")(record)
        self.app.event("app_home_opened")(record)

    async def post(self, body: bytes, *, secret: str = SECRET) -> int:
        """POST a body to the app as Slack does, signed; the HTTP status the app answers."""
        response = await self.app.async_dispatch(AsyncBoltRequest(body=body.decode(),
                                                                  headers=signed_headers(secret, body)))
        return response.status

    async def delivered(self, body: bytes) -> dict[str, Any]:
        """Post it and wait for the listener (events are acknowledged before their listener runs)."""
        before = len(self.got)
        assert await self.post(body) == 200
        await until(lambda: len(self.got) > before)
        return self.got[-1][1]


@pytest.fixture
async def ws() -> AsyncIterator[Workspace]:
    slack = FakeSlack()
    async with Served(slack.app) as served:
        slack.url = served.url
        yield Workspace(slack, served.url)


def clip_message(slack: FakeSlack, *, user: str = "U0BOB", thread_ts: str | None = None) -> dict[str, Any]:
    record = slack.add_file(b"\x1aE\xdf\xa3 webm", name="clip.webm")
    extra = {"thread_ts": thread_ts} if thread_ts else {}
    return slack.add_message(CHANNEL, {"user": user, "text": "listen", "files": [record], **extra})


# ---- builders --------------------------------------------------------------------------------------------

def test_buttons_under_an_answer_are_the_other_tasks_with_the_token_as_value() -> None:
    block = answer_actions(TOKEN, Task.TRANSCRIBE)
    ids = [e["action_id"] for e in block["elements"]]
    assert ids == [TASK_ACTION_PREFIX + t for t in ("summarize", "sentiment", "events")] + [TRANSLATE_ACTION]
    assert {e.get("value") for e in block["elements"] if e["type"] == "button"} == {TOKEN}
    assert all(o["value"].startswith(TOKEN + ":") for o in block["elements"][-1]["options"])
    assert TRANSLATE_ACTION not in [e["action_id"] for e in answer_actions(TOKEN, Task.TRANSLATE)["elements"]]
    assert block_problems([{"type": "section", "text": {"type": "mrkdwn", "text": "x"}}, block]) == []
    with pytest.raises(ValueError):
        answer_actions("F0123ABC:not-a-token!", None)


def test_the_home_tab_says_what_how_usage_and_settings() -> None:
    view = home_view(REPORT, HomeSettings(spoken=True, language="es", voice="Cherry"), reaction="memo")
    assert view["type"] == "home" and len(view["blocks"]) <= 100 and block_problems(view["blocks"]) == []
    text = "\n".join(str(b.get("text", {}).get("text", "")) for b in view["blocks"])
    assert "transcripts" in text and "Transcribe with earshot" in text and ":memo:" in text
    assert "1,650" in text or "1650" in text                    # used today
    assert "8,350" in text or "8350" in text                    # ...and what is left
    controls = {b["accessory"]["action_id"]: b["accessory"] for b in view["blocks"] if "accessory" in b}
    assert controls[HOME_VOICE_ACTION]["initial_option"]["value"] == "on"
    assert controls[HOME_LANGUAGE_ACTION]["initial_option"]["value"] == "es"
    plain = home_view(None, HomeSettings(spoken=False))
    controls = {b["accessory"]["action_id"]: b["accessory"] for b in plain["blocks"] if "accessory" in b}
    assert controls[HOME_VOICE_ACTION]["initial_option"]["value"] == "off"
    assert controls[HOME_LANGUAGE_ACTION]["initial_option"]["value"] == "auto"


# ---- payloads through slack-bolt, parsed -----------------------------------------------------------------

async def test_a_shortcut_on_a_clip_parses_to_its_files_and_thread(ws: Workspace) -> None:
    message = clip_message(ws.slack)
    body = await ws.delivered(ws.slack.shortcut("earshot_summarize", CHANNEL, message["ts"]))
    shortcut = parse_shortcut(body)
    assert shortcut is not None and shortcut.task is Task.SUMMARIZE
    assert (shortcut.channel_id, shortcut.message_ts, shortcut.thread_ts) == (CHANNEL, message["ts"], message["ts"])
    assert shortcut.file_ids == (message["files"][0]["id"],) and shortcut.user_id == "U0ALICE"
    assert shortcut.response_url and shortcut.response_url.startswith(ws.slack.url)
    # a reply inside a thread: the answer goes into that thread
    reply = clip_message(ws.slack, thread_ts=message["ts"])
    inner = parse_shortcut(await ws.delivered(ws.slack.shortcut("earshot_transcribe", CHANNEL, reply["ts"])))
    assert inner is not None and inner.thread_ts == message["ts"] and inner.task is Task.TRANSCRIBE
    # a message without a clip: no files, so the app can say so
    plain = ws.slack.add_message(CHANNEL, {"user": "U0BOB", "text": "no audio"})
    empty = parse_shortcut(await ws.delivered(ws.slack.shortcut("earshot_transcribe", CHANNEL, plain["ts"])))
    assert empty is not None and empty.file_ids == ()


async def test_unsigned_or_missigned_payloads_are_refused(ws: Workspace) -> None:
    message = clip_message(ws.slack)
    assert await ws.post(ws.slack.shortcut("earshot_summarize", CHANNEL, message["ts"]), secret="wrong") == 401
    assert ws.got == []


async def test_a_button_under_an_answer_brings_the_task_for_the_same_audio(ws: Workspace) -> None:
    refs = AudioRefs(MemoryAudioRefStore(), keep_seconds=3600)
    message = clip_message(ws.slack)
    token = await refs.mint(ChatKey("slack", CHANNEL), message["files"][0]["id"])
    answer = await ws.client.chat_postMessage(
        channel=CHANNEL, thread_ts=message["ts"], text="the transcript",
        blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "the transcript"}},
                answer_actions(token, Task.TRANSCRIBE)])
    body = await ws.delivered(ws.slack.press(CHANNEL, answer["ts"], TASK_ACTION_PREFIX + "summarize"))
    [button] = parse_block_actions(body)
    assert isinstance(button, TaskButton) and button.task is Task.SUMMARIZE and button.language is None
    assert (button.channel_id, button.thread_ts, button.user_id) == (CHANNEL, message["ts"], "U0ALICE")
    assert (await refs.resolve(button.token, ChatKey("slack", button.channel_id))).ref == message["files"][0]["id"]

    body = await ws.delivered(ws.slack.press(CHANNEL, answer["ts"], TRANSLATE_ACTION, value=f"{token}:de"))
    [translate] = parse_block_actions(body)
    assert isinstance(translate, TaskButton) and (translate.task, translate.language) == (Task.TRANSLATE, "German")
    with pytest.raises(AssertionError):                     # only elements the message has can be used
        ws.slack.press(CHANNEL, answer["ts"], TASK_ACTION_PREFIX + "transcribe")


async def test_two_people_reacting_make_one_claim(ws: Workspace, tmp_path: Path) -> None:
    message = clip_message(ws.slack)
    store = HistoryStore(tmp_path / "earshot.db")
    await store.open()
    try:
        claims = []
        for user in ("U0ALICE", "U0CAROL"):
            body = await ws.delivered(event_body(ws.slack.react(CHANNEL, message["ts"], user=user)))
            reaction = parse_reaction(body["event"], Settings().slack_reaction)
            assert isinstance(reaction, Reaction) and reaction.user_id == user and reaction.item_user == "U0BOB"
            claims.append(await store.claim_event("slack", reaction.once_key))
        assert claims == [True, False]
    finally:
        await store.close()
    # the reacted message, with its clip, found through the Web API
    got = await read(ws.client, "reactions.get", channel=CHANNEL, timestamp=message["ts"])
    assert got["message"]["files"][0]["id"] == message["files"][0]["id"]
    assert got["message"]["reactions"] == [{"name": "memo", "users": ["U0ALICE", "U0CAROL"], "count": 2}]
    window = await read(ws.client, "conversations.history", channel=CHANNEL, latest=message["ts"],
                        inclusive="true", limit=1)
    assert [m["ts"] for m in window["messages"]] == [message["ts"]]
    other = await ws.delivered(event_body(ws.slack.react(CHANNEL, message["ts"], "thumbsup")))
    assert parse_reaction(other["event"], "memo") is None


async def test_reactions_get_needs_its_scope(ws: Workspace) -> None:
    message = clip_message(ws.slack)
    ws.slack.scopes = [s for s in BOT_SCOPES if s != "reactions:read"]
    with pytest.raises(SlackApiError) as err:
        await read(ws.client, "reactions.get", channel=CHANNEL, timestamp=message["ts"])
    assert err.value.response["error"] == "missing_scope" and err.value.response["needed"] == "reactions:read"


async def test_the_home_tab_is_published_and_its_controls_come_back_as_changes(ws: Workspace) -> None:
    first = await ws.delivered(event_body(ws.slack.home_opened("U0ALICE")))
    opened = parse_home_opened(first["event"])
    assert opened == HomeOpened("U0ALICE", "D00ALICE", None, None)
    view = home_view(REPORT, HomeSettings(spoken=False))
    published = await ws.client.views_publish(user_id=opened.user_id, view=view)
    again = parse_home_opened((await ws.delivered(event_body(ws.slack.home_opened("U0ALICE"))))["event"])
    assert again is not None and again.view_id == published["view"]["id"] and again.view_hash

    [voice] = parse_block_actions(await ws.delivered(ws.slack.press_home("U0ALICE", HOME_VOICE_ACTION, value="on")))
    assert voice == HomeChange("voice", "on", "U0ALICE", "T0EARSHOT", published["view"]["id"],
                               published["view"]["hash"])
    [lang] = parse_block_actions(await ws.delivered(ws.slack.press_home("U0ALICE", HOME_LANGUAGE_ACTION, value="fr")))
    assert isinstance(lang, HomeChange) and (lang.setting, lang.value) == ("language", "fr")
    [auto] = parse_block_actions(await ws.delivered(ws.slack.press_home("U0ALICE", HOME_LANGUAGE_ACTION,
                                                                         value="auto")))
    assert isinstance(auto, HomeChange) and auto.value is None
    # the change shown: published again over the view the user has
    await ws.client.views_publish(user_id="U0ALICE", view=home_view(REPORT, HomeSettings(spoken=True)),
                                  hash=voice.view_hash)
    shown = ws.slack.home_views["U0ALICE"]["blocks"]
    assert next(b for b in shown if b.get("accessory", {}).get("action_id") == HOME_VOICE_ACTION)[
        "accessory"]["initial_option"]["value"] == "on"
    assert parse_home_opened({"type": "app_home_opened", "user": "U0ALICE", "tab": "messages"}) is None


@pytest.mark.parametrize("view, error", [
    ({"type": "modal", "blocks": []}, "invalid_arguments"),
    ({"type": "home", "blocks": [{"type": "divider"}] * 101}, "invalid_arguments"),
    ({"type": "home", "blocks": [{"type": "divider", "block_id": "x" * 256}]}, "invalid_arguments"),
    ({"type": "home", "blocks": [{"type": "divider", "block_id": "a"}, {"type": "divider", "block_id": "a"}]},
     "invalid_arguments"),
    ({"type": "home", "blocks": [{"type": "actions", "elements": [
        {"type": "button", "action_id": "y" * 256, "text": {"type": "plain_text", "text": "Go"}}]}]},
     "invalid_arguments"),
])
async def test_views_publish_refuses_what_slack_refuses(ws: Workspace, view: dict, error: str) -> None:
    with pytest.raises(SlackApiError) as err:
        await ws.client.views_publish(user_id="U0ALICE", view=view)
    assert err.value.response["error"] == error and "U0ALICE" not in ws.slack.home_views


async def test_a_stale_hash_is_a_conflict(ws: Workspace) -> None:
    view = home_view(None, HomeSettings(spoken=False))
    await ws.client.views_publish(user_id="U0ALICE", view=view)
    with pytest.raises(SlackApiError) as err:
        await ws.client.views_publish(user_id="U0ALICE", view=view, hash="1.stale")
    assert err.value.response["error"] == "hash_conflict"


async def test_an_ephemeral_answer_when_the_app_cannot_post_in_the_channel(ws: Workspace) -> None:
    message = clip_message(ws.slack)
    ws.slack.failures["chat.postMessage"] = "not_in_channel"
    with pytest.raises(SlackApiError):
        await ws.client.chat_postMessage(channel=CHANNEL, thread_ts=message["ts"], text="transcript")
    await ws.client.chat_postEphemeral(channel=CHANNEL, user="U0ALICE", thread_ts=message["ts"], text="transcript")
    assert ws.slack.ephemerals == [{"channel": CHANNEL, "user": "U0ALICE", "text": "transcript", "blocks": None,
                                    "thread_ts": message["ts"]}]


@pytest.mark.parametrize("payload", [
    {}, {"type": "block_actions"}, {"type": "block_actions", "user": {"id": "U1"}, "actions": [
        {"action_id": TASK_ACTION_PREFIX + "summarize", "value": TOKEN}]},                 # no message or channel
    {"type": "block_actions", "user": {"id": "U1"}, "container": {"channel_id": "C1", "message_ts": "1.2"},
     "actions": [{"action_id": TASK_ACTION_PREFIX + "summarize", "value": "F0 not a token"},
                 {"action_id": TASK_ACTION_PREFIX + "chat", "value": TOKEN},
                 {"action_id": TRANSLATE_ACTION, "selected_option": {"value": TOKEN + ":klingon"}},
                 {"action_id": HOME_VOICE_ACTION, "selected_option": {"value": "loud"}},
                 {"action_id": "someone_elses", "value": TOKEN}]},
])
def test_actions_not_ours_or_malformed_are_left_out(payload: dict) -> None:
    assert parse_block_actions(payload) == []


def test_other_shortcuts_events_and_reactions_parse_to_none() -> None:
    assert parse_shortcut({"type": "message_action", "callback_id": "someone_else"}) is None
    assert parse_shortcut({"type": "shortcut", "callback_id": "earshot_transcribe"}) is None
    assert parse_reaction({"type": "reaction_added", "user": "U1", "reaction": "memo",
                           "item": {"type": "file", "file": "F1"}}) is None
    skin = parse_reaction({"type": "reaction_added", "user": "U1", "reaction": "memo::skin-tone-2",
                           "item": {"type": "message", "channel": "C1", "ts": "1.2"}})
    assert skin is not None and skin.once_key == "reaction:C1:1.2"
    assert parse_home_opened({"type": "app_home_opened"}) is None


def test_the_manifest_declares_the_shortcuts_events_home_tab_and_scopes_the_code_uses() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    shortcuts = manifest["features"]["shortcuts"]
    assert {s["callback_id"]: s["name"] for s in shortcuts} == {
        "earshot_transcribe": "Transcribe with earshot", "earshot_summarize": "Summarize with earshot"}
    assert set(SHORTCUTS) == {s["callback_id"] for s in shortcuts}
    assert all(s["type"] == "message" and len(s["name"]) <= 24 and len(s["description"]) <= 80 for s in shortcuts)
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    assert {"reaction_added", "app_home_opened"} <= set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert {"reactions:read", "commands", "chat:write"} <= set(manifest["oauth_config"]["scopes"]["bot"])


def test_the_reaction_setting_defaults_to_memo_and_takes_a_name_with_colons() -> None:
    assert Settings().slack_reaction == "memo"
    assert Settings(slack_reaction=":eyes:").slack_reaction == "eyes"
