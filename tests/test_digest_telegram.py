"""Group digests in Telegram, end to end: the real PTB client polls the Bot API stand-in, the real Assistant
asks the DashScope stand-in, which names the tones it heard (and repeats the ones it is sent as text)."""
from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from core.app import Earshot
from core.words import messages
from core.words.help_texts import telegram_commands
from tests.conftest import Harness, bot_running
from tests.fakes.dashscope import FakeDashScope, heard, tone_audio
from tests.fakes.telegram import FakeTelegram
from tests.test_digest import Clock, echo_long, rows_mentioning
from tests.waiting import until

GROUP = -1001234567890
ANA, BO, CHEN = 501, 502, 503          # Ana created the group; Bo and Chen are members
BOT = "@earshot_test_bot"

_clips: dict[tuple, bytes] = {}


def clip(*segments: tuple[float, float], fmt: str = "ogg") -> bytes:
    if (segments, fmt) not in _clips:
        _clips[(segments, fmt)] = tone_audio(*segments, fmt=fmt)
    return _clips[(segments, fmt)]


def short(hz: int, fmt: str = "ogg") -> bytes:
    return clip((0, 0.5), (hz, 1.0), (0, 0.5), fmt=fmt)


@dataclass
class Group:
    bot: Harness

    @property
    def tg(self) -> FakeTelegram:
        return self.bot.tg

    @property
    def ds(self) -> FakeDashScope:
        return self.bot.ds

    @property
    def earshot(self) -> Earshot:
        return self.bot.earshot

    @property
    def db(self) -> Path:
        return self.bot.db

    def push(self, user: int, **kw) -> int:
        return self.tg.push(GROUP, user_id=user, chat_type="supergroup", **kw)

    async def said(self, n: int, within: float = 20.0, chat: int = GROUP) -> list[dict]:
        """Wait for the bot's n-th message in the chat; then, once all it was sent is handled and done,
        make sure no more followed."""
        await self.bot.said(chat, n, within)
        await self.bot.idle()
        got = self.tg.said(chat)
        assert len(got) == n, [m["text"][:80] for m in got]
        return got

    async def stored(self, n: int, within: float = 20.0) -> None:
        """Wait until n voice notes of the group are stored and every update and job is done with (a note
        is stored a moment before its job is marked done)."""
        store = self.earshot.digests.store

        async def stored() -> bool:
            return len(await store.notes("telegram", str(GROUP), 0, float("inf"))) >= n
        await until(stored, within, f"{n} voice notes stored")
        await self.bot.idle()


@contextlib.asynccontextmanager
async def group_running(tmp_path: Path, *, ds: FakeDashScope | None = None, **kw) -> AsyncIterator[Group]:
    tg = FakeTelegram()
    tg.set_member(GROUP, ANA, "creator")
    async with bot_running(tmp_path, ds=ds, tg=tg, **kw) as bot:
        yield Group(bot)


def replies_to(msg: dict) -> int | None:
    return (msg.get("reply_to_message") or {}).get("message_id")


async def test_voice_notes_are_heard_quietly_and_summed_up_in_order(tmp_path: Path) -> None:
    async with group_running(tmp_path) as g:
        g.tg.set_member(GROUP, g.tg.bot["id"], "administrator")      # so it sees every message
        assert {"digest", "forget"} <= {c["command"] for c in g.tg.commands}
        assert [c["command"] for c in g.tg.commands] == [n for n, _ in telegram_commands(None, with_lang=True)]
        g.push(BO, text="/digest on")
        g.push(ANA, text="/digest on")
        refused, on = await g.said(2)
        assert refused["text"] == messages.DIGEST_ADMINS_ONLY
        assert on["text"] == messages.DIGEST_ON.format(prefix="/", days="30 days")
        now = time.time()
        notes = [g.push(ANA, kind="voice", data=short(440), date=now - 300),
                 g.push(BO, kind="audio", data=short(550, "mp3"), mime="audio/mpeg", file_name="memo.mp3",
                        date=now - 200),
                 g.push(CHEN, kind="video_note", data=short(660, "webm"), date=now - 100),
                 g.push(BO, kind="document", data=short(770, "wav"), file_name="take.wav", date=now - 50)]
        asked = g.push(CHEN, text="/digest")
        said = await g.said(3)
        digest = said[2]
        assert replies_to(digest) == asked
        assert not any(replies_to(m) in notes for m in said), "voice notes get no replies"
        assert digest["text"].startswith("Digest: 4 voice notes, 1 minute.")
        assert heard(digest["text"]) == [440, 550, 660, 770], "all of them, in order of time"
        [summing] = [c for c in g.ds.calls if not c.items]
        prompt = "\n".join(summing.texts)
        assert [prompt.index(f"user{u} (") for u in (ANA, BO, CHEN)] == sorted(
            prompt.index(f"user{u} (") for u in (ANA, BO, CHEN)), "who said it, in order"
        assert len([c for c in g.ds.calls if c.items]) == 4

        # still answers when addressed, and that voice note counts for the next digest too
        mid = g.push(BO, kind="voice", data=short(880), caption=f"{BOT} which tone?")
        answer = (await g.said(4))[3]
        assert replies_to(answer) == mid and "880Hz" in answer["text"]
        g.push(ANA, text="/digest")
        again = (await g.said(5))[4]["text"]
        assert again.startswith("Digest since the last one: 1 voice note") and heard(again) == [880]
        g.push(ANA, text="/digest")
        assert (await g.said(6))[5]["text"] == messages.DIGEST_NOTHING_NEW

        # /forget: refused to members; for an admin, nothing about the group is left in the database
        g.push(CHEN, text="/forget")
        assert (await g.said(7))[6]["text"] == messages.DIGEST_ADMINS_ONLY
        assert rows_mentioning(g.db, str(GROUP))
        g.push(ANA, text="/forget")
        assert (await g.said(8))[7]["text"] == messages.FORGOTTEN
        assert rows_mentioning(g.db, str(GROUP)) == {}
        calls = len(g.ds.calls)
        g.push(BO, kind="voice", data=short(440))                      # digests are off again
        g.push(BO, text="/digest")
        assert (await g.said(9))[8]["text"] == messages.DIGEST_IS_OFF.format(prefix="/")
        assert len(g.ds.calls) == calls


async def test_two_hours_of_long_voice_notes_fit_the_models_input_limit(tmp_path: Path) -> None:
    ds = FakeDashScope(api_key="sk-test-key")
    ds.reply = echo_long(8000)           # every transcript part is as long as the model may write
    unlimited = dict(global_daily_tokens=0, chat_daily_tokens=0, user_daily_tokens=0)
    async with group_running(tmp_path, ds=ds, model="qwen-audio-turbo", **unlimited) as g:
        g.push(ANA, text="/digest on")
        await g.said(1)
        now = time.time()
        g.push(BO, kind="voice", data=short(990), date=now - 3 * 3600)    # outside the period
        tones = [(400, 410), (420, 430), (440, 450), (460, 470), (480, 490)]
        for i, (a, b) in enumerate(tones):     # 35 s each: two parts, each heard whole
            data = clip((0, 0.5), (a, 1.0), (0, 30.0), (b, 1.0), (0, 2.5))
            g.push((ANA, BO, CHEN)[i % 3], kind="voice", data=data, duration=35,
                   date=now - 7000 + 1500 * i)
        await g.stored(6)
        g.push(CHEN, text="/digest 2h")
        await until(lambda: any("490Hz" in m["text"] for m in g.tg.said(GROUP)), 60, "the whole digest")
        digest = "\n".join(m["text"] for m in g.tg.said(GROUP)[1:])    # a long answer comes in pieces
    assert all(c.status == 200 for c in g.ds.calls), [(c.status, c.code) for c in g.ds.calls]
    summing = [c for c in g.ds.calls if not c.items]
    assert len(summing) >= 3, "expected the period in parts, then combined"
    assert max(sum(len(t) for t in c.texts) // 4 for c in summing) <= 6000
    assert heard(digest) == [hz for pair in tones for hz in pair]
    assert digest.startswith("Digest of the last 2 hours: 5 voice notes, 3 minutes.")


async def test_daily_digest_is_posted_at_its_time(tmp_path: Path) -> None:
    async with group_running(tmp_path) as g:
        clock = g.earshot.digests.clock = Clock(datetime(2030, 5, 6, 8, 30, tzinfo=ZoneInfo("UTC")).timestamp())
        g.push(BO, text="/digest daily 09:00")
        g.push(ANA, text="/digest daily 09:00")
        refused, scheduled = await g.said(2)
        assert refused["text"] == messages.DIGEST_ADMINS_ONLY
        assert "09:00 (UTC)" in scheduled["text"] and messages.DIGEST_CANT_HEAR in scheduled["text"]
        g.push(BO, kind="voice", data=short(440))
        g.push(CHEN, kind="voice", data=short(660))
        await g.stored(2)
        g.earshot.digests.wake()
        await g.said(2)                                   # 08:30: nothing yet
        clock.now += 31 * 60
        g.earshot.digests.wake()
        posted = (await g.said(3))[2]
    assert replies_to(posted) is None and heard(posted["text"]) == [440, 660]
    assert posted["text"].startswith("Digest: 2 voice notes, 1 minute.")


async def test_digest_commands_are_for_groups(tmp_path: Path) -> None:
    async with group_running(tmp_path) as g:
        g.tg.push(ANA, text="/digest on")
        g.tg.push(ANA, text="/help")
        said = await g.said(2, chat=ANA)
    assert said[0]["text"] == messages.DIGEST_GROUPS_ONLY.format(prefix="/")
    assert "/digest" not in said[1]["text"], "a private chat's /help has no digest paragraph"
