"""`earshot doctor` as an operator runs it: a subprocess against the DashScope, Telegram and Slack stand-ins."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.dashscope import FakeDashScope
from tests.fakes.discord import FakeDiscord
from tests.fakes.server import Threaded
from tests.fakes.slack import BOT_SCOPES, FakeSlack
from tests.fakes.telegram import FakeTelegram
from tests.fakes.whatsapp import SHOWN_NUMBER, VERSION, FakeWhatsApp

EARSHOT = str(Path(sys.executable).with_name("earshot"))
KEY = "sk-doctor-test-key"
SIGNING_SECRET = "doctor-signing-secret-8f3a"


@pytest.fixture(scope="module")
def services():
    ds, tg, sl = FakeDashScope(api_key=KEY, inspect=False), FakeTelegram(), FakeSlack()
    dc, wa = FakeDiscord(), FakeWhatsApp()
    with Threaded(ds.app) as dss, Threaded(tg.app) as tgs, Threaded(sl.app) as sls, Threaded(dc.app) as dcs, \
            Threaded(wa.app) as was:
        sl.url, wa.url = sls.url, was.url
        yield {"ds": (ds, dss), "tg": (tg, tgs), "sl": (sl, sls), "dc": (dc, dcs), "wa": (wa, was)}


@pytest.fixture
def env(services, tmp_path) -> dict[str, str]:
    (_, dss), (tg, tgs), (sl, sls), (wa, was) = services["ds"], services["tg"], services["sl"], services["wa"]
    tgs.call(lambda: setattr(tg, "webhook", None))
    sls.call(lambda: setattr(sl, "scopes", list(BOT_SCOPES)))
    dc, dcs = services["dc"]
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("TELEGRAM_", "SLACK_", "DASHSCOPE_", "EARSHOT_", "DISCORD_"))}
    return e | {"DASHSCOPE_API_KEY": KEY, "DASHSCOPE_HTTP_BASE_URL": dss.url + "/api/v1",
                "EARSHOT_DB": str(tmp_path / "data" / "earshot.db"),
                "TELEGRAM_BOT_TOKEN": tg.token, "TELEGRAM_API_BASE_URL": tgs.url,
                "SLACK_BOT_TOKEN": sl.token, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": sls.url + "/api/",
                "DISCORD_BOT_TOKEN": dc.token, "DISCORD_API_URL": dcs.url + "/api/v10",
                "WHATSAPP_ACCESS_TOKEN": wa.token, "WHATSAPP_PHONE_NUMBER_ID": wa.phone_number_id,
                "WHATSAPP_APP_SECRET": "doctor-app-secret", "WHATSAPP_VERIFY_TOKEN": "doctor-verify",
                "WHATSAPP_API_URL": f"{was.url}/{VERSION}"}


def doctor(env: dict[str, str], *args: str) -> tuple[int, dict[str, str]]:
    """Exit status and {check name: its line}; fails the test if any secret shows."""
    p = subprocess.run([EARSHOT, "doctor", *args], env=env, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in p.stderr, p.stderr
    for secret in (KEY, SIGNING_SECRET, env.get("TELEGRAM_BOT_TOKEN"), env.get("SLACK_BOT_TOKEN"),
                   env.get("SLACK_APP_TOKEN"), env.get("DISCORD_BOT_TOKEN"),
                   env.get("WHATSAPP_ACCESS_TOKEN"), env.get("WHATSAPP_APP_SECRET")):
        if secret:
            assert secret not in p.stdout + p.stderr
    lines = {line[2:].split(":", 1)[0]: line for line in p.stdout.splitlines() if line.strip()}
    return p.returncode, lines


def test_every_check_passes_against_working_services(env, services):
    code, lines = doctor(env)
    assert code == 0, lines
    assert set(lines) == {"ffmpeg", "database", "model qwen-audio-turbo-latest", "Telegram getMe", "Telegram webhook",
                          "Slack auth.test", "Slack scopes", "Slack mode", "Discord GET /users/@me",
                          "Discord message content intent", "Discord invite", "WhatsApp number", "WhatsApp webhook",
                          "chat model qwen-audio-turbo-latest", "recognizer qwen3-asr-flash", "voice qwen3-tts-flash"}
    assert all(line.startswith("✓") for line in lines.values()), lines
    assert "mp3" in lines["ffmpeg"] and "opus" in lines["ffmpeg"]
    assert "@earshot_test_bot" in lines["Telegram getMe"]
    assert SHOWN_NUMBER in lines["WhatsApp number"]
    ds = services["ds"][0]
    assert ds.calls[-1].parameters["max_tokens"] == 1       # the model check costs one output token


def test_shows_what_each_configured_model_resolves_to(env):
    specs = '{"qwen4-omni-max": {"backend": "compat", "seconds": 600, "voices": ["Cherry"]}}'
    code, lines = doctor(env | {"EARSHOT_MODEL": "qwen3.5-omni-plus-2026-03-15",
                                "EARSHOT_MODELS": "qwen9-omni-ultra,qwen4-omni-max,mystery-model",
                                "EARSHOT_MODEL_SPECS": specs, "EARSHOT_ASR_MODEL": "qwen3-asr-flash-2026-02-10",
                                "EARSHOT_TTS_MODEL": ""})
    assert "compatible mode" in lines["chat model qwen3.5-omni-plus-2026-03-15"]
    assert "snapshot of qwen3.5-omni-plus" in lines["chat model qwen3.5-omni-plus-2026-03-15"]
    assert "family" in lines["chat model qwen9-omni-ultra"] and lines["chat model qwen9-omni-ultra"][0] == "✓"
    assert "595 s" in lines["chat model qwen4-omni-max"] and "1 voices" in lines["chat model qwen4-omni-max"]
    assert "transcribes" in lines["recognizer qwen3-asr-flash-2026-02-10"]
    assert not any(name.startswith("voice ") for name in lines)          # EARSHOT_TTS_MODEL empty: none
    mystery = lines["chat model mystery-model"]
    assert mystery.startswith("✗") and "EARSHOT_MODEL_SPECS" in mystery
    assert code != 0


def test_names_each_broken_thing_and_how_to_fix_it(env, services):
    (tg, tgs), (sl, sls) = services["tg"], services["sl"]
    tgs.call(lambda: setattr(tg, "webhook", {"url": "https://bot.example.org/hook/secret-path"}))
    sls.call(lambda: sl.scopes.remove("files:read"))
    code, lines = doctor(env | {"DASHSCOPE_API_KEY": "sk-wrong-key"})
    assert code == 4
    assert lines["model qwen-audio-turbo-latest"].startswith("✗") and "DASHSCOPE_API_KEY" in lines[
        "model qwen-audio-turbo-latest"]
    webhook = lines["Telegram webhook"]
    assert webhook.startswith("✗") and "deleteWebhook" in webhook and "secret-path" not in webhook
    assert lines["Slack scopes"].startswith("✗") and "files:read" in lines["Slack scopes"]
    assert "chat:write" not in lines["Slack scopes"]
    for fine in ("ffmpeg", "database", "Telegram getMe", "Slack auth.test"):
        assert lines[fine].startswith("✓"), lines[fine]
    assert "sk-wrong-key" not in "".join(lines.values())


def test_refused_tokens_name_their_variables(env, tmp_path):
    code, lines = doctor(env | {"TELEGRAM_BOT_TOKEN": "123456:WRONG-token-of-the-right-shape-xyz",
                                "SLACK_BOT_TOKEN": "xoxb-wrong", "SLACK_SIGNING_SECRET": "",
                                "SLACK_APP_TOKEN": "xapp-wrong"})
    assert code == 4
    assert lines["Telegram getMe"].startswith("✗") and "TELEGRAM_BOT_TOKEN" in lines["Telegram getMe"]
    assert lines["Slack auth.test"].startswith("✗") and "SLACK_BOT_TOKEN" in lines["Slack auth.test"]


def test_whatsapp_names_a_refused_token_and_missing_webhook_settings(env):
    code, lines = doctor(env | {"WHATSAPP_ACCESS_TOKEN": "EAAwrong-token", "WHATSAPP_VERIFY_TOKEN": ""})
    assert code == 4
    assert lines["WhatsApp number"].startswith("✗") and "WHATSAPP_ACCESS_TOKEN" in lines["WhatsApp number"]
    assert lines["WhatsApp webhook"].startswith("✗") and "WHATSAPP_VERIFY_TOKEN" in lines["WhatsApp webhook"]
    assert "WHATSAPP_APP_SECRET" not in lines["WhatsApp webhook"] and "EAAwrong-token" not in str(lines)
    code, lines = doctor({k: v for k, v in env.items() if not k.startswith("WHATSAPP_")})
    assert code == 0 and lines["WhatsApp"].startswith("–")


def test_webhook_mode_expects_its_webhook_and_socket_mode_checks_the_app_token(env, services):
    (tg, tgs), (sl, _) = services["tg"], services["sl"]
    url = "https://bot.example.org/telegram"
    tgs.call(lambda: setattr(tg, "webhook", {"url": url}))
    code, lines = doctor(env | {"SLACK_APP_TOKEN": sl.app_token}, "--webhook-url", url)
    assert code == 0, lines
    assert lines["Slack Socket Mode"].startswith("✓")
    code, lines = doctor(env | {"SLACK_APP_TOKEN": "xapp-wrong"}, "--webhook-url", url + "/other")
    assert code == 4
    assert lines["Telegram webhook"].startswith("✗")
    assert lines["Slack Socket Mode"].startswith("✗") and "SLACK_APP_TOKEN" in lines["Slack Socket Mode"]


def test_unusable_database_is_named(env, tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    code, lines = doctor(env | {"EARSHOT_DB": str(tmp_path / "a-file" / "earshot.db")})
    assert code == 4
    assert lines["database"].startswith("✗") and "EARSHOT_DB" in lines["database"]


def test_invalid_settings_are_named_with_their_allowed_values_and_the_rest_still_runs(env):
    code, lines = doctor({**env, "DASHSCOPE_REGION": "tokyo", "EARSHOT_MAX_FILE_MB": "lots"})
    assert code == 4
    assert lines["DASHSCOPE_REGION"].startswith("✗") and "'beijing' or 'singapore'" in lines["DASHSCOPE_REGION"]
    assert lines["EARSHOT_MAX_FILE_MB"].startswith("✗") and "number" in lines["EARSHOT_MAX_FILE_MB"]
    for check in ("ffmpeg", "database", "model qwen-audio-turbo-latest", "Telegram getMe", "Slack auth.test"):
        assert lines[check].startswith("✓"), lines
    assert "real one-token request" in lines["model qwen-audio-turbo-latest"]


def test_an_invalid_secret_is_never_repeated(env):
    code, lines = doctor({**env, "TELEGRAM_WEBHOOK_SECRET": "no spaces allowed!"})
    assert code == 4 and "no spaces allowed" not in lines["TELEGRAM_WEBHOOK_SECRET"]
