"""A chat's language in the core: the prompts name it, errors and refusals are said in it, /lang stores it,
digests are headed and written in it. The real Assistant talks to the DashScope stand-in."""
from __future__ import annotations

import time

import pytest

from core.app import Earshot
from core.errors import AccessRefused, AudioError
from core.flow.access import AccessPolicy, Allowance, UsageReport, usage_text
from core.flow.chat_state import language_choices
from core.flow.commands import Command, parse_command
from core.flow.digest import parse_digest
from core.flow.service import Assistant
from core.store.digest_store import DigestStore, VoiceNote
from core.store.jobs import JobStore, NewJob
from core.values import Audio, ChatKey, Request, Sender, Task, Usage
from core.words import amounts, messages
from tests.conftest import settings_for
from tests.fakes.dashscope import tone_audio

DM = ChatKey("telegram", "4242")
GROUP = ChatKey("telegram", "-100777")
ALICE = Sender("4242")
CLIP = Audio(tone_audio((0, 0.5), (440, 1.0), (0, 0.5)), "clip.mp3")


@pytest.fixture
async def app(model, tmp_path):
    async with Earshot.build(settings_for(model, tmp_path, retry_budget=1, cache_days=7)) as built:
        yield built


@pytest.fixture
def assistant(app):
    return app.assistant


def asked(model) -> str:
    """The words of the last request the model got."""
    return "\n".join(model.calls[-1].texts)


async def test_a_german_chats_summary_asks_for_german_and_its_transcript_does_not(assistant, model) -> None:
    await assistant.handle(Request(DM, Task.SUMMARIZE, audio=CLIP, user_id="4242", lang="de"))
    assert asked(model).endswith("Write in German.")
    await assistant.handle(Request(DM, Task.TRANSCRIBE, audio=CLIP, user_id="4242", lang="de"))
    assert "Write in" not in asked(model), "transcripts stay in the language spoken"
    await assistant.handle(Request(DM, Task.SENTIMENT, audio=CLIP, user_id="4242"))
    assert "Write in" not in asked(model), "no language chosen: the prompt is as before"


async def test_the_same_summary_in_another_language_is_not_taken_from_the_cache(assistant, model) -> None:
    german = await assistant.handle(Request(DM, Task.SUMMARIZE, audio=CLIP, lang="de"))
    japanese = await assistant.handle(Request(DM, Task.SUMMARIZE, audio=CLIP, lang="ja"))
    again = await assistant.handle(Request(DM, Task.SUMMARIZE, audio=CLIP, lang="ja"))
    assert not german.cached and not japanese.cached and again.cached
    assert len(model.answered) == 2 and asked(model).endswith("Write in Japanese.")


async def test_an_error_carries_its_message_and_is_said_in_japanese(model, tmp_path) -> None:
    too_long = Audio(tone_audio((440, 3.0)), "long.mp3")
    async with Assistant(settings_for(model, tmp_path, max_audio_seconds=2)) as short:
        with pytest.raises(AudioError) as err:
            await short.handle(Request(DM, Task.TRANSCRIBE, audio=too_long))
    assert err.value.message == messages.TOO_LONG
    assert err.value.user_message == messages.TOO_LONG.format(limit="2 seconds")   # English, as before
    japanese = err.value.user_text("ja")
    assert japanese == messages.text(messages.TOO_LONG, "ja", limit="2 秒") and "2 秒" in japanese
    assert not japanese.isascii()
    assert err.value.user_text("de") == messages.text(messages.TOO_LONG, "de", limit="2 Sekunden")


async def test_a_budget_refusal_is_one_whole_sentence_in_each_language(model, tmp_path) -> None:
    settings = settings_for(model, tmp_path, retry_budget=1, user_daily_tokens=1000, chat_daily_tokens=0,
                            global_daily_tokens=0, user_requests_per_minute=0)
    async with Assistant(settings) as a:
        await a.access.ledger.record(DM, "7", Usage(audio_tokens=900), role="spent", now=time.time())
        with pytest.raises(AccessRefused) as err:
            await a.handle(Request(DM, Task.TRANSCRIBE, audio=Audio(tone_audio((440, 20.0)), "a.mp3"), user_id="7"))
    assert err.value.message == messages.TOO_COSTLY_USER and "you have 100 left" in err.value.user_message
    japanese = err.value.user_text("ja")
    assert japanese.startswith("この録音を聞くには") and "あなたが今日使える残りは 100 です" in japanese
    assert "時間" in japanese or "分" in japanese, "the wait until midnight is said in Japanese too"
    assert "du hast heute nur noch 100 übrig" in err.value.user_text("de")


async def test_rate_limits_and_spent_budgets_are_said_in_the_chats_language(model, tmp_path) -> None:
    settings = settings_for(model, tmp_path, user_requests_per_minute=1, user_daily_tokens=10)
    async with Assistant(settings) as a:
        policy = AccessPolicy(settings, a.history)
        await policy.check(DM, ALICE, count=True)
        with pytest.raises(AccessRefused) as rate:
            await policy.check(DM, ALICE, count=True)
        assert rate.value.message == messages.RATE_LIMITED
        french = rate.value.user_text("fr")
        assert french.startswith(messages.text(messages.RATE_LIMITED, "fr", limit=1, wait="\0").split("\0")[0])
        assert french != rate.value.user_message
        assert "1 分" in rate.value.user_text("ja") or "秒" in rate.value.user_text("ja"), "the wait, in Japanese"
        await a.history.ledger.record(DM, "4242", Usage(0, 20, 0), role="assistant", now=time.time())
        with pytest.raises(AccessRefused) as budget:
            await policy.check(ChatKey("telegram", "other"), ALICE, rate=False)
        assert budget.value.message == messages.USER_BUDGET_USED
        assert budget.value.user_text("zh-Hans").startswith("你今天的 10 个 token 已经用完了")


def test_waits_and_lengths_in_words_follow_the_language() -> None:
    assert amounts.wait(3 * 3600 + 600) == "3 h 10 min" and amounts.wait(3 * 3600 + 600, "ja") == "3 時間 10 分"
    assert amounts.wait(40, "de") == "40 s" and amounts.wait(600, "de") == "10 min"
    assert amounts.rounded(1) == "1 second" and amounts.rounded(86400, "fr") == "24 heures"
    assert amounts.period(7 * 86400, "es") == "1 semana" and amounts.duration(90, "it") == "90 secondi"
    span = amounts.Span(amounts.wait, 600)
    assert f"{span}" == "10 min" and span.said("zh-Hant") == "10 分鐘"


def test_usage_is_said_in_german() -> None:
    report = UsageReport(here=Usage(10, 5, 5), user=Allowance(20, 100), chat=Allowance(20, 0),
                         everyone=Allowance(20, 0), resets_in=3600, requests_per_minute=0)
    text = usage_text(report, lang="de")
    assert "\nDu: 20 von 100" in text and "Dieser Chat: 20" in text and "in 1 h." in text


async def test_lang_is_stored_per_chat_and_read_back(app) -> None:
    state = app.chat_state
    assert await state.language_for(DM, None) == "en"
    assert await state.language_for(DM, "de-DE") == "de" and await state.language_for(DM, "zh-TW") == "zh-Hant"
    assert await state.language_for(DM, "pt-BR") == "en", "a language earshot doesn't speak: English"
    current = await state.run("lang", DM, ALICE, "", private=True, lang=await state.language_for(DM, "de"))
    assert current == messages.text(messages.LANG_CURRENT, "de", language="Deutsch", prefix="/",
                                    languages=language_choices())
    assert current is not None and "ja (日本語)" in current and "zh-Hant (繁體中文)" in current

    said = await state.run("lang", DM, ALICE, "ja", private=True, lang="de")
    assert said == messages.text(messages.LANG_SET, "ja", language="日本語")
    assert await state.language_for(DM, "de") == "ja", "the chat's /lang wins over the app's language"
    assert await state.language_for(ChatKey("telegram", "4242", "thread"), None) == "ja", "threads share it"
    assert await state.language_for(GROUP, "de") == "de", "other chats are untouched"

    unknown = await state.run("lang", DM, ALICE, "klingon", private=True, lang="ja")
    assert unknown == messages.text(messages.LANG_UNKNOWN, "ja", code="klingon", languages=language_choices())
    assert await state.language_for(DM, None) == "ja"

    slack = await state.run("lang", ChatKey("slack", "C1"), Sender("U1"), "Français", private=False,
                            prefix="/earshot ")
    assert slack == messages.text(messages.LANG_SET, "fr", language="Français")

    back = await state.run("lang", DM, ALICE, "auto", private=True, lang="ja", user_lang="fr-CA")
    assert back == messages.text(messages.LANG_AUTO, "fr")
    assert await state.language_for(DM, "fr-CA") == "fr"

    assert parse_command("lang ja", strict=True) == Command("lang", "ja")
    assert parse_command("lang is hard to learn", strict=True) is None


async def test_lang_survives_a_restart(model, tmp_path) -> None:
    settings = settings_for(model, tmp_path)
    async with Earshot.build(settings) as app:
        await app.chat_state.run("lang", GROUP, ALICE, "it", private=False)
    async with Earshot.build(settings) as app:
        assert await app.chat_state.language_for(GROUP, "de") == "it"


async def test_jobs_keep_the_language_they_were_asked_in(assistant) -> None:
    store = JobStore(assistant.history)
    job, created = await store.add(NewJob("m1", DM, Task.SUMMARIZE, "{}", lang="ja"))
    assert created and job.lang == "ja" and (await store.get(job.id)).lang == "ja"
    plain, _ = await store.add(NewJob("m2", DM, Task.SUMMARIZE, "{}"))
    assert plain.lang is None


async def test_a_french_digest_is_headed_and_written_in_french(app, assistant, model) -> None:
    d = app.digests
    on = await d.respond(GROUP, parse_digest("on"), lang="fr")
    days = amounts.days(assistant.settings.retention_days, "fr")
    assert on == messages.text(messages.DIGEST_ON, "fr", prefix="/", days=days) and "jours" in days
    now = time.time()
    for i in range(2):
        await d.store.add_note(VoiceNote(GROUP.platform, GROUP.chat_id, now - 600 + i * 60, 30.0, f"note {i}",
                                         user_id=str(i), user_name="Léa", source_id=str(i)), now)
    digest = await d.summary(GROUP, 2 * 3600, lang="fr")
    title = messages.text(messages.DIGEST_TITLE_PERIOD, "fr", period="2 heures")
    assert digest.text.startswith(messages.text(messages.DIGEST_HEADER, "fr", title=title,
                                                notes="2 messages vocaux", minutes="1 minute"))
    assert "Write in French," in asked(model) and "most of the voice notes" not in asked(model)
    daily = await d.respond(GROUP, parse_digest("daily 09:00 Asia/Tokyo"), lang="ja")
    assert daily.startswith("毎日 09:00（Asia/Tokyo）") and "月" in daily, "the first day as Japanese writes dates"
    nothing = await d.summary(GROUP, 60, lang="fr")
    assert nothing.text == messages.text(messages.DIGEST_NOTHING_IN, "fr", period="1 minute")


async def test_a_scheduled_digest_follows_the_chats_lang(app, assistant, model) -> None:
    await app.chat_state.run("lang", GROUP, ALICE, "es", private=False)
    d = app.digests
    await d.respond(GROUP, parse_digest("on"))
    now = time.time()
    await d.store.add_note(VoiceNote(GROUP.platform, GROUP.chat_id, now - 60, 30.0, "hola"), now)
    posted: list[str] = []

    async def post(chat: ChatKey, text: str) -> None:
        posted.append(text)

    await d.respond(GROUP, parse_digest("daily 00:00"))
    await DigestStore(assistant.history).update(GROUP.platform, GROUP.chat_id, now, scheduled_since=now - 2 * 86400)
    await d.tick("telegram", post)
    assert len(posted) == 1 and posted[0].startswith(messages.text(messages.DIGEST_TITLE, "es") + ":")
    assert "Write in Spanish," in asked(model)
