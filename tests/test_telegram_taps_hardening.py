"""Telegram: taps that aren't what they seem (a forged callback_data, a tap on a message too old for Telegram to
include), and long answers whose delivery fails half-way. Each test failed before its fix (issue 21)."""
from __future__ import annotations

import html

import pytest
from telegram import CallbackQuery, InaccessibleMessage, MaybeInaccessibleMessage, Update, User

from bots.telegram.buttons import callback_data, parse_callback
from core.values import Task
from core.words import messages
from tests.conftest import Harness, bot_running, reply_to
from tests.fakes.dashscope import FakeDashScope
from tests.test_native_wiring import VOICE, button_for, buttons, transcript_with_buttons
from tests.waiting import until

FORGED_TOKEN = "ZzZzZzZzZzZz"


# ---- a forged tap -------------------------------------------------------------------------------------------

async def test_a_forged_tap_is_told_off_and_leaves_the_answers_buttons(bot: Harness):
    answer = await transcript_with_buttons(bot, 311)
    keyboard = bot.tg.markup_of(311, answer["message_id"])
    data = callback_data(FORGED_TOKEN, Task.SUMMARIZE)
    assert parse_callback(data) is not None and data not in buttons(answer)      # well formed, but not offered
    query = bot.tg.push_callback(311, answer["message_id"], data, forged=True, user_id=666)
    await until(lambda: query in bot.tg.callback_answers, 10, "the forged tap to be answered")
    await bot.idle()
    assert bot.tg.callback_answers[query].get("text") == messages.AUDIO_EXPIRED
    assert bot.tg.markup_of(311, answer["message_id"]) == keyboard and not bot.tg.markup_edits
    assert len(bot.tg.said(311)) == 1


async def test_a_real_button_on_forgotten_audio_still_loses_the_buttons(bot: Harness):
    answer = await transcript_with_buttons(bot, 312)
    await bot.earshot.audio_refs.forget_chat("telegram", "312")
    query = bot.tg.push_callback(312, answer["message_id"], button_for(answer, Task.SUMMARIZE))
    await until(lambda: bot.tg.markup_of(312, answer["message_id"]) is None, 10, "the buttons to go")
    assert bot.tg.callback_answers[query].get("text") == messages.AUDIO_EXPIRED


# ---- a tap on a message too old to be included (Bot API 7.0: InaccessibleMessage, date 0) ----------------------

async def test_a_tap_on_an_old_answer_as_telegram_sends_it_still_gets_its_answer(bot: Harness):
    answer = await transcript_with_buttons(bot, 313)
    query = bot.tg.push_callback(313, answer["message_id"], button_for(answer, Task.SUMMARIZE), inaccessible=True)
    assert bot.tg.callback_queries[query]["message"]["date"] == 0
    summary = (await bot.said(313, 2))[1]
    assert reply_to(summary) == answer["message_id"] and "440Hz" in summary["text"]
    assert query in bot.tg.callback_answers and "text" not in bot.tg.callback_answers[query]


# PTB's CommandHandler notes that Update.effective_message skips an InaccessibleMessage: true, and not ours
@pytest.mark.filterwarnings("ignore:.*InaccessibleMessage.*")
async def test_a_tap_on_an_old_answer_parsed_as_an_inaccessible_message_still_gets_its_answer(bot: Harness):
    """What python-telegram-bot's next releases give the handler for the same update: an InaccessibleMessage."""
    answer = await transcript_with_buttons(bot, 314)
    raw = bot.tg.callback_update(314, answer["message_id"], button_for(answer, Task.SENTIMENT), inaccessible=True)
    tg_bot = bot.app.bot
    data = raw["callback_query"]
    old = MaybeInaccessibleMessage.de_json(data["message"], tg_bot)
    assert isinstance(old, InaccessibleMessage)
    query = CallbackQuery(data["id"], User.de_json(data["from"], tg_bot), data["chat_instance"], message=old,
                          data=data["data"])
    query.set_bot(tg_bot)
    await bot.app.process_update(Update(raw["update_id"], callback_query=query))
    later = (await bot.said(314, 2))[1]
    assert reply_to(later) == answer["message_id"]
    assert bot.tg.callback_answers[data["id"]].get("text") is None


async def test_translate_on_an_old_answer_opens_the_language_row(bot: Harness):
    answer = await transcript_with_buttons(bot, 315)
    bot.tg.push_callback(315, answer["message_id"], button_for(answer, Task.TRANSLATE), inaccessible=True)
    await until(lambda: len(buttons(bot.tg.messages[(315, answer["message_id"])])) > 4, 10, "the language row")


async def test_a_forged_tap_on_an_old_message_is_told_off_and_leaves_it(bot: Harness):
    answer = await transcript_with_buttons(bot, 316)
    query = bot.tg.push_callback(316, answer["message_id"], callback_data(FORGED_TOKEN, Task.EVENTS), forged=True,
                                 inaccessible=True)
    await until(lambda: query in bot.tg.callback_answers, 10, "the tap to be answered")
    await bot.idle()
    assert bot.tg.callback_answers[query].get("text") == messages.AUDIO_EXPIRED and not bot.tg.markup_edits


# ---- a long answer whose delivery fails half-way ---------------------------------------------------------------

LONG = "\n\n".join(f"Paragraph {i}: " + "words and more words, " * 60 for i in range(6))


def long_model() -> FakeDashScope:
    ds = FakeDashScope(api_key="sk-test")
    ds.reply = lambda call: LONG
    return ds


def pieces(bot: Harness, chat: int) -> list[str]:
    return [html.unescape(m["text"]) for m in bot.tg.said(chat) if m.get("text", "").startswith("Paragraph")
            or "words and more" in m.get("text", "")]


async def test_a_long_answer_whose_second_piece_fails_is_resumed_not_resent(tmp_path):
    async with bot_running(tmp_path, ds=long_model()) as bot:
        bot.tg.fail("sendMessage", 500, "Internal Server Error", after=1)      # the first piece goes out
        mid = bot.tg.push(321, kind="voice", data=VOICE)
        await bot.idle(within=60)
        sent = pieces(bot, 321)
        assert len(sent) >= 2 and len(sent) == len(set(sent)), [s[:20] for s in sent]
        assert " ".join(" ".join(sent).split()) == " ".join(LONG.split())         # every word, once, in order
        assert reply_to(bot.tg.said(321)[0]) == mid


async def test_a_failed_transcript_file_is_sent_again_without_the_text(tmp_path):
    async with bot_running(tmp_path, ds=long_model()) as bot:
        bot.tg.fail("sendDocument", 500, "Internal Server Error", after=1)     # the .txt goes, the .srt fails once
        bot.tg.push(322, kind="voice", data=VOICE, caption="/transcribe")
        await bot.idle(within=60)
        sent = pieces(bot, 322)
        assert len(sent) >= 2 and len(sent) == len(set(sent))
        assert [d["file_name"] for d in bot.tg.documents(322)] == ["transcript.txt", "transcript.srt"]
