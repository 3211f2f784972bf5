"""/model: a chat switches among the models the operator allows (EARSHOT_MODELS), and its requests go to that
model with that model's window. Telegram's bot end to end, against the stand-ins."""
from __future__ import annotations

import pytest

from core.config import Settings
from core.words import messages
from tests.conftest import CHANNEL, bot_running, slack_running
from tests.fakes.dashscope import heard, tone_audio
from tests.fakes.slack import slash_body

ALLOWED = "qwen-audio-turbo-latest, qwen3-omni-flash"


def test_earshot_models_lists_the_default_first() -> None:
    assert Settings(model="qwen-audio-turbo-latest").models == ("qwen-audio-turbo-latest",)
    assert Settings(model="qwen-audio-turbo-latest", allowed_models="qwen3-omni-flash, qwen-omni-turbo").models == \
        ("qwen-audio-turbo-latest", "qwen3-omni-flash", "qwen-omni-turbo")


async def test_a_chat_switches_to_an_allowed_model_and_its_next_request_goes_there(tmp_path) -> None:
    async with bot_running(tmp_path, allowed_models=ALLOWED) as bot:
        bot.tg.push(601, text="/model")
        bot.tg.push(601, text="/model gpt-4o")
        bot.tg.push(601, text="/model qwen3-omni-flash")
        said = [m["text"] for m in await bot.said(601, 3)]
        models = "qwen-audio-turbo-latest, qwen3-omni-flash"
        assert said[0] == messages.text(messages.MODEL_CURRENT, None, model="qwen-audio-turbo-latest",
                                        models=models, prefix="/")
        assert said[1] == messages.text(messages.MODEL_UNKNOWN, None, model="gpt-4o", models=models)
        assert said[2] == messages.text(messages.MODEL_SET, None, model="qwen3-omni-flash")
        note = tone_audio((0, 1.0), (440, 1.5), (0, 38.0), (660, 1.5), (0, 53.0), fmt="ogg")     # 95 s
        bot.tg.push(601, kind="voice", data=note, duration=95)
        answer = (await bot.said(601, 4, within=30))[3]["text"]
        assert heard(answer) == [440, 660]
        [call] = [c for c in bot.ds.calls if c.items]      # one request: Qwen3-Omni hears 95 s at once
        assert call.api == "compat" and call.items[0].duration == pytest.approx(95, abs=0.5)
        bot.tg.push(601, text="/model")
        assert (await bot.said(601, 5))[4]["text"].startswith("This chat uses qwen3-omni-flash.")


async def test_only_a_groups_admins_switch_its_model(tmp_path) -> None:
    group = -100601
    async with bot_running(tmp_path, allowed_models=ALLOWED) as bot:
        bot.tg.set_member(group, 11, "member")
        bot.tg.set_member(group, 12, "administrator")
        bot.tg.push(group, user_id=11, chat_type="group", text="/model qwen3-omni-flash")
        [refused] = await bot.said(group)
        assert refused["text"] == messages.text(messages.MODEL_ADMINS_ONLY, None)
        bot.tg.push(group, user_id=12, chat_type="group", text="/model qwen3-omni-flash", language_code="de")
        switched = (await bot.said(group, 2))[1]["text"]
        assert switched == messages.text(messages.MODEL_SET, "de", model="qwen3-omni-flash")


async def test_slack_workspace_admins_switch_a_channels_model(tmp_path) -> None:
    async with slack_running(tmp_path, allowed_models=ALLOWED) as world:
        world.slack.add_user("U0BOSS", "Boss", admin=True, locale="fr-FR")

        async def say(text: str, user: str) -> str:
            r = await world.post(slash_body(text, channel=CHANNEL, user=user, response_url=world.slack.response_url()))
            assert r.status_code == 200
            return r.text
        assert messages.MODEL_ADMINS_ONLY in await say("model qwen3-omni-flash", "U0ALICE")
        assert "qwen-audio-turbo-latest, qwen3-omni-flash" in await say("model klingon-1", "U0ALICE")
        assert messages.text(messages.MODEL_SET, "fr", model="qwen3-omni-flash") in \
            await say("model qwen3-omni-flash", "U0BOSS")
        assert (await say("model", "U0ALICE")).startswith("This chat uses qwen3-omni-flash.")
