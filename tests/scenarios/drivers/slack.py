"""The scenario driver for Slack: `earshot slack --port N` in HTTP mode, with the Web API stand-in
(tests/fakes/slack.py) behind it.

A user's voice note is a `file_share` message event in their DM with the app, posted signed to /slack/events as
Slack posts it; a redelivery is the same event_id posted again with Slack's X-Slack-Retry-Num header; a command
is `/earshot <name> <args>` in the DM (its acknowledgement, when it says something, counts as a message the app
sent); a tap is the `block_actions` payload of the button under an answer. The app answers Slack's request only
once its listener is done (process_before_response), so "every event handled" is "every request answered"."""
from __future__ import annotations

import contextlib
import html
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from bots.slack.blocks import TASK_ACTION_PREFIX, TRANSLATE_ACTION
from bots.slack.render import SECTION_LIMIT
from core.values import Task
from tests.conftest import SLACK_SECRET, free_port
from tests.fakes.slack import FakeSlack, event_body, signed_headers, slash_body
from tests.scenarios.driver import ALICE, BOB, Driver, Said, Sent

USERS = {ALICE: "U0ALICE", BOB: "U0BOB"}
DMS = {ALICE: "D0ALICE01", BOB: "D0BOB01"}   # each one's direct-message channel with the app


class SlackDriver(Driver):
    name = "slack"
    platform_limit = SECTION_LIMIT          # characters of one section block's text, as posted (escaped mrkdwn)
    audio_format = "webm"                   # a Slack clip is WebM

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.slack = FakeSlack()
        self.port = free_port()
        self.command_args = ("--port", str(self.port))
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        self.acks: list[Said] = []           # what the app said in acknowledging a command (shown to the user)
        self.channels: dict[str, str] = {}   # a command's response_url -> the DM it was typed in
        self.answered: list[Said] = []       # what the app said through a command's response_url (ephemeral)

    @property
    def stand_in(self) -> FakeSlack:
        return self.slack

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[FakeSlack]:
        async with super().serving(), self.http:
            yield self.slack

    def platform_env(self) -> dict[str, str]:
        return {"SLACK_BOT_TOKEN": self.slack.token, "SLACK_SIGNING_SECRET": SLACK_SECRET,
                "SLACK_API_URL": self.slack.url + "/api/"}

    async def ready(self) -> bool:
        try:
            return (await self.http.get("/healthz", timeout=1)).status_code == 200
        except httpx.HTTPError:
            return False

    def user_id(self, user: str) -> str:
        return USERS[user]

    # ---- what users and Slack do ---------------------------------------------------------------------------
    async def _post(self, body: bytes, *, retry: int | None = None) -> httpx.Response:
        r = await self.http.post("/slack/events", content=body,
                                 headers=signed_headers(SLACK_SECRET, body, retry=retry))
        assert r.status_code == 200, (r.status_code, r.text)
        return r

    async def send_voice_note(self, audio: bytes, *, user: str = ALICE, text: str = "") -> Sent:
        record, ts = self.slack.add_file(audio), self.slack.ts()
        event = {"type": "message", "subtype": "file_share", "channel": DMS[user], "channel_type": "im",
                 "user": USERS[user], "text": text, "ts": ts, "files": [FakeSlack.event_file(record)]}
        body = event_body(event)
        await self._post(body)
        return Sent(DMS[user], ts, user, raw={"body": body, "retries": 0})

    async def send_command(self, name: str, args: str = "", *, user: str = ALICE,
                           language: str | None = None) -> Sent:
        if language is not None:
            self.slack.add_user(USERS[user], user.title(), locale=f"{language}-{language.upper()}")
        url = self.slack.response_url()
        self.channels[url.rsplit("/", 1)[-1]] = DMS[user]
        body = slash_body(f"{name} {args}".strip(), channel=DMS[user], user=USERS[user], response_url=url)
        r = await self._post(body)
        if text := _ack_text(r):
            # the moment it was shown, on the stand-in's clock of message timestamps: sent() orders by it
            self.acks.append(Said(DMS[user], self.slack.ts(), text, len(text), None, raw=r.text))
        return Sent(DMS[user], "", user, raw={"body": body, "retries": 0})

    async def redeliver(self, sent: Sent) -> None:
        sent.raw["retries"] += 1
        await self._post(sent.raw["body"], retry=sent.raw["retries"])

    async def tap(self, said: Said, task: Task, *, user: str = ALICE) -> None:
        await self._post(self.slack.press(said.chat, said.id, TASK_ACTION_PREFIX + task.value, user=USERS[user]))

    # ---- what came back ------------------------------------------------------------------------------------
    def sent(self) -> list[Said]:
        # answers through a command's response_url (shown only to its user) are given a place in order when first
        # seen, on the same clock as the acks
        for response in self.slack.responses[len(self.answered):]:
            text = response.get("text") or ""
            self.answered.append(Said(self.channels.get(response["rid"], ""), self.slack.ts(), text, len(text),
                                      None, raw=response))
        said = [_said(p) for p in self.slack.posts] + self.acks + self.answered
        return sorted(said, key=lambda s: tuple(map(int, s.id.split("."))))

    @property
    def download_count(self) -> int:
        return len(self.slack.downloads)

    async def events_handled(self) -> bool:
        return True          # each request was answered once its listener was done


def _said(post: dict[str, Any]) -> Said:
    blocks = post.get("blocks") or []
    sections = [b["text"]["text"] for b in blocks if b.get("type") == "section"]
    shown = sections or [post.get("text") or ""]
    tasks: list[Task] = []
    for block in blocks:
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            action = element.get("action_id", "")
            if action.startswith(TASK_ACTION_PREFIX):
                tasks.append(Task(action.removeprefix(TASK_ACTION_PREFIX)))
            elif action == TRANSLATE_ACTION:
                tasks.append(Task.TRANSLATE)
    return Said(post["channel"], post["ts"], html.unescape("\n\n".join(shown)), max(len(s) for s in shown),
                post.get("thread_ts"), tuple(tasks), raw=post)


def _ack_text(r: httpx.Response) -> str:
    """What a command's acknowledgement shows: its text, or its blocks' texts."""
    if not r.text.strip():
        return ""
    try:
        body = json.loads(r.text)
    except ValueError:
        return r.text
    blocks = body.get("blocks") or []
    shown = "\n".join(b.get("text", {}).get("text", "") for b in blocks) if blocks else body.get("text", "")
    return html.unescape(shown)
