"""`earshot discord` end to end: the bot (discord.py, over the real Gateway protocol and REST) against the Discord
stand-in (tests/fakes/discord.py) and the model stand-in, both on loopback."""
from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from bots.discord import DiscordBot
from bots.discord.jobs import attachment_origins
from bots.doctor import check_discord
from core.config import Settings
from core.errors import EarshotError
from tests.conftest import MODEL_KEY, free_port, serving, settings_for, spawn, terminate
from tests.fakes.dashscope import FakeDashScope, tone_audio
from tests.fakes.discord import (
    ALICE,
    APP_ID,
    AUTO,
    BOB,
    GENERAL,
    GUILD_ID,
    IS_VOICE_MESSAGE,
    LOADING,
    FakeDiscord,
    buttons,
)
from tests.fakes.server import Threaded
from tests.waiting import settled, until, until_sync


@dataclass
class Bot:
    dc: FakeDiscord
    model: FakeDashScope
    bot: DiscordBot
    settings: Settings

    async def answer(self, channel: str, pattern: str, n: int = 1, within: float = 20) -> list[dict[str, Any]]:
        """The bot's first `n` messages in `channel` whose text matches, once there are that many."""
        def found() -> list[dict[str, Any]]:
            got = [m for m in self.dc.said(channel) if re.search(pattern, m["content"] or "")]
            return got if len(got) >= n else []
        return await until(found, within, f"{n} answer(s) matching {pattern!r}")

    async def idle(self) -> None:
        await until(lambda: settled(self.settings.db_path), 30, "the bot's jobs to be done")

    async def interaction(self, iid: str, pattern: str = ".") -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            it = self.dc.interaction(iid)
            texts = [m["content"] for m in it["messages"] if not m["flags"] & LOADING]
            return it if any(re.search(pattern, t or "") for t in texts) else None
        return await until(done, 20, f"interaction {iid} answered with {pattern!r}")


@contextlib.asynccontextmanager
async def discord_running(tmp_path: Path, dc: FakeDiscord | None = None, **kw: Any) -> AsyncIterator[Bot]:
    async with serving(dc or FakeDiscord()) as fake, serving(FakeDashScope(api_key=MODEL_KEY)) as model:
        settings = settings_for(model, tmp_path, discord_bot_token=fake.token, discord_api_url=fake.url + "/api/v10",
                                **kw)
        bot = DiscordBot(settings)
        await bot.start()
        try:
            await until(lambda: fake.commands, 10, "the commands registered")
            yield Bot(fake, model, bot, settings)
        finally:
            await bot.stop()


@pytest.fixture(scope="module")
def clip() -> bytes:
    return tone_audio((0, 0.5), (440, 1.0), (0, 0.5), fmt="ogg")


def reference(m: dict[str, Any]) -> str | None:
    return (m.get("message_reference") or {}).get("message_id")


async def test_start_registers_commands_with_one_bulk_overwrite(tmp_path: Path) -> None:
    async with discord_running(tmp_path) as b:
        puts = [c for c in b.dc.calls if c["route"] == "PUT /applications/{app}/commands"]
        assert len(puts) == 1 and puts[0]["auth"] == "ok"
        earshot = b.dc.command("earshot")
        subs = {o["name"] for o in earshot["options"]}
        assert subs == {"help", "transcribe", "summarize", "ask", "translate", "usage", "lang", "voice", "spoken",
                        "digest", "auto"}
        assert b.dc.command("Transcribe with earshot", 3) and b.dc.command("Summarize with earshot", 3)
        assert any(c["route"] == "GET /gateway/bot" for c in b.dc.calls), "the Gateway's address was asked"


async def test_dm_voice_message_is_answered_as_a_reply_then_followed_up(tmp_path: Path, clip: bytes) -> None:
    async with discord_running(tmp_path) as b:
        mid = b.dc.dm(ALICE, audio=clip, voice=True)
        dm = b.dc.dm_channel(ALICE)
        [answer] = await b.answer(dm, r"440Hz")
        assert reference(answer) == mid
        assert b.dc.cdn_fetches and all(f["authorization"] is None for f in b.dc.cdn_fetches), \
            "attachments are fetched without the bot token"
        assert buttons(answer), "buttons under an answer about audio"
        b.dc.dm(ALICE, "and what came after it?")
        [follow] = await b.answer(dm, r"\[text-only\]")
        assert "440Hz" in follow["content"], "the follow-up saw the DM's history"


async def test_message_command_is_deferred_and_answered_as_a_reply(tmp_path: Path, clip: bytes) -> None:
    async with discord_running(tmp_path) as b:
        target = b.dc.say(GENERAL, BOB, audio=clip, voice=True)
        await until(lambda: b.dc.said() == [] and b.dc.messages, 5)
        iid = b.dc.message_command(GENERAL, ALICE, target, "Transcribe with earshot")
        it = await b.interaction(iid, r"440Hz")
        [ack] = it["acks"]
        assert ack["type"] == 5 and ack["after"] < 3.0, "deferred within 3 s"
        assert reference(it["messages"][0]) == target, "answered as a reply to the target message"


async def test_slash_command_with_an_attachment_and_a_button(tmp_path: Path, clip: bytes) -> None:
    async with discord_running(tmp_path) as b:
        att = b.dc.upload(clip, "talk.ogg", "audio/ogg")
        iid = b.dc.slash(GENERAL, ALICE, "summarize", [{"type": 11, "name": "audio", "value": att["id"]}])
        it = await b.interaction(iid, r"440Hz")
        assert it["acks"][0]["type"] == 5
        answer = it["messages"][-1]
        press = [c for c in buttons(answer) if c["type"] == 2 and c.get("label") == "Transcript"]
        assert press, buttons(answer)
        pid = b.dc.press(GENERAL, ALICE, answer["id"], press[0]["custom_id"])
        pressed = await b.interaction(pid, r"440Hz")
        assert pressed["acks"][0]["type"] == 5
        assert "transcri" in str(b.model.calls[-1].texts).lower() or b.model.calls[-1].items
        dump = "\n".join(sqlite3.connect(b.settings.db_path).iterdump())
        assert b.dc.interactions[iid]["token"] not in dump, "interaction tokens are never stored"
        menu = [c for c in buttons(answer) if c["type"] == 3]
        tid = b.dc.press(GENERAL, ALICE, answer["id"], menu[0]["custom_id"], values=[menu[0]["options"][0]["value"]])
        await b.interaction(tid, r".")
        assert len(b.dc.cdn_fetches) <= 3


async def test_a_german_chats_buttons_and_translate_menu_are_german(tmp_path: Path, clip: bytes) -> None:
    async with discord_running(tmp_path) as b:
        dm = b.dc.dm_channel(ALICE)
        iid = b.dc.slash(dm, ALICE, "lang", [{"type": 3, "name": "code", "value": "de"}])
        await b.interaction(iid, r".")
        b.dc.dm(ALICE, audio=clip, voice=True)
        [answer] = await b.answer(dm, r"440Hz")
        labels = {c["label"] for c in buttons(answer) if c["type"] == 2}
        assert "Zusammenfassung" in labels and not labels & {"Summary", "Transcript", "Mood", "Sounds"}, labels
        [menu] = [c for c in buttons(answer) if c["type"] == 3]
        assert menu["placeholder"] == "Übersetzen"
        names = {o["value"]: o["label"] for o in menu["options"]}
        assert names["de"] == "Deutsch" and names["en"] == "Englisch", names


async def test_a_stranger_is_told_once_and_nothing_is_downloaded(tmp_path: Path, clip: bytes) -> None:
    async with discord_running(tmp_path, allowed_users=(ALICE,)) as b:
        dm = b.dc.dm_channel(BOB)
        b.dc.dm(BOB, audio=clip, voice=True)
        [told] = await b.answer(dm, r"(?i)only answer")
        b.dc.dm(BOB, audio=clip, voice=True)
        att = b.dc.upload(clip, "talk.ogg", "audio/ogg")
        iid = b.dc.slash(GENERAL, BOB, "transcribe", [{"type": 11, "name": "audio", "value": att["id"]}])
        await until(lambda: b.dc.interaction(iid)["acks"], 10)
        await b.idle()
        assert len(b.dc.said(dm)) == 1, "told once"
        assert not b.dc.cdn_fetches and not b.model.calls, "nothing downloaded or spent"
        assert BOB in told["content"]


async def test_server_id_lets_its_members_in(tmp_path: Path, clip: bytes) -> None:
    async with discord_running(tmp_path, allowed_users=(GUILD_ID,)) as b:
        mid = b.dc.say(GENERAL, BOB, "what is it?", audio=clip, filename="a.ogg", content_type="audio/ogg",
                       mention=True)
        [answer] = await b.answer(GENERAL, r"440Hz")
        assert reference(answer) == mid


async def test_auto_mode_needs_manage_server_then_transcribes_every_voice_message(tmp_path: Path,
                                                                                 clip: bytes) -> None:
    async with discord_running(tmp_path) as b:
        iid = b.dc.slash(AUTO, ALICE, "auto", [{"type": 3, "name": "state", "value": "on"}])
        await b.interaction(iid, r"(?i)only people who can manage")
        b.dc.say(AUTO, BOB, audio=clip, voice=True)
        await b.idle()
        assert not [m for m in b.dc.said(AUTO) if "440Hz" in m["content"]], "off until a moderator turns it on"
        b.dc.moderators.add(ALICE)
        iid = b.dc.slash(AUTO, ALICE, "auto", [{"type": 3, "name": "state", "value": "on"}])
        await b.interaction(iid, r"(?i)every voice message")
        mid = b.dc.say(AUTO, BOB, audio=clip, voice=True)
        [answer] = await b.answer(AUTO, r"440Hz")
        assert reference(answer) == mid
        b.dc.say(GENERAL, BOB, audio=clip, voice=True)
        await b.idle()
        assert not b.dc.said(GENERAL), "only in the channel that asked for it"


async def test_a_message_dispatched_again_is_answered_once(tmp_path: Path) -> None:
    """Discord may dispatch a MESSAGE_CREATE again (events replayed on a RESUME): a command typed in a DM, which
    becomes no job, is still answered once."""
    async with discord_running(tmp_path) as b:
        dm = b.dc.dm_channel(ALICE)
        mid = b.dc.dm(ALICE, "help")
        await b.answer(dm, r"\S")
        b.dc.replay(mid)
        b.dc.dm(ALICE, "usage")                  # answered after the replay was handled: same channel, in order
        await b.answer(dm, r"\S", n=2)
        await b.idle()
        assert len([m for m in b.dc.said(dm) if reference(m) == mid]) == 1


async def test_a_429_neither_loses_nor_doubles_the_answer(tmp_path: Path, clip: bytes) -> None:
    async with discord_running(tmp_path) as b:
        b.dc.limit("POST /channels/{channel_id}/messages", times=2, retry_after=0.2)
        b.dc.dm(ALICE, audio=clip, voice=True)
        dm = b.dc.dm_channel(ALICE)
        await b.answer(dm, r"440Hz")
        await b.idle()
        sends = [c["status"] for c in b.dc.calls if c["route"] == "POST /channels/{channel_id}/messages"]
        assert sends[:3] == [429, 429, 200]
        assert len([m for m in b.dc.said(dm) if "440Hz" in m["content"]]) == 1


async def test_a_long_429_is_retried_by_the_runner_without_repeating_pieces(tmp_path: Path) -> None:
    long = tone_audio(*[(0, 0.4), (440, 0.6)] * 3, fmt="ogg")
    async with discord_running(tmp_path) as b:
        b.dc.limit("POST /channels/{channel_id}/messages", times=6, retry_after=0.05)   # discord.py tries 5 times
        b.dc.dm(ALICE, audio=long, voice=True)
        dm = b.dc.dm_channel(ALICE)
        await b.answer(dm, r"440Hz")
        await b.idle()
        sends = [c["status"] for c in b.dc.calls if c["route"] == "POST /channels/{channel_id}/messages"]
        assert sends.count(429) == 6 and sends[-1] == 200, "discord.py gave up, the runner delivered later"
        assert len([m for m in b.dc.said(dm) if "440Hz" in m["content"]]) == 1


async def test_spoken_answer_is_a_voice_message(tmp_path: Path, clip: bytes) -> None:
    async with discord_running(tmp_path, model="qwen3-omni-flash") as b:
        iid = b.dc.slash(GENERAL, ALICE, "voice", [{"type": 3, "name": "state", "value": "on"}])
        await b.interaction(iid, r".")
        mid = b.dc.say(GENERAL, ALICE, "hear this", audio=clip, filename="a.ogg", content_type="audio/ogg",
                       mention=True)
        await b.answer(GENERAL, r"440Hz")
        voice = await until(lambda: [m for m in b.dc.said(GENERAL) if m["flags"] & IS_VOICE_MESSAGE], 20)
        [att] = voice[0]["attachments"]
        assert att["duration_secs"] > 0 and att["waveform"] and not voice[0]["content"]
        assert reference(voice[0]) == mid
        assert b.dc.blobs[att["id"]][:4] == b"OggS"


async def test_long_transcripts_come_as_files_and_messages_fit(tmp_path: Path) -> None:
    long = tone_audio((0, 10.0), (440, 1.0), (0, 300.0), fmt="ogg")      # over 5 minutes: files too
    async with discord_running(tmp_path) as b:
        att = b.dc.upload(long, "standup.ogg", "audio/ogg")
        iid = b.dc.slash(GENERAL, ALICE, "transcribe", [{"type": 11, "name": "audio", "value": att["id"]}])
        await b.interaction(iid, r"440Hz")
        files = await until(lambda: [a["filename"] for m in b.dc.interaction(iid)["messages"]
                                     for a in m["attachments"]], 30, "the transcript files")
        assert sorted(files) == ["standup.srt", "standup.txt"]
        assert all(len(m["content"]) <= 2000 for m in b.dc.said())


async def test_a_mention_in_a_reply_to_audio_asks_about_that_audio(tmp_path: Path, clip: bytes) -> None:
    async with discord_running(tmp_path) as b:
        audio = b.dc.say(GENERAL, BOB, audio=clip, filename="memo.ogg", content_type="audio/ogg")
        b.dc.say(GENERAL, ALICE, "nice")                    # not addressed: nothing said
        ask = b.dc.say(GENERAL, ALICE, "what is in it?", mention=True, reply_to=audio)
        [answer] = await b.answer(GENERAL, r"440Hz")
        assert reference(answer) == ask
        assert "what is in it?" in str(b.model.calls[-1].texts)


async def test_a_refused_voice_message_comes_as_an_audio_file(tmp_path: Path, clip: bytes) -> None:
    dc = FakeDiscord()
    dc.voice_refused = True
    async with discord_running(tmp_path, dc, model="qwen3-omni-flash") as b:
        iid = b.dc.slash(GENERAL, ALICE, "voice", [{"type": 3, "name": "state", "value": "on"}])
        await b.interaction(iid, r".")
        b.dc.say(GENERAL, ALICE, "hear this", audio=clip, filename="a.ogg", content_type="audio/ogg", mention=True)
        sent = await until(lambda: [a for m in b.dc.said(GENERAL) for a in m["attachments"]], 20, "the audio file")
        assert sent[0]["filename"] == "answer.ogg"


async def test_help_and_lang_from_the_interaction_locale(tmp_path: Path) -> None:
    async with discord_running(tmp_path) as b:
        iid = b.dc.slash(GENERAL, ALICE, "help", locale="de")
        it = await b.interaction(iid, r"Sprachnachrichten")
        assert it["acks"][0]["type"] == 5
        iid = b.dc.slash(GENERAL, ALICE, "lang")
        await b.interaction(iid, r".")


def test_attachments_come_only_from_discords_cdn() -> None:
    assert attachment_origins("https://discord.com/api/v10") == {"cdn.discordapp.com", "media.discordapp.net"}
    assert "127.0.0.1" in attachment_origins("http://127.0.0.1:5000/api/v10")


def test_earshot_discord_runs_as_a_command(tmp_path: Path, clip: bytes, earshot_env: dict[str, str]) -> None:
    """The console script itself: `earshot discord` connects, answers a DM voice message, stops on SIGTERM."""
    fake = FakeDiscord()
    with Threaded(fake.app) as served:
        fake.url = served.url
        env = {**earshot_env, "DISCORD_BOT_TOKEN": fake.token, "DISCORD_API_URL": served.url + "/api/v10",
               "EARSHOT_METRICS_PORT": "0"}
        proc = spawn([str(Path(sys.executable).with_name("earshot")), "discord"], tmp_path / "bot.log", env)
        try:
            until_sync(lambda: served.call(lambda: fake.identified.is_set()), 30, "the bot to identify")
            until_sync(lambda: fake.commands, 10, "the commands")
            mid = served.call(fake.dm, ALICE, audio=clip, voice=True)
            dm = served.call(fake.dm_channel, ALICE)
            got = until_sync(lambda: [m for m in served.call(fake.said, dm) if "440Hz" in m["content"]], 30,
                             "the answer")
            assert reference(got[0]) == mid
        finally:
            asyncio.run(terminate(proc))
        log = (tmp_path / "bot.log").read_text()
        assert fake.token not in log
        assert proc.returncode == 0, log[-2000:]


def test_earshot_discord_without_a_token_says_what_to_set(earshot_env: dict[str, str]) -> None:
    env = {k: v for k, v in earshot_env.items() if k != "DISCORD_BOT_TOKEN"}
    r = subprocess.run([str(Path(sys.executable).with_name("earshot")), "discord"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0 and "DISCORD_BOT_TOKEN" in r.stderr


async def test_doctor_checks_the_token_the_content_intent_and_prints_the_invite(tmp_path: Path) -> None:
    async with serving(FakeDiscord()) as fake:
        settings = Settings(discord_bot_token=fake.token, discord_api_url=fake.url + "/api/v10",
                            db_path=tmp_path / "x.db")
        lines = await asyncio.to_thread(lambda: [c.line() for c in _discord_checks(check_discord, settings)])
        text = "\n".join(lines)
        assert "✓ Discord" in text and "earshot" in text
        assert f"client_id={APP_ID}" in text and "permissions=" in text
        fake.app_flags = 0
        lines = await asyncio.to_thread(lambda: [c.line() for c in _discord_checks(check_discord, settings)])
        assert any(line.startswith("✗") and "MESSAGE CONTENT" in line.upper() for line in lines)
        bad = settings.model_copy(update={"discord_bot_token": SecretStr("nope")})
        lines = await asyncio.to_thread(lambda: [c.line() for c in _discord_checks(check_discord, bad)])
        assert lines[0].startswith("✗") and "DISCORD_BOT_TOKEN" in lines[0]


def _discord_checks(check: Any, settings: Settings) -> list[Any]:
    with httpx.Client(timeout=10) as http:
        return list(check(settings, http))



async def test_refusals_at_start_are_one_clear_line(tmp_path: Path) -> None:
    async with serving(FakeDiscord()) as fake, serving(FakeDashScope(api_key=MODEL_KEY)) as model:
        wrong = settings_for(model, tmp_path, discord_bot_token="not-the-token", discord_api_url=fake.url + "/api/v10")
        with pytest.raises(EarshotError, match="DISCORD_BOT_TOKEN"):
            await DiscordBot(wrong).start()
        fake.app_flags = 0                       # the message content intent is off in the Developer Portal
        off = settings_for(model, tmp_path, discord_bot_token=fake.token, discord_api_url=fake.url + "/api/v10")
        with pytest.raises(EarshotError, match="MESSAGE CONTENT INTENT"):
            await DiscordBot(off).start()


async def test_health_and_metrics_on_the_metrics_port(tmp_path: Path) -> None:
    port = free_port()
    async with discord_running(tmp_path, metrics_port=port), httpx.AsyncClient() as http:
        r = await http.get(f"http://127.0.0.1:{port}/healthz")
        assert r.status_code == 200 and r.text == "ok\n"
        r = await http.get(f"http://127.0.0.1:{port}/metrics")
        assert r.status_code == 200 and "earshot_" in r.text


async def test_digest_in_a_server_channel(tmp_path: Path, clip: bytes) -> None:
    async with discord_running(tmp_path) as b:
        b.dc.moderators.add(ALICE)
        iid = b.dc.slash(GENERAL, ALICE, "digest", [{"type": 3, "name": "what", "value": "on"}])
        await b.interaction(iid, r".")
        b.dc.say(GENERAL, BOB, audio=clip, voice=True)
        await until(lambda: b.dc.cdn_fetches, 15, "the voice message to be heard")
        await until(lambda: b.model.calls, 15, "its transcript")
        await b.idle()
        assert not [m for m in b.dc.said(GENERAL) if "440Hz" in m["content"]], "heard quietly: nothing said"
        iid = b.dc.slash(GENERAL, ALICE, "digest")
        it = await b.interaction(iid, r"\S")
        assert it["acks"][0]["type"] == 5 and "440Hz" in str(b.model.calls[-1].texts)


def test_deploy_files_run_earshot_discord() -> None:
    import yaml
    root = Path(__file__).resolve().parent.parent / "deploy"
    service = yaml.safe_load((root / "compose.yaml").read_text())["services"]["discord"]
    assert service["profiles"] == ["discord"] and service["command"] == ["discord"]
    unit = (root / "earshot-discord.service").read_text()
    assert "ExecStart=/opt/earshot/.venv/bin/earshot discord" in unit
    assert "DISCORD_BOT_TOKEN=" in (root / "env.example").read_text()


def test_waveform_and_pieces_are_as_discord_wants_them(clip: bytes) -> None:
    import base64

    from bots.discord.render import pieces, waveform
    wave = base64.b64decode(waveform(clip, 2.0))
    assert 1 <= len(wave) <= 256 and max(wave) == 255
    long = base64.b64decode(waveform(tone_audio((440, 40.0), fmt="ogg"), 40.0))
    assert len(long) == 256, "at most 256 samples, however long"
    text = ("word " * 1000).strip()
    assert all(len(p) <= 2000 for p in pieces(text)) and " ".join(pieces(text)) == text
