"""The bots speak the user's language: Telegram's language_code, a Slack user's locale, a chat's /lang;
and the model is asked to write in it. Through the stand-ins, with the real client libraries."""
from __future__ import annotations

from core.words import help_texts, messages
from tests.conftest import CHANNEL, Harness, World
from tests.fakes.dashscope import tone_audio
from tests.fakes.slack import slash_body


async def test_help_from_a_german_speaking_telegram_user_is_german(bot: Harness):
    bot.tg.push(501, text="/help", language_code="de")
    [answer] = await bot.said(501)
    assert answer["text"].startswith(help_texts.telegram_help("de", 7, with_lang=True).split("\n")[0])
    assert answer["text"] != help_texts.telegram_help(None, 7, with_lang=True)
    assert "/lang" in answer["text"]


async def test_lang_ja_makes_summaries_and_the_bots_words_japanese(bot: Harness):
    bot.tg.push(502, text="/lang ja", language_code="en")
    [set_to] = await bot.said(502)
    assert set_to["text"] == messages.text(messages.LANG_SET, "ja", language="日本語")
    bot.tg.push(502, text="/summarize")                 # no audio yet: said in Japanese
    bot.tg.push(502, kind="voice", data=tone_audio((0, 0.5), (440, 1.0), (0, 0.5), fmt="ogg"))
    said = await bot.said(502, 3)
    assert said[1]["text"] == messages.text(messages.NO_AUDIO_YET, "ja") != messages.NO_AUDIO_YET
    bot.tg.push(502, text="/summarize")
    await bot.said(502, 4)
    assert any("Write in Japanese." in t for t in bot.ds.calls[-1].texts)


async def test_the_command_menu_is_set_in_each_language(bot: Harness):
    bot.tg.push(503, text="/help")
    await bot.said(503)
    assert [c["command"] for c in bot.tg.commands] == [n for n, _ in help_texts.telegram_commands(None,
                                                                                                   with_lang=True)]
    assert set(bot.tg.menus) == {"", *help_texts.TELEGRAM_MENU_LANGUAGES}
    for code, lang in help_texts.TELEGRAM_MENU_LANGUAGES.items():
        assert [(c["command"], c["description"]) for c in bot.tg.menus[code]] == \
            help_texts.telegram_commands(lang, with_lang=True)
    assert bot.tg.menus["de"] != bot.tg.menus[""]


async def test_a_slack_user_whose_slack_is_in_french_gets_french_help(world: World) -> None:
    world.slack.add_user("U0LEA", "Léa", locale="fr-FR")

    async def say(text: str, user: str = "U0LEA") -> str:
        r = await world.post(slash_body(text, channel=CHANNEL, user=user, response_url=world.slack.response_url()))
        assert r.status_code == 200
        return r.text
    french = help_texts.slack_help("fr", 7, with_lang=True).split("\n")[0]
    assert french != help_texts.slack_help(None, 7).split("\n")[0] and french in await say("help")
    assert messages.text(messages.NEED_LANGUAGE, "fr") in await say("translate")
    assert messages.NEED_LANGUAGE in await say("translate", user="U0ALICE"), "others keep their own language"
    assert messages.text(messages.LANG_SET, "ja", language="日本語") in await say("lang ja")
    assert messages.text(messages.NEED_LANGUAGE, "ja") in await say("translate", user="U0ALICE")
