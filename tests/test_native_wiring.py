"""One-tap actions wired end to end: Telegram's buttons under answers through the Bot API stand-in, the audio
references they carry kept in the database."""
from __future__ import annotations

import asyncio
import time

from bots.slack.blocks import HOME_LANGUAGE_ACTION, HOME_VOICE_ACTION
from bots.telegram.buttons import callback_data, parse_callback
from core.app import Earshot
from core.flow.audio_refs import AudioRef
from core.store.audio_ref_store import SqlAudioRefStore
from core.store.history import HistoryStore
from core.values import ChatKey, Task
from core.words import messages
from tests.conftest import CHANNEL, Harness, World, answers, reply_to, slack_running
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


# ---- Slack: shortcuts, the reaction, the Home tab, buttons under answers --------------------------------------

class HistoryOpen:
    """The app's database, opened beside it (WAL: another connection may read)."""

    def __init__(self, path: object) -> None:
        self.history = HistoryStore(str(path))

    async def __aenter__(self) -> HistoryStore:
        await self.history.open()
        return self.history

    async def __aexit__(self, *exc: object) -> None:
        await self.history.close()


def slack_clip(world: World, clip: bytes, channel: str = CHANNEL) -> dict:
    record = world.slack.add_file(clip)
    return world.slack.add_message(channel, {"user": "U0ALICE", "text": "listen", "files": [record]})


def in_thread(world: World, ts: str, pattern: str = "440Hz") -> list[dict]:
    return [p for p in answers(world.slack, pattern) if p.get("thread_ts") == ts]


async def test_a_shortcut_on_a_clip_answers_in_its_thread_and_its_buttons_ask_again(world: World, clip: bytes):
    message = slack_clip(world, clip)
    r = await world.post(world.slack.shortcut("earshot_transcribe", CHANNEL, message["ts"]))
    assert r.status_code == 200
    await world.idle()
    [answer] = in_thread(world, message["ts"])
    assert len(world.model.calls) == 1
    posted = world.slack.message(CHANNEL, answer["ts"])
    assert any(b.get("type") == "actions" for b in posted["blocks"])          # buttons under the answer
    r = await world.post(world.slack.press(CHANNEL, answer["ts"], "earshot_task_summarize"))
    assert r.status_code == 200
    await world.idle()
    assert len(in_thread(world, message["ts"])) == 2 and len(world.model.calls) == 2
    assert "summar" in " ".join(world.model.calls[-1].texts).lower()


async def test_a_shortcut_on_a_message_without_a_clip_is_told_only_to_the_user(world: World):
    message = world.slack.add_message(CHANNEL, {"user": "U0BOB", "text": "just words"})
    await world.post(world.slack.shortcut("earshot_summarize", CHANNEL, message["ts"]))
    assert [e["text"] for e in world.slack.ephemerals] == [messages.NOT_AUDIO] and not world.slack.posts


async def test_two_people_reacting_get_one_transcript(world: World, clip: bytes):
    message = slack_clip(world, clip)
    await world.event(world.slack.react(CHANNEL, message["ts"], user="U0ALICE"))
    await world.event(world.slack.react(CHANNEL, message["ts"], user="U0BOB"))
    await world.idle()
    await world.event(world.slack.react(CHANNEL, message["ts"], "thumbsup", user="U0CAROL"))
    await world.idle()
    assert len(in_thread(world, message["ts"])) == 1 and len(world.model.calls) == 1


async def test_two_people_reacting_at_the_same_moment_get_one_transcript(world: World, clip: bytes):
    message = slack_clip(world, clip)
    await asyncio.gather(world.event(world.slack.react(CHANNEL, message["ts"], user="U0ALICE")),
                         world.event(world.slack.react(CHANNEL, message["ts"], user="U0BOB")))
    await world.idle()
    assert len(in_thread(world, message["ts"])) == 1 and len(world.model.calls) == 1


async def test_anyone_the_bot_answers_in_a_group_may_tap(bot: Harness):
    answer = await transcript_with_buttons(bot, -304)
    query = bot.tg.push_callback(-304, answer["message_id"], button_for(answer, Task.SENTIMENT), user_id=999)
    assert reply_to((await bot.said(-304, 2))[1]) == answer["message_id"]
    assert query in bot.tg.callback_answers


async def test_the_home_tab_is_published_and_its_controls_change_the_settings(tmp_path):
    async with slack_running(tmp_path, model="qwen-omni-turbo") as world:       # a model that speaks
        await home_tab_controls(world)


async def test_spoken_answers_on_a_model_that_cannot_speak_say_why_and_stay_off(world: World):
    await world.event(world.slack.home_opened("U0ALICE"))
    await world.post(world.slack.press_home("U0ALICE", HOME_VOICE_ACTION, value="on"))
    [voice] = [b for b in world.slack.home_views["U0ALICE"]["blocks"] if b.get("block_id") == "earshot_home_voice"]
    assert voice["accessory"]["initial_option"]["value"] == "off"
    assert [p["channel"] for p in world.slack.posts] == [world.slack.home_opened("U0ALICE")["channel"]]


async def home_tab_controls(world: World) -> None:
    await world.event(world.slack.home_opened("U0ALICE"))
    view = world.slack.home_views["U0ALICE"]
    assert "Your usage today" in str(view["blocks"])
    r = await world.post(world.slack.press_home("U0ALICE", HOME_VOICE_ACTION, value="on"))
    assert r.status_code == 200, r.text
    assert not world.slack.posts, world.slack.posts
    chat = ChatKey("slack", world.slack.home_opened("U0ALICE")["channel"], None)
    async with HistoryOpen(world.settings.db_path) as history:
        assert await history.settings.voice(chat) is not None
    await world.post(world.slack.press_home("U0ALICE", HOME_LANGUAGE_ACTION, value="es"))
    view = world.slack.home_views["U0ALICE"]
    [voice] = [b for b in view["blocks"] if b.get("block_id") == "earshot_home_voice"]
    [lang] = [b for b in view["blocks"] if b.get("block_id") == "earshot_home_language"]
    assert voice["accessory"]["initial_option"]["value"] == "on"
    assert lang["accessory"]["initial_option"]["value"] == "es"


async def test_a_shortcut_where_the_app_cannot_post_answers_through_its_response_url(world: World, clip: bytes):
    message = slack_clip(world, clip)
    world.slack.failures["chat.postMessage"] = "not_in_channel"
    await world.post(world.slack.shortcut("earshot_transcribe", CHANNEL, message["ts"]))
    await world.idle()
    [response] = [r for r in world.slack.responses if "440Hz" in str(r)]
    assert response["response_type"] == "ephemeral" and not world.slack.posts


async def test_a_slack_button_on_forgotten_audio_tells_only_the_presser(world: World, clip: bytes):
    message = slack_clip(world, clip)
    await world.post(world.slack.shortcut("earshot_transcribe", CHANNEL, message["ts"]))
    await world.idle()
    [answer] = in_thread(world, message["ts"])
    async with HistoryOpen(world.settings.db_path) as history:
        await history.forget_chat("slack", CHANNEL)
    await world.post(world.slack.press(CHANNEL, answer["ts"], "earshot_task_summarize", user="U0BOB"))
    await world.idle()
    assert [(e["user"], e["text"]) for e in world.slack.ephemerals] == [("U0BOB", messages.AUDIO_EXPIRED)]
    assert len(world.model.calls) == 1
