"""Who may use earshot and how much, through the Telegram and Slack stand-ins and the real Assistant:
allowed lists in every form, one refusal then silence, daily budgets, the rate limit, /usage for admins."""
from __future__ import annotations

import asyncio
import re

import pytest

from core.config import Settings
from core.errors import AccessRefused, AudioError, ModelInputError
from core.flow.access import AccessPolicy, Allowance, RateLimiter, UsageReport, usage_text, wait_words
from core.flow.service import Assistant
from core.store.history import HistoryStore
from core.values import Audio, ChatKey, Request, Sender, Task, Usage
from core.words import messages
from tests.conftest import BOT, CHANNEL, DM, Harness, answers, bot_running, dm_clip, settings_for, slack_running
from tests.fakes.dashscope import BAD_PARAMETER, Failure, FakeDashScope, tone_audio
from tests.fakes.slack import FakeSlack, event_body
from tests.test_telegram import clip as tg_clip
from tests.waiting import until

# every test here runs on SQLite and on PostgreSQL (tests/conftest.py: db_target)
pytestmark = pytest.mark.usefixtures("db_target")

LONG_ANSWER = "word " * 600          # ~750 output tokens: one answer spends more than a small budget
# 70 s with a tone in each 30 s part
THREE_PARTS = tone_audio((0, 2), (440, 1), (0, 30), (660, 1), (0, 30), (880, 1), (0, 5), fmt="ogg")


def refusal_prefix(template: str) -> str:
    """The fixed start of a refusal sentence, before its first {field}."""
    return template.split("{")[0]


async def quiet(bot: Harness, chat_id: int, count: int) -> list[str]:
    """Once every update pushed so far is handled and its jobs are done, the chat's texts, checking the bot
    said exactly `count` things."""
    await bot.idle()
    texts = bot.tg.texts(chat_id)
    assert len(texts) == count, texts
    return texts


# --- Telegram: who ------------------------------------------------------------------------------

async def test_stranger_is_refused_once_costs_nothing_and_stays_refused_after_a_restart(tmp_path):
    async with bot_running(tmp_path, allowed_users="999") as bot:
        bot.tg.push(101, kind="voice", data=tg_clip(440))
        [refusal] = await bot.said(101)
        assert refusal["text"] == messages.NOT_ALLOWED.format(platform="Telegram", user_id="101")
        for update in ({"kind": "voice", "data": tg_clip(440)}, {"text": "/transcribe"}, {"text": "hello?"},
                       {"text": "/usage"}, {"text": "/reset"}, {"text": "/ask what is it?"}):
            bot.tg.push(101, **update)
        await quiet(bot, 101, 1)
        assert not bot.ds.calls, "a stranger's request reached the model"
        assert not bot.tg.called("getFile"), "a stranger's file was downloaded"
        assert not bot.tg.called("sendChatAction"), "the bot showed 'typing' to a stranger"

        bot.tg.push(999, kind="voice", data=tg_clip(440))
        [answer] = await bot.said(999)
        assert "440Hz" in answer["text"]

    async with bot_running(tmp_path, allowed_users="999") as bot:   # the refusal is remembered in SQLite
        bot.tg.push(101, kind="voice", data=tg_clip(440))
        await quiet(bot, 101, 0)
        assert not bot.ds.calls


async def test_usernames_ids_and_chats_in_every_form(tmp_path):
    async with bot_running(tmp_path, allowed_users="@Alice_V, 202", allowed_chats="@OpenGroup -1005") as bot:
        ask = {"kind": "voice", "data": tg_clip(440)}
        in_group = {**ask, "caption": f"{BOT} what is it?", "chat_type": "supergroup"}
        bot.tg.push(201, username="alice_v", **ask)                       # @username, any case
        bot.tg.push(202, **ask)                                           # numeric id
        bot.tg.push(203, username="mallory", **ask)                       # neither
        bot.tg.push(-1005, user_id=204, **in_group)                       # a listed group: anyone in it
        bot.tg.push(-1006, user_id=205, chat_username="opengroup", **in_group)   # a group by @name
        bot.tg.push(-1007, user_id=206, **in_group)                       # an unlisted group...
        bot.tg.push(-1008, user_id=201, username="alice_v", **in_group)  # ...where a listed user may ask
        for chat in (201, 202, -1005, -1006, -1008):
            # a question's answer streams into its status message: wait for the answer itself, once
            [answer] = await bot.said(chat, where=lambda m: "440Hz" in m["text"])
            assert len(bot.tg.said(chat)) == 1, (chat, bot.tg.texts(chat))
        assert (await bot.said(203))[0]["text"] == messages.NOT_ALLOWED.format(platform="Telegram", user_id="203")
        assert (await bot.said(-1007))[0]["text"].startswith(refusal_prefix(messages.NOT_ALLOWED))
        assert len(bot.ds.calls) == 5


# --- Telegram: how much -------------------------------------------------------------------------

async def test_user_budget_runs_out_with_a_line_saying_when_it_resets(tmp_path):
    ds = FakeDashScope(api_key="sk-test-key")
    ds.reply = lambda call: LONG_ANSWER
    async with bot_running(tmp_path, ds=ds, user_daily_tokens=600, chat_daily_tokens=0,
                           global_daily_tokens=0) as bot:
        bot.tg.push(301, kind="voice", data=tg_clip(440))
        await bot.said(301)                                              # spends ~900 of 600
        calls = len(ds.calls)
        bot.tg.push(301, kind="voice", data=tg_clip(440))
        said = await bot.said(301, where=lambda m: "tokens" in m["text"])
        assert said[0]["text"].startswith(messages.USER_BUDGET_USED.split("{")[0])
        assert "600 tokens for today" in said[0]["text"]
        assert re.search(r"midnight UTC, in \d+ (h|min)", said[0]["text"]), said[0]["text"]
        bot.tg.push(301, kind="voice", data=tg_clip(440))                # told once: quiet now
        bot.tg.push(301, text="/usage")
        usage = (await bot.said(301, where=lambda m: m["text"].startswith("Used here today")))[0]["text"]
        assert re.search(r"You: [\d,]+ of 600 tokens used, 0 left\.", usage), usage
        assert len([t for t in bot.tg.texts(301) if "tokens for today" in t]) == 1
        assert len(ds.calls) == calls, "an over-budget request reached the model"

        bot.tg.push(302, kind="voice", data=tg_clip(660))                # someone else still has theirs
        assert len(await bot.said(302)) == 1 and len(ds.calls) == calls + 1


async def test_chat_budget_is_shared_by_the_people_in_it(tmp_path):
    ds = FakeDashScope(api_key="sk-test-key")
    ds.reply = lambda call: LONG_ANSWER
    async with bot_running(tmp_path, ds=ds, chat_daily_tokens=600) as bot:
        group = {"kind": "voice", "data": tg_clip(440), "caption": f"{BOT} and this?", "chat_type": "supergroup"}
        bot.tg.push(-1009, user_id=801, **group)
        await bot.said(-1009)
        bot.tg.push(-1009, user_id=802, **group)                          # someone else, same chat
        said = await bot.said(-1009, 2)
        assert said[1]["text"].startswith(refusal_prefix(messages.CHAT_BUDGET_USED)), said[1]["text"]
        bot.tg.push(-1010, user_id=802, **group)                          # the same person elsewhere
        await bot.said(-1010)
        assert len(ds.calls) == 2


async def test_global_budget_protects_the_quota_for_everyone(tmp_path):
    ds = FakeDashScope(api_key="sk-test-key")
    ds.reply = lambda call: LONG_ANSWER
    async with bot_running(tmp_path, ds=ds, global_daily_tokens=600) as bot:
        bot.tg.push(401, kind="voice", data=tg_clip(440))
        await bot.said(401)
        bot.tg.push(402, kind="voice", data=tg_clip(440))
        [refusal] = await bot.said(402)
        assert refusal["text"].startswith(refusal_prefix(messages.GLOBAL_BUDGET_USED))
        assert "midnight UTC" in refusal["text"] and len(ds.calls) == 1


async def test_a_recording_over_a_whole_days_budget_is_refused_before_the_model_naming_the_setting(tmp_path):
    async with bot_running(tmp_path, user_daily_tokens=1000) as bot:
        data = THREE_PARTS                                                # ~3,000 tokens
        bot.tg.push(501, kind="voice", data=data, duration=70)
        [refusal] = await bot.said(501)
        text = refusal["text"]
        assert text.startswith(refusal_prefix(messages.NEVER_FITS_USER)) and "1,000" in text, text
        assert "EARSHOT_USER_DAILY_TOKENS" in text and "midnight" not in text and "tomorrow" not in text
        assert not bot.ds.calls


async def test_a_several_minute_note_from_a_new_user_is_answered_with_the_default_budgets(tmp_path):
    # six minutes with a tone every half minute, so none of it is trimmed as silence
    six_minutes = tone_audio(*[seg for i in range(12) for seg in ((400 + 40 * i, 1), (0, 29))], fmt="ogg")
    async with bot_running(tmp_path) as bot:      # no budget set: the defaults
        bot.tg.push(511, kind="voice", data=six_minutes, duration=360)
        await bot.idle()
        texts = bot.tg.texts(511)
        assert any("400Hz" in t and "840Hz" in t for t in texts), texts
        assert not any("tokens" in t for t in texts) and len(bot.ds.calls) >= 12


async def test_rate_limit_per_user(tmp_path):
    async with bot_running(tmp_path, user_requests_per_minute=2) as bot:
        for _ in range(4):
            bot.tg.push(601, kind="voice", data=tg_clip(440))
        texts = await quiet(bot, 601, 3)
        # refused at the door, before any download, so the refusal may come before the answers
        [refused] = [t for t in texts if "440Hz" not in t]
        assert sum("440Hz" in t for t in texts) == 2
        assert refused.startswith(refusal_prefix(messages.RATE_LIMITED)) and "2 requests a minute" in refused
        assert len(bot.ds.calls) == 2 and len(bot.tg.called("getFile")) == 2
        bot.tg.push(602, kind="voice", data=tg_clip(660))                # others aren't slowed down
        assert "660Hz" in (await bot.said(602))[0]["text"]


async def test_admin_usage_sees_everyone_and_others_see_their_own(tmp_path):
    async with bot_running(tmp_path, admin_users="@Boss") as bot:
        bot.tg.push(701, username="ann", kind="voice", data=tg_clip(440))
        bot.tg.push(702, kind="voice", data=tg_clip(660))
        await bot.said(701)
        await bot.said(702)
        bot.tg.push(703, username="boss", text="/usage")
        admin = (await bot.said(703))[0]["text"]
        assert "Top users today:" in admin and "Top chats today:" in admin
        assert "@ann (701)" in admin and "702" in admin
        assert re.search(r"Everyone: [1-9][\d,]* of 200,000 tokens used", admin), admin
        bot.tg.push(701, text="/usage")
        own = (await bot.said(701, 2))[1]["text"]
        assert "Top users" not in own and "702" not in own
        assert re.search(r"You: [1-9][\d,]* of 80,000 tokens used, [\d,]+ left\.", own), own
        assert "midnight UTC" in own and "10 requests a minute" in own


# --- Slack --------------------------------------------------------------------------------------

async def test_slack_user_ids_allowed_others_refused_once_in_the_ack(tmp_path, clip):
    async with slack_running(tmp_path, allowed_users="U0ALICE") as w:
        record = w.slack.add_file(clip)
        w.slack.add_message(CHANNEL, {"subtype": "file_share", "user": "U0ALICE", "text": "",
                                      "files": [FakeSlack.event_file(record)]})
        first = await w.slash("transcribe", user="U0BOB")
        assert messages.NOT_ALLOWED.format(platform="Slack", user_id="U0BOB") in first.text
        again = await w.slash("transcribe", user="U0BOB")
        assert again.text == "", again.text
        bob = dm_clip(w.slack, w.slack.add_file(clip))
        await w.post(event_body({**bob, "user": "U0BOB", "channel": "D0BOB"}))
        await w.idle()
        assert not w.slack.posts and not w.model.calls and not w.slack.downloads

        await w.post(event_body(dm_clip(w.slack, record)))             # Alice is answered
        assert await until(lambda: answers(w.slack, "440Hz"))
        assert len(w.model.calls) == 1


async def test_slack_team_id_admits_a_workspace_not_its_guests(tmp_path, clip):
    async with slack_running(tmp_path, allowed_chats="T0EARSHOT") as w:
        record = w.slack.add_file(clip)
        await w.post(event_body({**dm_clip(w.slack, record), "user": "U0CAROL"}))   # the envelope's team
        assert await until(lambda: answers(w.slack, "440Hz"))
        # a Slack Connect guest from another workspace, mentioning the app in a shared channel
        mention = {"type": "app_mention", "channel": CHANNEL, "user": "U0GUEST", "user_team": "T0OTHER",
                   "text": "<@U0EARSHOT> what is this?", "ts": w.slack.ts(), "files": [FakeSlack.event_file(record)]}
        await w.post(event_body(mention))
        refusal = await until(lambda: answers(w.slack, "only answer people"))
        assert refusal and "U0GUEST" in refusal[0]["text"]
        await w.post(event_body({**mention, "ts": w.slack.ts()}))
        assert (await w.slash("transcribe", user="U0GUEST", team="T0OTHER")).text == ""
        await w.idle()
        assert len(answers(w.slack, "only answer people")) == 1 and len(w.model.calls) == 1


async def test_slack_admin_usage_lists_everyone(tmp_path, clip):
    async with slack_running(tmp_path, admin_users="U0BOSS") as w:
        await w.post(event_body(dm_clip(w.slack, w.slack.add_file(clip))))
        assert await until(lambda: answers(w.slack, "440Hz"))
        public = (await w.slash("usage", user="U0BOSS")).text           # in a channel: no one else's figures
        assert "Top users" not in public and "U0ALICE" not in public and DM not in public, public
        admin = (await w.slash("usage", user="U0BOSS", channel="D0BOSS")).text
        assert "Top users today:" in admin and "U0ALICE" in admin and DM in admin
        own = (await w.slash("usage", user="U0ALICE", channel=DM)).text
        assert "Top users" not in own and re.search(r"You: [1-9][\d,]* of 80,000 tokens used", own), own


# --- the core -------------------------------------------------------------------------------------

async def test_strangers_are_refused_before_decoding_and_the_terminal_is_never_refused(model, tmp_path):
    async with Assistant(settings_for(model, tmp_path, retry_budget=1, allowed_users="1")) as a:
        garbage = Request(ChatKey("telegram", "2"), Task.CHAT, Audio(b"not audio at all"), user_id="2")
        with pytest.raises(AccessRefused) as first:
            await a.handle(garbage)
        with pytest.raises(AccessRefused) as second:
            await a.handle(garbage)
        assert not first.value.silent and second.value.silent
        with pytest.raises(AudioError):     # the operator's terminal: decoded, found broken
            await a.handle(Request(ChatKey("cli", "terminal"), Task.CHAT, Audio(b"not audio at all")))
        assert not model.calls


async def test_tokens_spent_before_a_failure_still_count(model, tmp_path):
    data = THREE_PARTS
    async with Assistant(settings_for(model, tmp_path, retry_budget=1, chunk_concurrency=1)) as a:
        chat = ChatKey("telegram", "5")
        model.fail(Failure(None), BAD_PARAMETER)                        # the first part is heard, the second refused
        with pytest.raises(ModelInputError):
            await a.handle(Request(chat, Task.TRANSCRIBE, Audio(data), user_id="5"))
        spent = model.calls[0].usage
        used = await a.history.usage_today(chat)
        assert used.total == sum(spent.values()) > 0
        report = await a.access.report(chat, Sender("5"))
        assert report.user is not None and report.user.used == used.total


async def test_requests_in_flight_hold_what_they_will_cost(model, tmp_path):
    model.latency = 1.0
    data = tone_audio((0, 2), (440, 1), (0, 30), (660, 1), (0, 6), fmt="ogg")   # 40 s: ~1,800 tokens estimated
    async with Assistant(settings_for(model, tmp_path, retry_budget=1, user_daily_tokens=3000)) as a:
        first = asyncio.create_task(a.handle(Request(ChatKey("telegram", "6"), Task.TRANSCRIBE, Audio(data),
                                                     user_id="6")))
        await until(lambda: model.calls, 10)
        with pytest.raises(AccessRefused, match="would take about"):
            await a.handle(Request(ChatKey("telegram", "-60"), Task.TRANSCRIBE, Audio(data), user_id="6"))
        await first
        assert len({c.request_id for c in model.calls}) == 2              # the first request's two parts only


async def test_budget_and_rate_checks_are_bounded_in_memory(tmp_path):
    clock = [1000.0]
    limiter = RateLimiter(2, clock=lambda: clock[0])
    key = ("telegram", "1")
    limiter.hit(key)
    limiter.hit(key)
    assert 59 < limiter.wait(key) <= 60
    clock[0] += 60.5
    assert limiter.wait(key) == 0
    for i in range(10_050):
        limiter.hit(("telegram", str(i)))
    assert len(limiter) == 10_050              # all still inside their minute: all kept
    clock[0] += 61
    limiter.hit(key)
    assert len(limiter) == 1                   # a minute on, the idle ones are gone
    assert wait_words(30) == "30 s" and wait_words(61) == "2 min" and wait_words(3 * 3600 + 600) == "3 h 10 min"


def test_lists_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("EARSHOT_ALLOWED_USERS", " 123, @Alice_V  U0ABC,,")
    monkeypatch.setenv("EARSHOT_ALLOWED_CHATS", "-100200;T0XYZ".replace(";", ","))
    monkeypatch.setenv("EARSHOT_ADMIN_USERS", "@Boss")
    monkeypatch.setenv("EARSHOT_USER_DAILY_TOKENS", "0")
    s = Settings()
    assert s.allowed_users == ("123", "@alice_v", "U0ABC")
    assert s.allowed_chats == ("-100200", "T0XYZ") and s.admin_users == ("@boss",)
    assert s.user_daily_tokens == 0 and s.global_daily_tokens > 0
    assert Settings(allowed_users=[42, "@X"]).allowed_users == ("42", "@x")


def test_usage_text_says_what_is_left_and_unlimited_budgets():
    report = UsageReport(here=Usage(100, 20, 30), user=Allowance(150, 0), chat=Allowance(150, 1000),
                         everyone=Allowance(900, 1000), resets_in=3700, requests_per_minute=0)
    text = usage_text(report)
    assert text.splitlines()[0] == "Used here today: 150 tokens (100 audio, 20 input, 30 output)."
    assert "You: 150 tokens used, no limit." in text and "This chat: 150 of 1,000 tokens used, 850 left." in text
    assert "Everyone: 900 of 1,000 tokens used, 100 left." in text and "in 1 h 2 min" in text
    assert "requests a minute" not in text


async def test_policy_matches_only_verified_names(tmp_path):
    store = HistoryStore(tmp_path / "h.db")
    await store.open()
    try:
        p = AccessPolicy(Settings(allowed_users="@alice T0TEAM", db_path=tmp_path / "h.db"), store)
        assert p.allowed(ChatKey("telegram", "5"), Sender("5", "Alice"))
        # Slack display names are neither unique nor verified: '@alice' never admits a Slack user
        assert not p.allowed(ChatKey("slack", "D1"), Sender("U1", "alice"))
        assert p.allowed(ChatKey("slack", "D1"), Sender("U1", team_id="T0TEAM"))
        assert not p.is_admin(ChatKey("slack", "D1"), Sender("U1", team_id="T0TEAM"))
        assert Request(ChatKey("slack", "D1"), Task.CHAT, user_id="U1", team_id="T0TEAM").sender == \
            Sender("U1", team_id="T0TEAM")
    finally:
        await store.close()
