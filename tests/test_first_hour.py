"""A newcomer's first hour (issue 20): terminal messages that name what to change, --no-cache, --speak checked
before anything is sent, budgets that agree with the longest audio allowed, terminal use outside the budgets."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from core.config import Settings
from core.model.catalog import MODELS, Job
from core.words import messages
from tests.audio_fixtures import make_clip
from tests.conftest import earshot, one_clean_line


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("first_hour") / "voice.ogg"
    make_clip(path, [(440, 0.5, 1.0), (660, 2.0, 1.0)], total_s=3.5, fmt="ogg")
    return path


# --- --no-cache -----------------------------------------------------------------------------------

def test_no_cache_asks_the_model_again_and_shows_a_wrong_key(earshot_env, threaded_model, clip):
    assert earshot(earshot_env, "summarize", clip).returncode == 0
    calls = len(threaded_model.calls)
    cached = earshot(earshot_env, "summarize", clip, "--json")
    assert cached.returncode == 0 and json.loads(cached.stdout)["cached"] is True
    assert len(threaded_model.calls) == calls
    # a cached answer hides a wrong key; --no-cache asks the model, which refuses it
    wrong = {**earshot_env, "DASHSCOPE_API_KEY": "sk-wrong"}
    assert earshot(wrong, "summarize", clip).returncode == 0
    p = earshot(wrong, "summarize", clip, "--no-cache")
    assert p.returncode == 4 and "DASHSCOPE_API_KEY" in one_clean_line(p.stderr)
    fresh = earshot(earshot_env, "summarize", clip, "--no-cache", "--json")
    assert fresh.returncode == 0 and json.loads(fresh.stdout)["cached"] is False


@pytest.mark.parametrize("command", ["transcribe", "summarize", "sentiment", "events", "ask", "translate"])
def test_every_one_shot_command_takes_no_cache(earshot_env, command):
    p = earshot(earshot_env, command, "--help")
    assert "--no-cache" in p.stdout


# --- terminal wording -----------------------------------------------------------------------------

def test_over_the_length_limit_names_the_setting(earshot_env, threaded_model, clip):
    p = earshot({**earshot_env, "EARSHOT_MAX_AUDIO_SECONDS": "2"}, "transcribe", clip)
    line = one_clean_line(p.stderr)
    assert p.returncode == 1 and "EARSHOT_MAX_AUDIO_SECONDS" in line and "Send" not in line
    assert threaded_model.calls == []


def test_over_the_size_limit_names_the_setting(earshot_env, threaded_model, clip):
    p = earshot({**earshot_env, "EARSHOT_MAX_FILE_MB": "0.001"}, "transcribe", clip)
    assert p.returncode == 1 and "EARSHOT_MAX_FILE_MB" in one_clean_line(p.stderr)


def test_a_private_link_names_the_setting(earshot_env, threaded_model):
    p = earshot(earshot_env, "transcribe", threaded_model.url + "/voice.ogg")
    assert p.returncode == 1 and "EARSHOT_URL_ALLOW_PRIVATE" in one_clean_line(p.stderr)
    assert threaded_model.calls == []


def test_a_directory_says_it_is_one(earshot_env, tmp_path):
    p = earshot(earshot_env, "transcribe", tmp_path)
    assert p.returncode == 1 and "is a directory" in one_clean_line(p.stderr)


def test_an_ftp_link_says_which_schemes_work(earshot_env):
    p = earshot(earshot_env, "transcribe", "ftp://example.com/note.ogg")
    line = one_clean_line(p.stderr)
    assert p.returncode == 1 and "https://" in line and "ftp://" in line and "No such file" not in line


def test_not_audio_is_worded_for_a_terminal(earshot_env, tmp_path):
    f = tmp_path / "notes.ogg"
    f.write_text("shopping list: milk, eggs\n" * 50)
    p = earshot(earshot_env, "transcribe", f)
    line = one_clean_line(p.stderr)
    assert p.returncode == 1 and "voice note" not in line and "Send" not in line


def test_terminal_texts_never_ask_to_send(earshot_env):
    for text in messages.TERMINAL.values():
        assert "Send" not in text and "voice note" not in text


# --- --speak ----------------------------------------------------------------------------------------

def test_speak_to_an_unwritable_place_is_refused_before_any_call(earshot_env, threaded_model, clip, tmp_path):
    omni = {**earshot_env, "EARSHOT_MODEL": "qwen3-omni-flash"}
    for target in (tmp_path / "missing" / "a.ogg", tmp_path):
        p = earshot(omni, "ask", clip, "--speak", target)
        assert p.returncode == 1 and "--speak" in one_clean_line(p.stderr), p.stderr
    if os.geteuid() != 0:     # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        p = earshot(omni, "ask", clip, "--speak", locked / "a.ogg")
        assert p.returncode == 1 and "not writable" in one_clean_line(p.stderr)
    assert threaded_model.calls == []


def test_a_model_that_cant_speak_names_the_setting_and_the_models_that_can(earshot_env, threaded_model, clip,
                                                                            tmp_path):
    p = earshot(earshot_env, "ask", clip, "--speak", tmp_path / "a.ogg")
    line = one_clean_line(p.stderr)
    assert p.returncode == 4 and "EARSHOT_MODEL" in line and "qwen3-omni-flash" in line
    assert threaded_model.calls == []


# --- budgets ----------------------------------------------------------------------------------------

def _cost(info, seconds: float) -> int:
    """What the pipeline weighs against the budgets before hearing `seconds` of audio (core.flow.service)."""
    from core.model.tokens import PROMPT_RESERVE
    assert info.window > 0, "a model that hears audio hears some of it per request"
    parts, left, total = 0, seconds, 0
    while left > 0:
        part = min(left, info.window)
        total += info.audio_tokens(part) + PROMPT_RESERVE
        left -= part
        parts += 1
    return total


def test_default_budgets_fit_the_longest_audio_allowed_on_every_model():
    s = Settings()
    for name, info in MODELS.items():
        if info.job is Job.TTS:           # a voice hears nothing: its text is charged, not audio
            continue
        assert _cost(info, s.max_audio_seconds) <= s.user_daily_tokens, name
    assert s.user_daily_tokens <= s.chat_daily_tokens <= s.global_daily_tokens


# --- durations in every language ----------------------------------------------------------------------

def test_no_locale_ends_a_sentence_on_a_doubled_stop():
    """German /usage said "16 Std. 4 Min..": a wait that ends in its own full stop, at a sentence's end."""
    from dataclasses import replace

    from core.flow.access import Allowance, UsageReport, usage_text
    from core.values import Usage
    from core.words import amounts
    from core.words.i18n import LANGUAGES
    report = UsageReport(here=Usage(1, 2, 3), user=Allowance(10, 100), chat=Allowance(10, 0),
                         everyone=Allowance(10, 0), resets_in=0, requests_per_minute=10)
    for lang in LANGUAGES:
        for seconds in (30, 600, 3600, 16 * 3600 + 4 * 60, 23 * 3600 + 59 * 60):
            wait = amounts.wait(seconds, lang)
            for text in (usage_text(replace(report, resets_in=seconds), lang=lang),
                         messages.text(messages.USER_BUDGET_USED, lang, limit=100, wait=wait),
                         messages.text(messages.RATE_LIMITED, lang, limit=3, wait=wait),
                         messages.text(messages.JOB_EXPIRED, lang, waited=amounts.rounded(seconds, lang))):
                assert ".." not in text and "。。" not in text, (lang, text)


# --- the terminal and the bots' budgets -------------------------------------------------------------

async def test_terminal_use_is_recorded_but_never_draws_on_the_bots_budgets(model, tmp_path):
    from core.flow.access import usage_text
    from core.flow.service import Assistant
    from core.values import Audio, ChatKey, Request, Sender, Task
    from tests.conftest import settings_for
    from tests.fakes.dashscope import tone_audio
    settings = settings_for(model, tmp_path, retry_budget=1, global_daily_tokens=1500, admin_users="9",
                            user_daily_tokens=0, chat_daily_tokens=0, cache_days=0)
    long = tone_audio((440, 1), (0, 28), (550, 1), (0, 28), (660, 1), (0, 5), fmt="ogg")   # ~2,600 tokens
    async with Assistant(settings) as a:
        terminal = await a.handle(Request(ChatKey("cli", "terminal"), Task.TRANSCRIBE, Audio(long)))
        assert terminal.usage.total > 1500
        chat = ChatKey("telegram", "9")
        await a.handle(Request(chat, Task.TRANSCRIBE, Audio(tone_audio((440, 1), fmt="ogg")), user_id="9"))
        report = await a.access.report(chat, Sender("9"), private=True)
        assert report.everyone.used < 1500 and report.terminal == terminal.usage.total
        said = usage_text(report)
        assert f"{terminal.usage.total:,} tokens today, outside these budgets" in said
        assert "terminal" not in usage_text(await a.access.report(ChatKey("telegram", "8"), Sender("8"),
                                                                  private=True))


# --- a model service that can't be reached ----------------------------------------------------------

def _closed_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("base", ["http://earshot-no-such-host.invalid/api/v1", "closed"])
def test_an_unreachable_model_service_fails_fast_naming_the_host_and_the_setting(earshot_env, clip, base):
    import time
    if base == "closed":
        base = f"http://127.0.0.1:{_closed_port()}/api/v1"
    started = time.monotonic()
    p = earshot({**earshot_env, "DASHSCOPE_HTTP_BASE_URL": base, "EARSHOT_RETRY_BUDGET": "60"},
                "transcribe", clip, "--no-cache")
    took = time.monotonic() - started
    line = one_clean_line(p.stderr)
    host = base.split("//")[1].split(":")[0].split("/")[0]
    assert p.returncode == 3 and host in line and "DASHSCOPE_HTTP_BASE_URL" in line, line
    assert took < 10, took


def test_a_host_that_never_answers_is_named_while_the_terminal_waits(earshot_env, clip):
    import pty
    import socket
    import subprocess

    from tests.test_cli import EARSHOT
    with socket.socket() as silent:          # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        master, slave = pty.openpty()
        env = {**earshot_env, "DASHSCOPE_HTTP_BASE_URL": f"http://127.0.0.1:{port}/api/v1",
               "EARSHOT_REQUEST_TIMEOUT": "11"}
        p = subprocess.run([EARSHOT, "transcribe", str(clip), "--no-cache"], env=env, stdout=subprocess.PIPE,
                           stderr=slave, timeout=60)
        os.close(slave)
        said = b""
        try:
            while chunk := os.read(master, 4096):
                said += chunk
        except OSError:
            pass
        os.close(master)
    text = said.decode(errors="replace")
    assert p.returncode == 3 and "waiting for 127.0.0.1…" in text, text


# --- summarize of a very long file ---------------------------------------------------------------------

async def test_a_long_summary_combines_in_rounds_within_the_models_input_limit(model, tmp_path):
    from core.flow.service import Assistant
    from core.values import Audio, ChatKey, Request, Task
    from tests.conftest import settings_for
    from tests.fakes.dashscope import tone_audio
    # every part's summary is long: thirteen of them are more than one request of qwen-audio-turbo-latest may read
    model.reply = lambda call: ("said: " + "words " * 600) if call.items else "one summary of the whole"
    long = tone_audio(*[seg for i in range(13) for seg in ((400 + 40 * i, 1), (0, 29))], fmt="ogg")
    async with Assistant(settings_for(model, tmp_path, retry_budget=1, cache_days=0)) as a:
        reply = await a.handle(Request(ChatKey("cli", "terminal"), Task.SUMMARIZE, Audio(long)))
    assert reply.text == "one summary of the whole"
    text_only = [c for c in model.calls if not c.items]
    assert len(text_only) >= 2 and all(c.status == 200 for c in model.calls)
    assert reply.usage.total == sum(sum(c.usage.values()) for c in model.calls)


# --- in the chats -----------------------------------------------------------------------------------

TOKEN = "AbCdEfGhIjKl"


def test_answer_buttons_are_in_the_chats_language():
    from bots.slack.blocks import answer_actions
    from bots.telegram.buttons import task_keyboard
    from core.values import Task
    rows = task_keyboard(TOKEN, Task.TRANSCRIBE, languages_open=True, lang="de").inline_keyboard
    assert [b.text for b in rows[0]] == ["Zusammenfassung", "Stimmung", "Geräusche", "Übersetzen"]
    assert "Englisch" in [b.text for row in rows[1:] for b in row]
    block = answer_actions(TOKEN, Task.TRANSCRIBE, lang="ja")
    texts = [e.get("text", e.get("placeholder", {})).get("text") for e in block["elements"]]
    assert texts == ["要約", "気分", "音", "翻訳"]
    assert block["elements"][-1]["options"][0]["text"]["text"] == "英語"
    english = task_keyboard(TOKEN, Task.TRANSCRIBE).inline_keyboard[0]
    assert [b.text for b in english] == ["Summary", "Mood", "Sounds", "Translate"]


async def test_telegram_buttons_under_an_answer_follow_the_senders_language(tmp_path):
    from tests.conftest import bot_running
    from tests.test_telegram import clip as tg_clip
    async with bot_running(tmp_path) as bot:
        bot.tg.push(901, kind="voice", data=tg_clip(440), caption="/transcribe", language_code="fr")
        [answer] = await bot.said(901, where=lambda m: bool(m.get("reply_markup")))
        labels = [b["text"] for row in answer["reply_markup"]["inline_keyboard"] for b in row]
        assert "Résumé" in labels and "Summary" not in labels, labels


async def test_telegram_unknown_command_names_the_closest_and_help(tmp_path):
    from tests.conftest import BOT, bot_running
    async with bot_running(tmp_path) as bot:
        bot.tg.push(902, text="/summary")
        [said] = await bot.said(902)
        assert "/summarize" in said["text"] and "/help" in said["text"], said["text"]
        bot.tg.push(903, text="/xyzzy", language_code="de")
        [said] = await bot.said(903)
        assert said["text"] == messages.text(messages.UNKNOWN_COMMAND_HELP, "de", command="xyzzy")
        # in a group, only a command addressed to earshot: others may be another bot's
        bot.tg.push(-904, text="/summary", chat_type="group")
        bot.tg.push(-904, text=f"/summary{BOT}", chat_type="group")
        [said] = await bot.said(-904)
        await bot.idle()
        assert len(bot.tg.texts(-904)) == 1 and "/summarize" in said["text"]


async def test_start_greets_briefly_and_digests_are_explained_in_groups_only(tmp_path):
    from core.words import help_texts
    from tests.conftest import bot_running
    async with bot_running(tmp_path) as bot:
        bot.tg.push(905, text="/start")
        [start] = await bot.said(905)
        assert start["text"] == help_texts.telegram_start(None) and len(start["text"]) < 250
        bot.tg.push(905, text="/help")
        private = (await bot.said(905, 2))[1]["text"]
        bot.tg.push(-906, text="/help", chat_type="group")
        group = (await bot.said(-906))[0]["text"]
        assert "/digest" not in private and "/digest on" in group


def test_slack_help_explains_digests_in_channels_only():
    from core.words import help_texts
    assert "digest on" in help_texts.slack_help(None, 30, group=True)
    assert "digest" not in help_texts.slack_help(None, 30, group=False)


def test_a_link_that_never_answers_names_the_timeout_setting(earshot_env):
    import socket
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/talk.mp3"
        p = earshot({**earshot_env, "EARSHOT_URL_ALLOW_PRIVATE": "1", "EARSHOT_URL_TIMEOUT": "1"}, "transcribe", url)
    assert p.returncode == 1 and "EARSHOT_URL_TIMEOUT" in one_clean_line(p.stderr)
