"""Group digests in the core: commands, the daily schedule (on an injected clock), map-reduce within the
model's input limit, retention and forgetting. The real Assistant talks to the DashScope stand-in."""
from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from core.app import Earshot
from core.flow.digest_command import DigestCommand
from core.flow.digest_command import parse_digest as parse_command
from core.flow.digest_schedule import last_slot, next_slot
from core.flow.runner import JobRunner
from core.store.digest_store import VoiceNote
from core.store.jobs import Job
from core.values import Audio, ChatKey, Sender
from core.words import messages
from tests.conftest import settings_for
from tests.fakes.dashscope import MARKER, MODELS, TEXT_ONLY_MARKER, FakeDashScope, tone_audio
from tests.waiting import until

# every test here runs on SQLite and on PostgreSQL (tests/conftest.py: db_target)
pytestmark = pytest.mark.usefixtures("db_target")

GROUP = ChatKey("telegram", "-100555000111")
OTHER = ChatKey("telegram", "-100999")


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def assistant(model, tmp_path):
    async with Earshot.build(settings_for(model, tmp_path, retry_budget=2)) as a:
        yield a


def echo_long(filler_chars: int):
    """The stand-in's answers padded with filler: audio calls say which tones they heard, text-only calls
    repeat the tone markers they were sent, and every answer is long."""
    pad = " ".join(["lorem"] * (filler_chars // 6))

    def reply(call) -> str:
        if call.items:
            return " | ".join(i.heard for i in call.items) + " " + pad
        marks = [f"{hz}Hz@{t}s" for text in call.texts for hz, t in MARKER.findall(text)]
        return " ".join([TEXT_ONLY_MARKER, *marks, pad])
    return reply


def rows_mentioning(db_path: Path | str, value: str) -> dict[str, int]:
    """Rows in any table with `value` in any column."""
    found: dict[str, int] = {}
    if isinstance(db_path, str) and db_path.startswith("postgresql://"):
        from tests.postgres import rows
        tables = [r["table_name"] for r in rows(db_path, "SELECT table_name FROM information_schema.tables "
                                                         "WHERE table_schema = current_schema()")]
        for table in tables:
            n = rows(db_path, f"SELECT COUNT(*) AS n FROM {table} t WHERE strpos(CAST(t AS TEXT), ?) > 0",
                     value)[0]["n"]
            if n:
                found[table] = n
        return found
    with sqlite3.connect(db_path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            columns = [r[1] for r in conn.execute(f"PRAGMA table_info([{table}])")]
            where = " OR ".join(f"instr(CAST([{c}] AS TEXT), ?) > 0" for c in columns)
            n = conn.execute(f"SELECT COUNT(*) FROM [{table}] WHERE {where}", [value] * len(columns)).fetchone()[0]
            if n:
                found[table] = n
    return found


# --- parsing and the clock ---------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("", DigestCommand("summary")),
    ("2h", DigestCommand("summary", period=7200)),
    ("24h", DigestCommand("summary", period=86400)),
    ("7d", DigestCommand("summary", period=7 * 86400)),
    ("90 min", DigestCommand("summary", period=5400)),
    ("ON", DigestCommand("on")),
    ("off", DigestCommand("off")),
    ("daily 9:30", DigestCommand("daily", daily="09:30")),
    ("daily 21:05 Asia/Tokyo", DigestCommand("daily", daily="21:05", tz="Asia/Tokyo")),
    ("daily off", DigestCommand("daily_off")),
])
def test_commands_parse(text: str, expected: DigestCommand) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize("text", ["daily 24:00", "daily", "0h", "soon", "daily 09:00 Not/AZone", "2h please"])
def test_bad_commands_say_how(text: str) -> None:
    command = parse_command(text)
    assert command.action == "invalid" and command.problem and not command.needs_admin


def test_slots_are_wall_clock_times_in_the_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # the morning summer time starts in Berlin: 09:00 local is 07:00 UTC today, it was 08:00 UTC yesterday
    now = datetime(2024, 3, 31, 8, 0, tzinfo=berlin).timestamp()
    last, upcoming = last_slot("09:00", "Europe/Berlin", now), next_slot("09:00", "Europe/Berlin", now)
    assert datetime.fromtimestamp(last, berlin).hour == datetime.fromtimestamp(upcoming, berlin).hour == 9
    assert upcoming - now == 3600 and upcoming - last == 23 * 3600
    utc_now = datetime(2024, 3, 31, 8, 59, tzinfo=ZoneInfo("UTC")).timestamp()
    assert next_slot("09:00", "UTC", utc_now) - utc_now == 60
    assert last_slot("09:00", "UTC", utc_now) == utc_now + 60 - 86400


# --- summarising -------------------------------------------------------------------------------

async def test_nothing_to_sum_up_is_said_plainly(assistant: Earshot, model: FakeDashScope) -> None:
    d = assistant.digests
    assert (await d.summary(GROUP)).text == messages.DIGEST_IS_OFF.format(prefix="/")
    await d.respond(GROUP, parse_command("on"))
    assert (await d.summary(GROUP)).text == messages.DIGEST_NOTHING_YET
    assert (await d.summary(GROUP, 7200)).text == messages.DIGEST_NOTHING_IN.format(period="2 hours")
    assert not model.calls


async def test_a_long_stretch_is_summarised_in_parts_within_the_input_limit(tmp_path, model) -> None:
    """So much text that one round of batch notes doesn't fit one request either: merged in rounds."""
    model.reply = echo_long(2400)
    settings = settings_for(model, tmp_path, retry_budget=2, model="qwen-audio-turbo",     # the smallest input limit
                            global_daily_tokens=0, chat_daily_tokens=0, user_daily_tokens=0)   # ~170k tokens
    async with Earshot.build(settings) as assistant:
        d = assistant.digests
        now = time.time()
        await d.respond(GROUP, parse_command("on"))
        people = ["Ana", "Bo", "Chen"]
        hz = [300 + 10 * i for i in range(60)]
        for i, tone in enumerate(hz):       # 60 notes over the last 2 hours, 6,000 characters each
            text = f"heard {tone}Hz@0.5s " + " ".join(["word"] * 1200)
            await d.store.add_note(VoiceNote(GROUP.platform, GROUP.chat_id, now - 7100 + i * 100, 90.0, text,
                                             user_id=str(i % 3), user_name=people[i % 3], source_id=str(i)),
                                   now)
        await d.store.add_note(VoiceNote(GROUP.platform, GROUP.chat_id, now - 3 * 3600, 60.0,
                                         "heard 990Hz@0.5s too old"), now)
        digest = await d.summary(GROUP, 2 * 3600)
    limit = MODELS["qwen-audio-turbo"][0]
    assert model.calls and all(c.status == 200 for c in model.calls), [c.code for c in model.calls]
    assert max(sum(len(t) for t in c.texts) // 4 for c in model.calls) <= limit
    assert len(model.calls) > 60 // 10 + 2, "expected batches, then more than one round of merging"
    heard = [int(m) for m in re.findall(r"(\d+)Hz@", digest.text)]
    assert heard == hz, "every note, in order of time, and none from before the period"
    assert digest.text.startswith("Digest of the last 2 hours: 60 voice notes, 90 minutes.")
    first = "".join(model.calls[0].texts)
    assert "] Ana (90 s): heard 300Hz" in first and "] Bo (90 s): heard 310Hz" in first, "who said what, and when"


# --- listening ---------------------------------------------------------------------------------

class Listener:
    """A job runner for the chat's voice notes, as an adapter registers one: files by reference."""

    def __init__(self, assistant: Earshot) -> None:
        self.files: dict[str, bytes] = {}
        self.said: list[object] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fetching = 0                  # downloads begun (and maybe held at the gate)
        self.digests = assistant.digests
        self.runner = JobRunner(assistant.assistant, assistant.digests)
        self.runner.register("telegram", fetch=self._fetch, deliver=self._deliver)

    async def _fetch(self, job: Job) -> Audio:
        self.fetching += 1
        await self.gate.wait()
        return Audio(self.files[job.file_ref or ""], "voice.ogg")

    async def _deliver(self, job: Job, outcome: object) -> None:
        self.said.append(outcome)

    async def hear(self, chat: ChatKey, hz: int, who: str, n: int, sent: float | None = None) -> None:
        self.files[f"f{n}"] = tone_audio((0, 0.5), (hz, 1.0), (0, 0.5), fmt="ogg")
        await self.runner.submit(self.digests.listen_job(
            chat, key=f"{chat.chat_id}:{n}", file_ref=f"f{n}", sent=sent or time.time(),
            sender=Sender(user_id=str(n)), name=who, source_id=f"m{n}"))


async def test_listening_stores_transcripts_quietly_and_digest_waits_for_them(assistant, model) -> None:
    d = assistant.digests
    await d.respond(GROUP, parse_command("on"))
    ears = Listener(assistant)
    await ears.runner.start()
    ears.gate.clear()                  # downloads still under way when the digest is asked for
    now = time.time()
    for i, (who, hz) in enumerate(zip(("Ana", "Bo"), (440, 550), strict=True)):
        await ears.hear(GROUP, hz, who, i, sent=now - 60 + i)
    await until(lambda: ears.fetching)   # the first download is held at the gate: nothing is transcribed
    asking = asyncio.create_task(d.summary(GROUP))
    # a digest that didn't wait would be made from what is stored now (nothing): the tones it names below
    # show it waited for both notes
    assert not asking.done() and not model.calls
    ears.gate.set()
    digest = await asking
    await ears.runner.stop()
    assert ears.said == [], "listening says nothing in the chat"
    assert re.findall(r"(\d+)Hz@", digest.text) == ["440", "550"]
    assert digest.text.startswith("Digest: 2 voice notes, 1 minute.")
    assert await assistant.history.recent_turns(GROUP, 10) == [], "listening must not become chat history"
    assert (await assistant.history.usage_today(GROUP)).total > 0, "what listening cost is counted"
    again = await d.summary(GROUP)
    assert again.text == messages.DIGEST_NOTHING_NEW and again.notes == 0


async def test_retention_purges_old_transcripts(model, tmp_path) -> None:
    async with Earshot.build(settings_for(model, tmp_path, retry_budget=2, retention_days=30)) as assistant:
        d = assistant.digests
        clock = d.clock = Clock(time.time())
        await d.respond(GROUP, parse_command("on"))
        await d.store.add_note(VoiceNote(GROUP.platform, GROUP.chat_id, clock.now, 5.0, "heard 440Hz@0.5s"),
                               clock.now)
        clock.now += 29 * 86400
        await d.store.add_note(VoiceNote(GROUP.platform, GROUP.chat_id, clock.now, 5.0, "heard 660Hz@0.5s"),
                               clock.now)
        assert await d.purge() == 0
        clock.now += 2 * 86400               # the first is 31 days old, the second 2
        delivered: list[tuple[ChatKey, str]] = []

        async def deliver(chat: ChatKey, text: str) -> None:
            delivered.append((chat, text))
        await d.tick("telegram", deliver)    # the scheduler purges as it goes
        left = await d.store.notes(GROUP.platform, GROUP.chat_id, 0, clock.now)
        assert [n.text for n in left] == ["heard 660Hz@0.5s"] and not delivered


# --- the schedule ------------------------------------------------------------------------------

def posted_for(d, now: float):
    """A check: has the schedule marked the group's latest slot before `now` as posted?"""
    async def marked() -> bool:
        state = await d.store.chat(GROUP.platform, GROUP.chat_id)
        return state.last_scheduled >= last_slot(state.daily, state.tz, now)
    return marked


async def test_daily_digest_fires_at_its_time_in_its_zone_and_survives_a_restart(model, tmp_path) -> None:
    settings = settings_for(model, tmp_path, retry_budget=2)
    tokyo = ZoneInfo("Asia/Tokyo")
    start = datetime(2030, 5, 6, 8, 0, tzinfo=tokyo).timestamp()
    delivered: list[tuple[ChatKey, str]] = []
    posted = asyncio.Event()

    async def deliver(chat: ChatKey, text: str) -> None:
        delivered.append((chat, text))
        posted.set()

    async with Earshot.build(settings) as assistant:
        d = assistant.digests
        clock = d.clock = Clock(start)
        said = await d.respond(ChatKey("telegram", GROUP.chat_id, "7"), parse_command("daily 09:00 Asia/Tokyo"))
        assert "09:00 (Asia/Tokyo)" in said and "Mon 06 May" in said
        await d.store.add_note(VoiceNote(GROUP.platform, GROUP.chat_id, start - 60, 5.0, "heard 440Hz@0.5s",
                                         user_name="Ana"), start)
        assert await d.tick("telegram", deliver) == start + 3600     # a pass of the schedule: due at 09:00
        assert not delivered, "not before 09:00 Tokyo time"
        d.start_schedule("telegram", deliver)
        clock.now = start + 3600 + 1          # 09:00:01 in Tokyo (00:00:01 UTC)
        d.wake()
        await asyncio.wait_for(posted.wait(), 10)
        [(chat, text)] = delivered
        assert chat == ChatKey("telegram", GROUP.chat_id, "7"), "posted in the topic it was set up in"
        assert "440Hz" in text and text.startswith("Digest: 1 voice note, 1 minute.")
        await until(posted_for(d, clock.now))         # the scheduler marked today's slot done
        await d.tick("telegram", deliver)            # a pass after that one, which must post nothing
        assert len(delivered) == 1, "one digest per day"
        await d.store.add_note(VoiceNote(GROUP.platform, GROUP.chat_id, clock.now + 60, 5.0,
                                         "heard 660Hz@0.5s", user_name="Bo"), clock.now)

    # down over the next 09:00; on restart the missed digest is posted once, with only the new note
    posted.clear()
    async with Earshot.build(settings) as assistant:
        d = assistant.digests
        d.clock = Clock(start + 3600 + 86400 + 1800)
        d.start_schedule("telegram", deliver)
        await asyncio.wait_for(posted.wait(), 10)
        await until(posted_for(d, d.clock()))
        await d.tick("telegram", deliver)
    assert len(delivered) == 2
    assert "660Hz" in delivered[1][1] and "440Hz" not in delivered[1][1]
    assert delivered[1][1].startswith("Digest since the last one: 1 voice note")


async def test_a_quiet_day_posts_nothing(model, tmp_path) -> None:
    async with Earshot.build(settings_for(model, tmp_path, retry_budget=2)) as assistant:
        d = assistant.digests
        clock = d.clock = Clock(datetime(2030, 5, 6, 8, 0, tzinfo=ZoneInfo("UTC")).timestamp())
        await d.respond(GROUP, parse_command("daily 09:00"))
        clock.now += 2 * 3600
        delivered: list[str] = []

        async def deliver(chat: ChatKey, text: str) -> None:
            delivered.append(text)
        assert await d.tick("telegram", deliver) == clock.now - 3600 + 86400     # next: tomorrow 09:00
        assert not delivered and not model.calls


# --- forgetting ------------------------------------------------------------------------------

async def test_forget_leaves_no_row_for_the_chat_in_any_table(assistant, model, tmp_path) -> None:
    d = assistant.digests
    ears = Listener(assistant)
    await ears.runner.start()
    for chat in (GROUP, OTHER):
        await d.respond(chat, parse_command("daily 10:00"))
        await ears.hear(chat, 440, "Ana", 1)
        await d.summary(chat)
        await assistant.history.remember_audio(ChatKey(chat.platform, chat.chat_id, "9"), "file-1")
    assert rows_mentioning(assistant.settings.db_path, GROUP.chat_id)
    await d.respond(GROUP, parse_command("off"))
    said = await d.respond(GROUP, DigestCommand("forget"))
    assert said == messages.FORGOTTEN
    assert rows_mentioning(assistant.settings.db_path, GROUP.chat_id) == {}
    assert {"voice_notes", "digest_chats", "turns", "recent_audio"} <= set(
        rows_mentioning(assistant.settings.db_path, OTHER.chat_id)), "other chats keep theirs"
    assert not await d.listening(GROUP)
    await ears.runner.stop()


async def test_a_voice_note_not_yet_heard_survives_a_restart(model, tmp_path) -> None:
    """Listening is a durable job: stored before anything is fetched, heard by the next process."""
    async with Earshot.build(settings_for(model, tmp_path, retry_budget=2)) as first:
        await first.digests.respond(GROUP, parse_command("on"))
        ears = Listener(first)                     # never started: the process dies before the job runs
        await ears.hear(GROUP, 440, "Ana", 1)
    async with Earshot.build(settings_for(model, tmp_path, retry_budget=2)) as second:
        ears = Listener(second)
        ears.files["f1"] = tone_audio((0, 0.5), (440, 1.0), (0, 0.5), fmt="ogg")
        await ears.runner.start()
        await ears.runner.drained()
        await ears.runner.stop()
        digest = await second.digests.summary(GROUP)
    assert re.findall(r"(\d+)Hz@", digest.text) == ["440"] and ears.said == []


async def test_scheduled_digests_obey_budgets_but_not_the_allowed_lists(model, tmp_path) -> None:
    """An admin set the schedule up: a listed group isn't needed, but the day's budgets still hold."""
    delivered: list[str] = []

    async def deliver(chat: ChatKey, text: str) -> None:
        delivered.append(text)

    for budget, posts in ((0, 1), (100, 0)):
        async with Earshot.build(settings_for(model, tmp_path / str(budget), retry_budget=2, allowed_users="42",
                                          global_daily_tokens=budget)) as assistant:
            d = assistant.digests
            start = time.time()
            clock = d.clock = Clock(start)
            await d.respond(GROUP, parse_command("daily 09:00"))
            await d.store.add_note(VoiceNote(GROUP.platform, GROUP.chat_id, start - 60, 5.0, "heard 440Hz@0.5s",
                                             user_name="Ana"), start)
            clock.now = start + 86400 + 1
            calls = len(model.calls)
            await d.tick("telegram", deliver)
            assert len(delivered) == posts and len(model.calls) == calls + posts, (budget, delivered)
            delivered.clear()
