"""One-tap actions in Telegram: the inline buttons under an answer (bots/telegram/buttons.py), and the Bot API
stand-in's callback queries, answerCallbackQuery and editMessageReplyMarkup, driven by python-telegram-bot."""
from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Update
from telegram.error import BadRequest
from telegram.request import HTTPXRequest

from bots.telegram.buttons import CALLBACK_LIMIT, LANGUAGES, ButtonPress, callback_data, parse_callback, task_keyboard
from core.errors import AudioExpired
from core.flow.audio_refs import AudioRefs, MemoryAudioRefStore
from core.values import ChatKey, Task
from core.words import messages
from tests.fakes.server import Served
from tests.fakes.telegram import FakeTelegram, reply_markup_problem

TOKEN = "AbCdEfGhIjKl"


async def tapped(bot: Bot) -> Update:
    """The newest update: the tap (the user's own messages came before it)."""
    updates = await bot.get_updates(timeout=1)
    assert updates[-1].callback_query is not None
    return updates[-1]


def labels(markup: InlineKeyboardMarkup) -> list[list[str]]:
    return [[b.text for b in row] for row in markup.inline_keyboard]


# ---- the builders ----------------------------------------------------------------------------------------

def test_the_row_offers_every_other_task_for_the_same_audio() -> None:
    assert labels(task_keyboard(TOKEN, Task.TRANSCRIBE)) == [["Summary", "Mood", "Sounds", "Translate"]]
    assert labels(task_keyboard(TOKEN, Task.SUMMARIZE)) == [["Transcript", "Mood", "Sounds", "Translate"]]
    assert labels(task_keyboard(TOKEN, Task.ASK)) == [["Transcript", "Summary", "Mood", "Sounds", "Translate"]]


def test_translate_opens_rows_of_languages_under_the_tasks() -> None:
    markup = task_keyboard(TOKEN, Task.TRANSCRIBE, languages_open=True)
    rows = labels(markup)
    assert rows[0] == ["Summary", "Mood", "Sounds", "Translate"]
    assert [n for row in rows[1:] for n in row] == [name for _, name in LANGUAGES]
    presses = [parse_callback(b.callback_data) for row in markup.inline_keyboard[1:] for b in row]
    assert presses[1] == ButtonPress(TOKEN, Task.TRANSLATE, "Spanish")


def test_callback_data_is_a_short_token_never_a_file_id_and_parses_back() -> None:
    for row in task_keyboard(TOKEN, None, languages_open=True).inline_keyboard:
        for button in row:
            data = str(button.callback_data)
            assert 1 <= len(data.encode()) <= CALLBACK_LIMIT and TOKEN in data
            press = parse_callback(data)
            assert press is not None and press.token == TOKEN
    assert parse_callback(callback_data(TOKEN, Task.EVENTS)) == ButtonPress(TOKEN, Task.EVENTS)
    translate = parse_callback(callback_data(TOKEN, Task.TRANSLATE))
    assert translate is not None and translate.choose_language
    with pytest.raises(ValueError):
        callback_data("voice-1-fid:AgADBAADr6cxG" * 3, Task.SUMMARIZE)


@pytest.mark.parametrize("data", [None, "", "e1", "e1:su", "e9:su:" + TOKEN, "e1:zz:" + TOKEN, "e1:su:bad token",
                                  "e1:su:" + TOKEN + ":en", "e1:tr:" + TOKEN + ":xx", "e1:tr:" + TOKEN + ":en:x",
                                  "/start", "x" * 64])
def test_anything_else_parses_to_none(data: str | None) -> None:
    assert parse_callback(data) is None


# ---- the stand-in, through python-telegram-bot -----------------------------------------------------------

@pytest.fixture
async def tg() -> AsyncIterator[tuple[FakeTelegram, Bot]]:
    fake = FakeTelegram()
    async with Served(fake.app) as served:
        bot = Bot(fake.token, base_url=f"{served.url}/bot", base_file_url=f"{served.url}/file/bot",
                  request=HTTPXRequest(connection_pool_size=4))
        async with bot:
            yield fake, bot


async def test_a_tap_arrives_as_a_real_callback_query_and_its_answer_stops_the_spinner(tg) -> None:
    fake, bot = tg
    refs = AudioRefs(MemoryAudioRefStore(), keep_seconds=3600)
    voice = fake.push(501, kind="voice", data=b"OggS")
    token = await refs.mint(ChatKey("telegram", "501"), "voice-ref")
    answer = await bot.send_message(501, "the transcript", reply_to_message_id=voice,
                                    reply_markup=task_keyboard(token, Task.TRANSCRIBE))
    assert answer.reply_markup is not None and labels(answer.reply_markup)[0][0] == "Summary"

    query_id = fake.push_callback(501, answer.message_id, callback_data(token, Task.SUMMARIZE))
    update = await tapped(bot)
    query = update.callback_query
    assert query is not None and query.id == query_id and query.from_user.id == 501
    assert query.chat_instance and query.message is not None and query.message.message_id == answer.message_id
    assert query.message.reply_markup == answer.reply_markup                    # the keyboard it was tapped on
    press = parse_callback(query.data)
    assert press == ButtonPress(token, Task.SUMMARIZE)
    assert (await refs.resolve(press.token, ChatKey("telegram", str(query.message.chat.id)))).ref == "voice-ref"

    assert fake.unanswered_callbacks() == [query_id]                              # still spinning
    assert await query.answer()
    assert fake.unanswered_callbacks() == []
    with pytest.raises(BadRequest, match="(?i)query is too old"):
        await query.answer("again")


async def test_a_tap_on_expired_audio_is_answered_with_the_reason_and_loses_its_buttons(tg) -> None:
    fake, bot = tg
    refs = AudioRefs(MemoryAudioRefStore(), keep_seconds=3600)
    fake.push(501, kind="voice", data=b"OggS")
    token = await refs.mint(ChatKey("telegram", "501"), "voice-ref")
    answer = await bot.send_message(501, "transcript", reply_markup=task_keyboard(token, Task.TRANSCRIBE))
    await refs.forget_chat("telegram", "501")                                    # /forget
    fake.push_callback(501, answer.message_id, callback_data(token, Task.SUMMARIZE))
    query = (await tapped(bot)).callback_query
    press = parse_callback(query.data)
    with pytest.raises(AudioExpired) as gone:
        await refs.resolve(press.token, ChatKey("telegram", "501"))
    assert await query.answer(gone.value.user_message, show_alert=True)         # fits the 200 characters
    await bot.edit_message_reply_markup(501, answer.message_id, reply_markup=None)
    assert fake.unanswered_callbacks() == [] and fake.markup_of(501, answer.message_id) is None
    assert fake.callback_answers[query.id]["text"] == messages.AUDIO_EXPIRED


async def test_a_bot_that_asks_for_messages_only_never_sees_a_tap(tg) -> None:
    fake, bot = tg
    fake.push(501, kind="voice", data=b"OggS")
    answer = await bot.send_message(501, "summary", reply_markup=task_keyboard(TOKEN, Task.SUMMARIZE))
    fake.push_callback(501, answer.message_id, callback_data(TOKEN, Task.TRANSCRIBE))
    updates = await bot.get_updates(timeout=0, allowed_updates=[Update.MESSAGE])
    assert [u.callback_query for u in updates] == [None]
    updates = await bot.get_updates(timeout=0, allowed_updates=[Update.MESSAGE, Update.CALLBACK_QUERY])
    assert updates[-1].callback_query is not None


async def test_a_group_member_may_tap_a_button_under_someone_elses_answer(tg) -> None:
    fake, bot = tg
    group = -100500
    fake.push(group, user_id=11, chat_type="supergroup", kind="voice", data=b"OggS")
    answer = await bot.send_message(group, "summary", reply_markup=task_keyboard(TOKEN, Task.SUMMARIZE))
    fake.push_callback(group, answer.message_id, callback_data(TOKEN, Task.TRANSCRIBE), user_id=22,
                       username="bob")
    update = await tapped(bot)
    assert update.callback_query.from_user.username == "bob"
    assert update.callback_query.message.chat.type == "supergroup"
    with pytest.raises(AssertionError):                  # only buttons the message has can be tapped
        fake.push_callback(group, answer.message_id, "e1:ev:somethingelse")


async def test_translate_shows_the_language_row_by_editing_the_keyboard(tg) -> None:
    fake, bot = tg
    fake.push(501, kind="voice", data=b"OggS")
    answer = await bot.send_message(501, "transcript", reply_markup=task_keyboard(TOKEN, Task.TRANSCRIBE))
    await bot.edit_message_reply_markup(501, answer.message_id,
                                        reply_markup=task_keyboard(TOKEN, Task.TRANSCRIBE, languages_open=True))
    shown = fake.markup_of(501, answer.message_id)
    assert shown is not None and len(shown["inline_keyboard"]) > 1
    with pytest.raises(BadRequest, match="not modified"):
        await bot.edit_message_reply_markup(501, answer.message_id,
                                            reply_markup=task_keyboard(TOKEN, Task.TRANSCRIBE, languages_open=True))
    await bot.edit_message_reply_markup(501, answer.message_id, reply_markup=None)   # expired audio: no buttons
    assert fake.markup_of(501, answer.message_id) is None
    assert len(fake.markup_edits) == 2


async def test_editing_the_text_without_a_keyboard_drops_the_buttons_as_telegram_does(tg) -> None:
    fake, bot = tg
    fake.push(501, text="hi")
    status = await bot.send_message(501, "Listening…", reply_markup=task_keyboard(TOKEN))
    await bot.edit_message_text("the answer", 501, status.message_id)
    assert fake.markup_of(501, status.message_id) is None
    await bot.edit_message_text("the answer, again", 501, status.message_id, reply_markup=task_keyboard(TOKEN))
    assert fake.markup_of(501, status.message_id) is not None


@pytest.mark.parametrize("button, problem", [
    (InlineKeyboardButton("Summary", callback_data="x" * 65), "BUTTON_DATA_INVALID"),
    (InlineKeyboardButton("Summary", callback_data="ü" * 33), "BUTTON_DATA_INVALID"),      # 66 bytes
    (InlineKeyboardButton("", callback_data="e1"), "BUTTON_TEXT_EMPTY"),
    (InlineKeyboardButton("Summary"), "Text buttons are unallowed"),
])
async def test_keyboards_are_checked_as_telegram_checks_them(tg, button, problem) -> None:
    fake, bot = tg
    fake.push(501, kind="voice", data=b"OggS")
    with pytest.raises(BadRequest, match="(?i)" + problem):
        await bot.send_message(501, "answer", reply_markup=InlineKeyboardMarkup([[button]]))
    with pytest.raises(BadRequest, match="(?i)" + problem):
        await bot.send_document(501, InputFile(b"transcript", filename="t.txt"),
                                reply_markup=InlineKeyboardMarkup([[button]]))
    assert fake.texts(501) == [] and fake.documents(501) == []


async def test_documents_carry_the_buttons_too(tg) -> None:
    fake, bot = tg
    fake.push(501, kind="voice", data=b"OggS")
    sent = await bot.send_document(501, InputFile(b"transcript", filename="t.txt"),
                                   reply_markup=task_keyboard(TOKEN, Task.TRANSCRIBE))
    assert fake.markup_of(501, sent.message_id) == task_keyboard(TOKEN, Task.TRANSCRIBE).to_dict()


def test_the_keyboard_check_accepts_every_keyboard_the_builders_make() -> None:
    for task in (None, *Task):
        for opened in (False, True):
            assert reply_markup_problem(task_keyboard(TOKEN, task, languages_open=opened).to_dict()) is None
