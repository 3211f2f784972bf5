"""One-tap actions wired end to end: Telegram's buttons under answers through the Bot API stand-in, the audio
references they carry kept in the database."""
from __future__ import annotations

import time

from bots.telegram.buttons import callback_data, parse_callback
from core import messages
from core.app import Earshot
from core.audio_ref_store import SqlAudioRefStore
from core.audio_refs import AudioRef
from core.models import ChatKey, Task
from tests.conftest import Harness, reply_to
from tests.fakes.dashscope import tone_audio
from tests.waiting import until

VOICE = tone_audio((0, 0.5), (440, 1.0), (0, 0.5), fmt="ogg")


def buttons(message: dict) -> list[str]:
    return [b["callback_data"] for row in (message.get("reply_markup") or {}).get("inline_keyboard", []) for b in row]


async def transcript_with_buttons(bot: Harness, chat: int) -> dict:
    kind = "group" if chat < 0 else "private"
    bot.tg.push(chat, kind="voice", data=VOICE, caption="/transcribe", chat_type=kind)
    [answer] = await bot.said(chat)
    assert "440Hz" in answer["text"] and buttons(answer), answer
    return answer


def button_for(answer: dict, task: Task) -> str:
    [data] = [d for d in buttons(answer) if (p := parse_callback(d)) and p.task is task and p.language is None]
    return data


async def test_a_button_under_a_transcript_brings_the_summary_of_the_same_voice_note(bot: Harness):
    answer = await transcript_with_buttons(bot, 301)
    assert Task.TRANSCRIBE not in [p.task for d in buttons(answer) if (p := parse_callback(d))]
    calls = len(bot.ds.calls)
    bot.tg.push_callback(301, answer["message_id"], button_for(answer, Task.SUMMARIZE))
    summary = (await bot.said(301, 2))[1]
    await bot.idle()
    assert len(bot.ds.calls) == calls + 1                        # exactly one more model call
    assert bot.ds.calls[-1].items[0].tones == [(440, 0.5)]       # on the same voice note
    assert reply_to(summary) == answer["message_id"] and "440Hz" in summary["text"]
    assert bot.tg.unanswered_callbacks() == []                   # the spinner stopped
    assert buttons(summary) and Task.SUMMARIZE not in [p.task for d in buttons(summary) if (p := parse_callback(d))]


async def test_translate_asks_which_language_then_translates(bot: Harness):
    answer = await transcript_with_buttons(bot, 302)
    bot.tg.push_callback(302, answer["message_id"], button_for(answer, Task.TRANSLATE))
    await until(lambda: len(buttons(bot.tg.messages[(302, answer["message_id"])])) > 4, 10, "the language row")
    token = parse_callback(button_for(answer, Task.TRANSLATE)).token  # type: ignore[union-attr]
    bot.tg.push_callback(302, answer["message_id"], callback_data(token, Task.TRANSLATE, "es"))
    await bot.said(302, 2)
    await bot.idle()
    assert any("Spanish" in t for t in bot.ds.calls[-1].texts)
    assert bot.tg.unanswered_callbacks() == []


async def test_a_button_on_forgotten_audio_says_so_and_goes(bot: Harness):
    answer = await transcript_with_buttons(bot, -303)      # in a group, where /forget is
    bot.tg.set_member(-303, 303, "administrator")
    bot.tg.push(-303, text="/forget", chat_type="group")
    assert (await bot.said(-303, 2))[1]["text"] == messages.FORGOTTEN, bot.tg.texts(-303)
    calls = len(bot.ds.calls)
    query = bot.tg.push_callback(-303, answer["message_id"], button_for(answer, Task.SUMMARIZE))
    await until(lambda: query in bot.tg.callback_answers, 10, "the tap to be answered")
    assert bot.tg.callback_answers[query].get("text") == messages.AUDIO_EXPIRED
    await until(lambda: bot.tg.markup_of(-303, answer["message_id"]) is None, 10, "the buttons to go")
    await bot.idle()
    assert len(bot.ds.calls) == calls and len(bot.tg.said(-303)) == 2


async def test_references_are_kept_in_the_database_and_expire(tmp_path, model):
    from tests.conftest import settings_for
    async with Earshot.build(settings_for(model, tmp_path)) as app:
        chat = ChatKey("telegram", "9", None)
        token = await app.audio_refs.mint(chat, '{"file_id":"x"}', audio_id="u1")
        assert await app.audio_refs.mint(chat, '{"file_id":"x"}') == token
        assert (await app.audio_refs.resolve(token, chat)).audio_id == "u1"
        store = SqlAudioRefStore(app.history)
        await store.put(AudioRef("OldOldOldOld", "telegram", "9", "r", 1.0, time.time() - 1))
        assert await app.audio_refs.prune() == 1 and await store.get("OldOldOldOld") is None
        assert await app.history.forget_chat("telegram", "9") >= 1 and await store.get(token) is None
