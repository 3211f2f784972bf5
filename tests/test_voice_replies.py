"""Spoken answers in the chat apps: `/voice on` in Telegram brings voice notes back (OGG/Opus, text as the
caption), `/earshot voice on` in Slack uploads the answer into the thread; `/voice off` returns to text."""
from __future__ import annotations

import subprocess

import imageio_ffmpeg

from core.words import messages
from tests.conftest import CHANNEL, answers, bot_running, reply_to, slack_running
from tests.fakes.dashscope import tone_audio
from tests.fakes.slack import BOT_USER_ID, FakeSlack, slash_body
from tests.test_telegram import clip
from tests.waiting import until


def plays_as_opus(ogg: bytes) -> bool:
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-f", "ogg", "-i", "pipe:0",
                            "-f", "null", "-"], input=ogg, capture_output=True)
    return probe.returncode == 0 and b"Audio: opus" in probe.stderr


async def test_telegram_voice_on_answers_a_voice_note_with_a_voice_note(tmp_path):
    async with bot_running(tmp_path, model="qwen3-omni-flash") as bot:
        bot.tg.push(301, text="/voice on ethan")
        await bot.said(301, where=lambda m: m.get("text") == messages.VOICE_ON.format(voice="Ethan"))
        mid = bot.tg.push(301, kind="voice", data=clip(440))
        [voice] = await bot.said(301, where=lambda m: "voice" in m)
        assert "440Hz" in voice["caption"] and reply_to(voice) == mid
        [sent] = bot.tg.voices
        assert plays_as_opus(sent["ogg"]) and bot.ds.calls[-1].voice == "Ethan"

        bot.ds.reply = lambda call: "A long answer. " * 100      # over a caption's 1,024 characters
        bot.tg.push(301, text="/ask what is it?")
        [follow] = await bot.said(301, where=lambda m: m.get("text", "").startswith("A long answer."))
        long_voice = [m for m in bot.tg.said(301) if "voice" in m][-1]
        assert "caption" not in long_voice and len(bot.tg.voices) == 2
        assert reply_to(follow) == long_voice["message_id"]

        bot.ds.reply = None
        bot.tg.push(301, text="/voice off")
        await bot.said(301, where=lambda m: m.get("text") == messages.VOICE_OFF)
        bot.tg.push(301, kind="voice", data=clip(660))
        await bot.said(301, where=lambda m: "660Hz" in m.get("text", ""))
        assert len(bot.tg.voices) == 2 and bot.ds.calls[-1].voice is None


async def test_telegram_voice_on_a_model_that_cannot_speak_says_so(tmp_path):
    async with bot_running(tmp_path) as bot:                    # Qwen-Audio: text only
        bot.tg.push(302, text="/voice on")
        [said] = await bot.said(302)
        assert "can't speak" in said["text"]
        bot.tg.push(302, kind="voice", data=clip(440))
        await bot.said(302, n=2)
        assert not bot.tg.voices and "440Hz" in bot.tg.texts(302)[-1]


async def test_slack_voice_on_uploads_the_spoken_answer_into_the_thread(tmp_path):
    async with slack_running(tmp_path, model="qwen-omni-turbo") as world:
        slack, model = world.slack, world.model
        r = await world.post(slash_body("voice on Serena", channel=CHANNEL,
                                        response_url=slack.response_url()))
        assert r.status_code == 200 and "Serena" in r.text

        async def mention(hz: int) -> str:
            record = slack.add_file(tone_audio((0, 0.5), (hz, 1.0), (0, 0.7), fmt="webm"))
            ts = slack.ts()
            await world.event({"type": "app_mention", "channel": CHANNEL, "user": "U0ALICE", "ts": ts,
                               "text": f"<@{BOT_USER_ID}>", "files": [FakeSlack.event_file(record)]})
            return ts

        ts = await mention(440)
        [upload] = await until(lambda: slack.uploads)
        assert upload["channel"] == CHANNEL and upload["thread_ts"] == ts
        assert plays_as_opus(upload["data"]) and model.calls[-1].voice == "Serena"
        [text] = answers(slack, "440Hz")
        assert text["thread_ts"] == ts                       # the words too, in the same thread

        r = await world.post(slash_body("voice off", channel=CHANNEL, response_url=slack.response_url()))
        assert messages.VOICE_OFF in r.text
        await mention(660)
        await until(lambda: answers(slack, "660Hz"))
        assert len(slack.uploads) == 1 and model.calls[-1].voice is None
