"""Never paying twice for the same audio (core.store.answer_cache), through the real bot, Assistant and stand-ins."""
from __future__ import annotations

import pytest

from core.errors import AccessRefused
from core.flow.service import Assistant
from core.values import Audio, ChatKey, Request, Task
from tests.conftest import bot_running, settings_for
from tests.test_telegram import clip

# every test here runs on SQLite and on PostgreSQL (tests/conftest.py: db_target)
pytestmark = pytest.mark.usefixtures("db_target")


async def test_a_voice_note_forwarded_to_a_second_chat_is_answered_with_no_model_call(tmp_path):
    async with bot_running(tmp_path) as bot:
        first = bot.tg.push(301, kind="voice", data=clip(550), caption="/summarize")
        [answer] = await bot.said(301)
        assert "550Hz" in answer["text"] and len(bot.ds.calls) == 1
        downloads = len(bot.tg.called("getFile"))
        # in a group, forwarded (Telegram keeps the file's file_unique_id), then asked about
        fwd = bot.tg.push(-302, user_id=42, kind="voice", chat_type="group", forward_of=(301, first))
        bot.tg.push(-302, user_id=42, text="/summarize", chat_type="group", reply_to=fwd)
        [again] = await bot.said(-302)
        assert again["text"] == answer["text"]
        assert len(bot.ds.calls) == 1, "the stand-in saw a second model request"
        assert len(bot.tg.called("getFile")) == downloads, "the forwarded file was downloaded again"
        # a different question about the same audio is a different answer
        bot.tg.push(-302, user_id=42, text="/translate German", chat_type="group", reply_to=fwd)
        await bot.said(-302, 2)
        assert len(bot.ds.calls) == 2


async def test_a_hit_costs_nothing_and_counts_against_no_budget(model, tmp_path):
    audio = Audio(clip(440), "a.ogg")
    async with Assistant(settings_for(model, tmp_path)) as assistant:
        one, two = ChatKey("cli", "one"), ChatKey("cli", "two")
        paid = await assistant.handle(Request(one, Task.TRANSCRIBE, audio=audio))
        free = await assistant.handle(Request(two, Task.TRANSCRIBE, audio=Audio(audio.data, "other-name.ogg")))
        assert paid.usage.total > 0 and not paid.cached
        assert free.cached and free.usage.total == 0 and free.text == paid.text and free.parts == paid.parts
        assert len(model.calls) == 1
        assert (await assistant.history.usage_today(two)).total == 0
        # the question's words count: spacing and case aside
        await assistant.handle(Request(two, Task.TRANSLATE, audio=audio, text="German"))
        await assistant.handle(Request(two, Task.TRANSLATE, audio=audio, text="  german "))
        assert len(model.calls) == 2


async def test_voice_chat_and_questions_with_history_are_never_cached(model, tmp_path):
    audio = Audio(clip(660), "a.ogg")
    async with Assistant(settings_for(model, tmp_path)) as assistant:
        chat = ChatKey("telegram", "7")
        for _ in range(2):
            await assistant.handle(Request(chat, Task.CHAT, audio=audio))
            await assistant.handle(Request(chat, Task.ASK, audio=audio, text="what tone?"))
        assert len(model.calls) == 4


async def test_forgetting_a_chat_deletes_what_its_audio_put_in_the_cache(model, tmp_path):
    audio = Audio(clip(770), "a.ogg")
    async with Assistant(settings_for(model, tmp_path)) as assistant:
        await assistant.handle(Request(ChatKey("telegram", "1"), Task.SUMMARIZE, audio=audio, audio_id="u1"))
        await assistant.history.forget_chat("telegram", "1")
        again = await assistant.handle(Request(ChatKey("telegram", "2"), Task.SUMMARIZE, audio=audio))
        assert not again.cached and len(model.calls) == 2


async def test_cache_days_zero_turns_it_off_and_old_answers_expire(model, tmp_path):
    audio = Audio(clip(880), "a.ogg")
    async with Assistant(settings_for(model, tmp_path, cache_days=0)) as assistant:
        for _ in range(2):
            assert not (await assistant.handle(Request(ChatKey("cli", "x"), Task.EVENTS, audio=audio))).cached
    assert len(model.calls) == 2
    async with Assistant(settings_for(model, tmp_path)) as assistant:
        await assistant.handle(Request(ChatKey("cli", "x"), Task.EVENTS, audio=audio))
        await assistant.history.execute("UPDATE answer_cache SET created = created - 8 * 86400")
        assert await assistant.cache.prune() == 1
        assert not (await assistant.handle(Request(ChatKey("cli", "x"), Task.EVENTS, audio=audio))).cached
    assert len(model.calls) == 4


async def test_access_is_checked_before_a_cached_answer_is_given(model, tmp_path):
    audio = Audio(clip(990), "a.ogg")
    async with Assistant(settings_for(model, tmp_path, allowed_users=("1",))) as assistant:
        await assistant.handle(Request(ChatKey("telegram", "1"), Task.TRANSCRIBE, audio=audio, user_id="1"))
        with pytest.raises(AccessRefused):
            await assistant.handle(Request(ChatKey("telegram", "2"), Task.TRANSCRIBE, audio=audio, user_id="2"))
