"""The scenario driver for Discord: `earshot discord` connects to the stand-in's Gateway (tests/fakes/discord.py)
and answers over its REST API.

A user's voice note is a voice message (IS_VOICE_MESSAGE, one OGG attachment) in their DM with the bot, dispatched
as MESSAGE_CREATE; with words beside it, an audio file with a message. A command is `/earshot <name>` in the DM
(an INTERACTION_CREATE whose `locale` is the user's Discord language: how Discord tells it); a tap is the click
on the button (or, for Translate, a pick in the menu) under an answer.

Discord's Gateway has no acknowledgements and no redelivery the way a webhook or getUpdates has: what comes
closest, and what the driver does for `redeliver`, is Discord dispatching the same MESSAGE_CREATE (same message
id) once more — events replayed on a RESUME, or sent again to a new session. Interactions are not redelivered
(a second response to one is refused), so `redeliver` of a command is skipped.

"Every event handled" is read from what the adapter records: a message is handled once its id is claimed in
the adapter's seen_events (core.flow.redelivery, claimed once its handling is done), an interaction once it
was acknowledged and then answered, closed, or became a job. Messages still "thinking" (a deferred response
not filled yet) are not sent ones; a response to a button replies to the message the button was under
(Discord's interaction_metadata.interacted_message_id)."""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bots.buttons import parse_callback
from bots.discord.convert import PLATFORM
from bots.discord.render import MESSAGE_LIMIT
from core.values import Task
from tests.fakes import discord as fake
from tests.fakes.discord import LOADING, FakeDiscord, buttons
from tests.scenarios.driver import ALICE, BOB, Driver, Said, Sent

USERS = {ALICE: fake.ALICE, BOB: fake.BOB}
LOCALES = {"en": "en-US", "es": "es-ES", "pt": "pt-BR", "sv": "sv-SE", "zh": "zh-CN"}   # Discord's locale names


class DiscordDriver(Driver):
    name = "discord"
    platform_limit = MESSAGE_LIMIT           # characters of a message's content
    audio_format = "ogg"                     # a Discord voice message is OGG/Opus

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.dc = FakeDiscord()
        self._identifies_at_start = 0
        self._messages: list[str] = []       # ids of the users' messages dispatched (replays included)
        self._interactions: list[str] = []

    @property
    def stand_in(self) -> FakeDiscord:
        return self.dc

    def platform_env(self) -> dict[str, str]:
        return {"DISCORD_BOT_TOKEN": self.dc.token, "DISCORD_API_URL": self.dc.url + "/api/v10"}

    async def start(self, **env: str) -> None:
        self._identifies_at_start = self.dc.identifies
        await super().start(**env)

    async def ready(self) -> bool:
        return self.dc.identifies > self._identifies_at_start and bool(self.dc.commands)

    def user_id(self, user: str) -> str:
        return USERS[user]

    # ---- what users and Discord do -------------------------------------------------------------------------
    async def send_voice_note(self, audio: bytes, *, user: str = ALICE, text: str = "") -> Sent:
        uid = USERS[user]
        if text:          # a voice message has no words beside it: an audio file with a message, then
            mid = self.dc.dm(uid, text, audio=audio, filename="note.ogg", content_type="audio/ogg")
        else:
            mid = self.dc.dm(uid, audio=audio, voice=True)
        self._messages.append(mid)
        return Sent(self.dc.dm_channel(uid), mid, user, raw="message")

    async def send_command(self, name: str, args: str = "", *, user: str = ALICE,
                           language: str | None = None) -> Sent:
        uid, options = USERS[user], []
        if args:
            [sub] = [o for o in self.dc.command("earshot")["options"] if o["name"] == name]
            [first] = [o for o in sub.get("options") or [] if o["type"] == 3][:1]
            options.append({"type": 3, "name": first["name"], "value": args})
        locale = LOCALES.get(language, language) if language else "en-US"
        channel = self.dc.dm_channel(uid)
        iid = self.dc.slash(channel, uid, name, options, locale=locale)
        self._interactions.append(iid)
        return Sent(channel, iid, user, raw="interaction")

    async def redeliver(self, sent: Sent) -> None:
        if sent.raw != "message":
            pytest.skip("Discord does not redeliver interactions (a second response to one is refused)")
        self.dc.replay(sent.id)
        self._messages.append(sent.id)

    async def tap(self, said: Said, task: Task, *, user: str = ALICE) -> None:
        message = self.dc.messages[said.id]
        [component] = [c for c in buttons(message) if (p := parse_callback(c.get("custom_id"))) and p.task is task]
        values = [component["options"][0]["value"]] if component["type"] == 3 else None
        self._interactions.append(self.dc.press(said.chat, USERS[user], said.id, component["custom_id"], values))

    # ---- what came back ------------------------------------------------------------------------------------
    def sent(self) -> list[Said]:
        return [_said(m) for m in self.dc.said() if not m["flags"] & LOADING]

    @property
    def download_count(self) -> int:
        return len(self.dc.cdn_fetches)

    async def events_handled(self) -> bool:
        claimed, jobs = _recorded(self.db)
        if not all(f"message:{mid}" in claimed for mid in self._messages):
            return False
        for iid in self._interactions:
            it = self.dc.interaction(iid)
            if not it["acks"]:
                return False
            original = self.dc.messages.get(it["original"] or "")
            closed = original is not None and original.get("_deleted")
            if it["deferred"] and not closed and f"i:{iid}" not in jobs:
                return False
        return True


def _said(m: dict[str, Any]) -> Said:
    tasks = tuple(p.task for c in buttons(m) if (p := parse_callback(c.get("custom_id"))) and p.language is None)
    reply_to = ((m.get("message_reference") or {}).get("message_id")
                or (m.get("interaction_metadata") or {}).get("interacted_message_id"))
    return Said(m["channel_id"], m["id"], m["content"], len(m["content"]), reply_to, tasks, raw=m)


def _recorded(db: Path) -> tuple[set[str], set[str]]:
    """The adapter's handled event ids (seen_events) and its jobs' keys, as committed."""
    if not db.exists():
        return set(), set()
    conn = sqlite3.connect(db)
    try:
        events = {r[0] for r in conn.execute("SELECT event_id FROM seen_events WHERE platform = ?", (PLATFORM,))}
        keys = {r[0] for r in conn.execute("SELECT key FROM jobs WHERE platform = ?", (PLATFORM,))}
        return events, keys
    except sqlite3.OperationalError:      # no tables yet
        return set(), set()
    finally:
        conn.close()
