"""The scenario driver for WhatsApp: `earshot whatsapp --port N` behind the Cloud API stand-in
(tests/fakes/whatsapp.py), which serves the Graph API the adapter calls and signs the webhooks posted to it.

A user's voice note is a delivery of an `audio` message (`voice: true`, the media on the stand-in), POSTed to
/whatsapp/webhook with Meta's X-Hub-Signature-256 as Meta posts it; a redelivery is the same signed delivery
POSTed again (same wamid); a command is a text message (`summarize`, `lang de`…), as WhatsApp users type them;
a tap is the `button_reply` of the button under an answer. The webhook answers 200 once each message is a
stored job (or its direct reply is on its way), so "every event handled" is "every delivery answered".

Three things WhatsApp does its own way, and how the driver reads them in the scenario's words:
- The buttons under an answer are a message of their own (an interactive message right after the answer's last
  piece). The driver shows them as the buttons of that last piece, and shows an answer's messages once its job
  is delivered (the buttons are the delivery's last send), so an answer is never seen without its buttons.
- A tap is a message of its own too (the user's button_reply, quoting the buttons). An answer quotes the tap;
  the driver reports it as a reply to the answer whose button was tapped.
- WhatsApp tells a bot nothing of its users' language: a command said in a language is preceded by the chat's
  `lang CODE` command, as a WhatsApp user would set it.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx

from bots.buttons import parse_callback
from bots.whatsapp.render import MESSAGE_LIMIT
from core.store.jobs import MAX_DELIVERIES
from core.values import Task
from tests.conftest import free_port
from tests.fakes.whatsapp import VERSION, FakeWhatsApp, digits, words_of
from tests.scenarios.driver import ALICE, BOB, Driver, Said, Sent
from tests.waiting import job_rows

USERS = {ALICE: "15551234567", BOB: "447700900123"}      # wa_ids: the chat with the business number is the user
SECRET = "scenario-app-secret-8c1"
VERIFY = "scenario-verify-token-3f7"
WEBHOOK = "/whatsapp/webhook"


class WhatsAppDriver(Driver):
    name = "whatsapp"
    platform_limit = MESSAGE_LIMIT          # characters of a text message's body
    audio_format = "ogg"                    # a WhatsApp voice note is OGG/Opus

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.wa = FakeWhatsApp()
        self.port = free_port()
        self.command_args = ("--port", str(self.port))
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        self.taps: dict[str, str] = {}      # a tap's wamid -> the id of the answer whose button it was

    @property
    def stand_in(self) -> FakeWhatsApp:
        return self.wa

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[FakeWhatsApp]:
        async with super().serving() as wa, self.http:     # also the client that posts Meta's deliveries
            yield wa

    def platform_env(self) -> dict[str, str]:
        return {"WHATSAPP_ACCESS_TOKEN": self.wa.token, "WHATSAPP_PHONE_NUMBER_ID": self.wa.phone_number_id,
                "WHATSAPP_APP_SECRET": SECRET, "WHATSAPP_VERIFY_TOKEN": VERIFY,
                "WHATSAPP_API_URL": f"{self.wa.url}/{VERSION}"}

    async def ready(self) -> bool:
        """Meta's verification handshake is answered: the webhook is up."""
        try:
            r = await self.http.get(WEBHOOK, params={"hub.mode": "subscribe", "hub.verify_token": VERIFY,
                                                     "hub.challenge": "7"}, timeout=1)
        except httpx.HTTPError:
            return False
        return r.status_code == 200 and r.text == "7"

    def user_id(self, user: str) -> str:
        return USERS[user]

    # ---- what users and Meta do ----------------------------------------------------------------------------
    async def _post(self, body: bytes) -> None:
        r = await self.http.post(WEBHOOK, content=body, headers=self.wa.signed(SECRET, body))
        assert r.status_code == 200, (r.status_code, r.text)

    async def _send(self, user: str, kind: str, **fields: Any) -> Sent:
        body, wamid = self.wa.message(USERS[user], kind, **fields)
        await self._post(body)
        return Sent(USERS[user], wamid, user, raw=body)

    async def send_voice_note(self, audio: bytes, *, user: str = ALICE, text: str = "") -> Sent:
        if text:        # a voice note carries no caption: words beside audio come with an audio file
            media = self.wa.add_media(audio, "audio/ogg", "voice.ogg")
            return await self._send(user, "document", document={"id": media, "mime_type": "audio/ogg",
                                                                "filename": "voice.ogg", "caption": text})
        return await self._send(user, "audio", audio=self.wa.add_media(audio, "audio/ogg; codecs=opus"))

    async def send_command(self, name: str, args: str = "", *, user: str = ALICE,
                           language: str | None = None) -> Sent:
        if language is not None:
            await self._send(user, "text", text=f"lang {language}")
        return await self._send(user, "text", text=f"{name} {args}".strip())

    async def redeliver(self, sent: Sent) -> None:
        await self._post(sent.raw)

    async def tap(self, said: Said, task: Task, *, user: str = ALICE) -> None:
        menu = said.raw["buttons"]
        ids = [b["reply"]["id"] for b in menu["interactive"]["action"]["buttons"]]
        [index] = [i for i, data in enumerate(ids) if (p := parse_callback(data)) and p.task is task]
        body, wamid = self.wa.tap_body(USERS[user], menu, index)
        self.taps[wamid] = said.id
        await self._post(body)

    # ---- what came back ------------------------------------------------------------------------------------
    def sent(self) -> list[Said]:
        finished = {row["message_ref"]: row["delivered"] is not None or row["delivery_attempts"] >= MAX_DELIVERIES
                    for row in job_rows(self.db)}
        said: list[Said] = []
        answering: dict[str, str | None] = {}    # recipient -> the job (its wamid) whose delivery this is, if any
        last_text: dict[str, int] = {}           # recipient -> their latest text in `said` (buttons go under it)
        for m in self.wa.sent:
            to, quoted = digits(m["to"]), (m.get("context") or {}).get("message_id")
            if quoted is not None:
                answering[to] = quoted if quoted in finished else None
            job = answering.get(to)
            if job is not None and not finished[job]:
                continue                          # a delivery still under way: shown once whole
            if m["type"] == "interactive" and m["interactive"]["type"] == "button" and to in last_text:
                i = last_text[to]
                said[i] = dataclasses.replace(said[i], buttons=_tasks(m), raw=said[i].raw | {"buttons": m})
                continue
            text = words_of(m)
            said.append(Said(to, m["id"], text, len(text), self.taps.get(quoted, quoted) if quoted else None,
                             raw={"message": m}))
            if m["type"] == "text":
                last_text[to] = len(said) - 1
        return said

    @property
    def download_count(self) -> int:
        return len(self.wa.of_kind("download"))

    async def events_handled(self) -> bool:
        return True          # each delivery was answered once its messages were stored


def _tasks(menu: dict[str, Any]) -> tuple[Task, ...]:
    buttons = menu["interactive"]["action"]["buttons"]
    return tuple(p.task for b in buttons if (p := parse_callback(b["reply"]["id"])) and p.language is None)
