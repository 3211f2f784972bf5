"""The scenario driver for Telegram: `earshot telegram` long-polls the Bot API stand-in (tests/fakes/telegram.py).

A user's message is an update the stand-in hands out on the bot's next getUpdates; a redelivery is the same update
(same update_id) handed out again, as Telegram does when the bot never confirmed it; a tap is a callback_query on
the button's callback_data. The bot confirms updates (polls from a later offset) only once they are handled, so
"every event handled" is "every update confirmed"."""
from __future__ import annotations

import html
import re
from typing import Any

from bots.telegram.buttons import parse_callback
from bots.telegram.render import MESSAGE_LIMIT
from core.values import Task
from tests.fakes.telegram import FakeTelegram, visible_length
from tests.scenarios.driver import ALICE, BOB, Driver, Said, Sent

USERS = {ALICE: 5101, BOB: 5202}        # private chats: the chat id is the user's id
_TAG = re.compile(r"<[^<>]+>")


class TelegramDriver(Driver):
    name = "telegram"
    platform_limit = MESSAGE_LIMIT           # characters a message shows, after its HTML entities are parsed
    audio_format = "ogg"                     # a Telegram voice note is OGG/Opus

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.tg = FakeTelegram()
        self._polls_at_start = 0

    @property
    def stand_in(self) -> FakeTelegram:
        return self.tg

    def platform_env(self) -> dict[str, str]:
        return {"TELEGRAM_BOT_TOKEN": self.tg.token, "TELEGRAM_API_BASE_URL": self.tg.url}

    async def start(self, **env: str) -> None:
        self._polls_at_start = len(self.tg.called("getUpdates"))
        await super().start(**env)

    async def ready(self) -> bool:
        return len(self.tg.called("getUpdates")) > self._polls_at_start

    def user_id(self, user: str) -> str:
        return str(USERS[user])

    # ---- what users and Telegram do ------------------------------------------------------------------------
    def _pushed(self, chat: int, user: str, mid: int) -> Sent:
        update = {"update_id": self.tg.last_update_id, "message": self.tg.messages[(chat, mid)]}
        return Sent(str(chat), str(mid), user, raw=update)

    async def send_voice_note(self, audio: bytes, *, user: str = ALICE, text: str = "") -> Sent:
        chat = USERS[user]
        mid = self.tg.push(chat, kind="voice", data=audio, caption=text or None)
        return self._pushed(chat, user, mid)

    async def send_command(self, name: str, args: str = "", *, user: str = ALICE,
                           language: str | None = None) -> Sent:
        chat = USERS[user]
        mid = self.tg.push(chat, text=f"/{name} {args}".strip(), language_code=language)
        return self._pushed(chat, user, mid)

    async def redeliver(self, sent: Sent) -> None:
        self.tg.deliver(sent.raw)

    async def tap(self, said: Said, task: Task, *, user: str = ALICE) -> None:
        message = self.tg.messages[(int(said.chat), int(said.id))]
        [data] = [d for d in _callback_data(message) if (p := parse_callback(d)) and p.task is task
                  and p.language is None]
        self.tg.push_callback(int(said.chat), int(said.id), data, user_id=USERS[user])

    # ---- what came back ------------------------------------------------------------------------------------
    def sent(self) -> list[Said]:
        bot = self.tg.bot["id"]
        mine = sorted(((c, m) for (c, mid), m in self.tg.messages.items() if m["from"]["id"] == bot and "text" in m),
                      key=lambda cm: cm[1]["message_id"])
        return [Said(str(chat), str(m["message_id"]), html.unescape(_TAG.sub("", m["text"]))
                     if m.get("parse_mode_used") == "HTML" else m["text"],
                     visible_length(m["text"], m.get("parse_mode_used")),
                     str(r["message_id"]) if (r := m.get("reply_to_message")) else None,
                     tuple(p.task for d in _callback_data(m) if (p := parse_callback(d)) and p.language is None),
                     raw=m)
                for chat, m in mine]

    @property
    def download_count(self) -> int:
        return len(self.tg.called("getFile"))

    async def events_handled(self) -> bool:
        return self.tg.pending_updates == 0 and (not self.tg.pushed or self.tg.confirmed(self.tg.last_update_id))


def _callback_data(message: dict[str, Any]) -> list[str]:
    rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return [b["callback_data"] for row in rows for b in row if "callback_data" in b]
