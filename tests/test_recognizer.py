"""Transcripts by the recognizer (EARSHOT_ASR_MODEL, qwen3-asr-flash through the compatible mode): the user's
bytes as they are when they fit, parts within its limits when not, the language it reports, the language a
chat pins; and the stand-in's own rules for it."""
from __future__ import annotations

import base64
import hashlib
import json

import openai
import pytest

from core.audio import pipeline
from core.config import Settings
from core.flow.chat_state import ChatState
from core.flow.service import Assistant
from core.model.catalog import model_info
from core.values import Audio, ChatKey, Request, Sender, Task
from tests.audio_fixtures import make_clip
from tests.conftest import MODEL_KEY, cli_env, earshot, settings_for
from tests.fakes.dashscope import tone_audio
from tests.fakes.speech import ASR_MARK

CHAT = ChatKey("telegram", "42")


def asr_settings(model, tmp_path, **kw) -> Settings:
    return settings_for(model, tmp_path, asr_model="qwen3-asr-flash", retry_budget=3, **kw)


def recognized(model) -> list:
    return [c for c in model.calls if c.task == "asr"]


# --- the stand-in's rules, through the plain SDK ---------------------------------------------------

async def test_the_recognizer_stand_in_refuses_what_the_service_refuses(model):
    sdk = openai.AsyncOpenAI(api_key=MODEL_KEY, base_url=model.url + "/compatible-mode/v1", max_retries=0)
    note = tone_audio((0, 0.3), (440, 1.0), (0, 0.5), fmt="ogg")
    part = {"type": "input_audio", "input_audio": {"data": "data:audio/ogg;base64," + base64.b64encode(note).decode()}}

    async def ask(content, **kw):
        return await sdk.chat.completions.with_raw_response.create(
            model="qwen3-asr-flash", messages=[{"role": "user", "content": content}], **kw)
    try:
        with pytest.raises(openai.BadRequestError, match="exactly one input_audio"):
            await ask([part, {"type": "text", "text": "transcribe"}])
        with pytest.raises(openai.BadRequestError, match="does not appear to be valid"):
            await ask([{"type": "input_audio", "input_audio": {"data": base64.b64encode(note).decode()}}])
        with pytest.raises(openai.BadRequestError, match="language"):
            await ask([part], extra_body={"asr_options": {"language": "xx"}})
        with pytest.raises(openai.BadRequestError, match="stream_options"):
            await ask([part], stream_options={"include_usage": True})
        raw = await ask([part], extra_body={"asr_options": {"language": "de"}})
        body = raw.http_response.json()
        assert body["choices"][0]["message"]["annotations"][0]["language"] == "de"
        assert body["choices"][0]["message"]["content"].startswith(ASR_MARK) and body["usage"]["seconds"] == 2
        [call] = [c for c in recognized(model) if c.status == 200]
        assert call.items[0].sha256 == hashlib.sha256(note).hexdigest() and call.items[0].mime == "audio/ogg"
    finally:
        await sdk.close()


def test_headers_give_the_length_without_decoding():
    for fmt in ("ogg", "wav", "flac"):
        data = tone_audio((0, 0.5), (440, 1.0), (0, 8.5), fmt=fmt)
        assert pipeline.header_seconds(data, pipeline.sniff(data) or "") == pytest.approx(10, abs=0.05)
    mp3 = tone_audio((440, 1.0), fmt="mp3")
    assert pipeline.sniff(mp3) == "mp3" and pipeline.as_is(mp3, ("mp3",), max_encoded=10 << 20, max_seconds=300) is None
    note = tone_audio((440, 1.0), (0, 9.0), fmt="ogg")
    assert pipeline.as_is(note, ("ogg",), max_encoded=10 << 20, max_seconds=5) is None          # too long for one
    assert pipeline.as_is(note, ("ogg",), max_encoded=len(note), max_seconds=300) is None       # too big after base64


# --- earshot's transcripts ------------------------------------------------------------------------

async def test_a_voice_note_goes_to_the_recognizer_byte_for_byte(model, tmp_path):
    note = make_clip(None, [(440, 0.5, 1.0), (660, 20.0, 1.0)], total_s=30.0, fmt="ogg")
    async with Assistant(asr_settings(model, tmp_path)) as a:
        reply = await a.handle(Request(CHAT, Task.TRANSCRIBE, Audio(note, "voice.ogg", "audio/ogg")))
    [call] = recognized(model)
    assert call.model == "qwen3-asr-flash" and call.api == "compat" and not call.stream
    assert call.items[0].sha256 == hashlib.sha256(note).hexdigest() and call.items[0].mime == "audio/ogg"
    assert reply.text == f"{ASR_MARK} TONE440@0.5s TONE660@20.0s"
    assert reply.language == "en" and reply.emotion == "neutral" and reply.duration == pytest.approx(30, abs=0.1)
    assert reply.usage.audio_tokens == 30 * 25            # what the service bills: 25 per started second
    assert not [c for c in model.calls if c.task == "chat"]   # the chat model was not asked


async def test_long_audio_is_cut_into_parts_within_the_recognizers_limits(model, tmp_path):
    plan = [(440, 1.0, 1.0), (660, 200.0, 1.0), (880, 380.0, 1.0)]
    note = make_clip(None, plan, total_s=400.0, fmt="ogg")
    async with Assistant(asr_settings(model, tmp_path)) as a:
        reply = await a.handle(Request(CHAT, Task.TRANSCRIBE, Audio(note, "long.ogg")))
    calls = recognized(model)
    assert len(calls) == 2 and all(c.status == 200 for c in calls)
    assert all(c.items[0].duration <= 300 and c.items[0].b64_chars <= 10 * 1024 * 1024 for c in calls)
    assert all(c.items[0].format == "mp3" and c.items[0].mime == "audio/mpeg" for c in calls)
    assert reply.text.startswith("[00:00]") and "TONE880" in reply.text and len(reply.parts) == 2
    assert reply.parts[1].start > 200


async def test_summaries_stay_with_the_chat_model(model, tmp_path):
    note = make_clip(None, [(440, 0.5, 1.0)], total_s=2.0, fmt="ogg")
    async with Assistant(asr_settings(model, tmp_path)) as a:
        await a.handle(Request(CHAT, Task.SUMMARIZE, Audio(note, "n.ogg")))
    assert not recognized(model) and [c.api for c in model.calls] == ["native"]


async def test_a_chat_pins_the_spoken_language_and_the_request_carries_it(model, tmp_path):
    note = make_clip(None, [(440, 0.5, 1.0)], total_s=2.0, fmt="ogg")
    async with Assistant(asr_settings(model, tmp_path, cache_days=0)) as a:
        state = ChatState(a, a.access, a.history)
        run = lambda arg: state.run("spoken", CHAT, Sender("1"), arg, private=True)  # noqa: E731
        assert "detects" in (await run("") or "")
        assert "can't be told xx" in (await run("xx") or "")
        assert "de" in (await run("de") or "")
        reply = await a.handle(Request(CHAT, Task.TRANSCRIBE, Audio(note, "n.ogg")))
        assert recognized(model)[-1].asr_options == {"enable_itn": False, "language": "de"} and reply.language == "de"
        reply = await a.handle(Request(CHAT, Task.TRANSCRIBE, Audio(note, "n.ogg"), spoken="fr"))  # the CLI's
        assert recognized(model)[-1].language == "fr"
        assert "detects" in (await run("auto") or "")
        await a.handle(Request(CHAT, Task.TRANSCRIBE, Audio(note, "n.ogg")))
        assert "language" not in recognized(model)[-1].asr_options


async def test_spoken_says_so_when_the_chat_model_transcribes(model, tmp_path):
    async with Assistant(settings_for(model, tmp_path)) as a:      # EARSHOT_ASR_MODEL empty
        said = await ChatState(a, a.access, a.history).run("spoken", CHAT, Sender("1"), "de", private=True)
    assert "detects the language itself" in (said or "")


def test_the_recognizer_is_the_default_on_dashscope_only(monkeypatch):
    monkeypatch.delenv("EARSHOT_ASR_MODEL")
    monkeypatch.delenv("EARSHOT_TTS_MODEL")
    assert Settings().recognizer == "qwen3-asr-flash" and Settings().speaker == "qwen3-tts-flash"
    hosted = Settings(model="Qwen/Qwen2-Audio-7B-Instruct", openai_base_url="http://gpu:8000/v1")
    assert hosted.recognizer is None and hosted.speaker is None
    assert Settings(asr_model="").recognizer is None


async def test_a_self_hosted_recognizer_gets_raw_base64(model, tmp_path, monkeypatch):
    model.compat.vllm_recognizers.add("Qwen/Qwen3-ASR-1.7B")
    assert model_info("Qwen/Qwen3-ASR-1.7B", openai_server=True).backend.value == "openai"
    s = Settings(openai_base_url=model.url + "/v1", model="Qwen/Qwen2-Audio-7B-Instruct",
                 asr_model="Qwen/Qwen3-ASR-1.7B", db_path=tmp_path / "e.db", retry_budget=3)
    note = make_clip(None, [(440, 0.5, 1.0)], total_s=2.0, fmt="ogg")
    async with Assistant(s) as a:
        reply = await a.handle(Request(CHAT, Task.TRANSCRIBE, Audio(note, "n.ogg")))
    [call] = recognized(model)
    assert call.api == "vllm" and call.items[0].sha256 == hashlib.sha256(note).hexdigest()
    assert reply.text.startswith(ASR_MARK)


def test_cli_transcribe_spoken_and_the_language_in_json(threaded_model, tmp_path):
    path = tmp_path / "n.ogg"
    make_clip(path, [(440, 0.5, 1.0)], total_s=2.0, fmt="ogg")
    env = cli_env(threaded_model, tmp_path, EARSHOT_ASR_MODEL="qwen3-asr-flash")
    p = earshot(env, "transcribe", path, "--json", "--spoken", "de")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["language"] == "de" and data["text"].startswith(ASR_MARK)
    assert threaded_model.calls[-1].language == "de"
    p = earshot(env, "transcribe", path, "--spoken", "klingon")
    assert p.returncode == 2 and "--spoken must be one of" in p.stderr


# --- /spoken in the chats -------------------------------------------------------------------------------

async def test_telegram_spoken_de_pins_the_language_of_a_voice_notes_transcript(tmp_path):
    from core.words import help_texts, messages
    from tests.conftest import bot_running
    async with bot_running(tmp_path, asr_model="qwen3-asr-flash") as bot:
        bot.tg.push(601, text="/spoken de")
        [said] = await bot.said(601)
        assert said["text"] == messages.text(messages.SPOKEN_SET, None, language="de", prefix="/")
        bot.tg.push(601, kind="voice", data=tone_audio((0, 0.5), (440, 1.0), (0, 0.5), fmt="ogg"))
        bot.tg.push(601, text="/transcribe")
        said = await bot.said(601, 3)          # the voice note's own answer (a voice chat), then the transcript
        assert ASR_MARK in said[-1]["text"]
        [call] = recognized(bot.ds)
        assert call.language == "de"
        bot.tg.push(601, text="/help")
        said = await bot.said(601, 4)
        assert help_texts.TELEGRAM_HELP_SPOKEN.split(" – ")[0] in said[-1]["text"]


async def test_slack_earshot_spoken_and_the_home_tab_shows_it(tmp_path):
    from bots.slack.blocks import HomeSettings, home_view
    from core.words import messages
    from tests.conftest import CHANNEL, slack_running
    from tests.fakes.slack import slash_body
    async with slack_running(tmp_path, asr_model="qwen3-asr-flash") as world:
        r = await world.post(slash_body("spoken de", channel=CHANNEL, response_url=world.slack.response_url()))
        assert messages.text(messages.SPOKEN_SET, None, language="de", prefix="/earshot ") in r.text
        r = await world.post(slash_body("spoken auto", channel=CHANNEL, response_url=world.slack.response_url()))
        assert messages.text(messages.SPOKEN_AUTO, None) in r.text
    view = json.dumps(home_view(None, HomeSettings(False, None, None, "de")))
    assert "Language spoken in your clips" in view and "`de`" in view


async def test_digest_listening_transcribes_with_the_recognizer(model, tmp_path):
    note = make_clip(None, [(440, 0.5, 1.0)], total_s=2.0, fmt="ogg")
    async with Assistant(asr_settings(model, tmp_path)) as a:
        reply = await a.transcribe_quietly(Request(ChatKey("telegram", "-100"), Task.LISTEN, Audio(note, "n.ogg")))
    assert reply.text.startswith(ASR_MARK) and [c.task for c in model.calls] == ["asr"]


async def test_the_compat_stand_in_serves_new_omni_names_and_snapshots_only(model):
    sdk = openai.AsyncOpenAI(api_key=MODEL_KEY, base_url=model.url + "/compatible-mode/v1", max_retries=0)
    try:
        for name in ("qwen3.8-omni-flash", "qwen3.5-omni-plus-2026-03-15", "qwen-omni-turbo-latest"):
            stream = await sdk.chat.completions.create(model=name, stream=True,
                                                       messages=[{"role": "user", "content": "hi"}])
            assert [c async for c in stream]
        with pytest.raises(openai.NotFoundError):
            await sdk.chat.completions.create(model="qwen3.5-omni-plus-extra", stream=True,
                                              messages=[{"role": "user", "content": "hi"}])
    finally:
        await sdk.close()


async def test_a_silent_note_sent_as_it_is_is_called_silent(model, tmp_path):
    from core.errors import AudioError
    from core.words import messages
    note = make_clip(None, [], total_s=3.0, fmt="ogg")
    async with Assistant(asr_settings(model, tmp_path)) as a:
        with pytest.raises(AudioError) as exc:
            await a.handle(Request(CHAT, Task.TRANSCRIBE, Audio(note, "n.ogg")))
    assert exc.value.user_message == messages.SILENT and recognized(model)[0].items[0].duration == pytest.approx(3)


async def test_a_cached_transcript_is_kept_per_pinned_language(model, tmp_path):
    note = make_clip(None, [(440, 0.5, 1.0)], total_s=2.0, fmt="ogg")
    async with Assistant(asr_settings(model, tmp_path)) as a:
        first = await a.handle(Request(CHAT, Task.TRANSCRIBE, Audio(note, "n.ogg")))
        again = await a.handle(Request(CHAT, Task.TRANSCRIBE, Audio(note, "n.ogg")))
        await a.set_spoken(CHAT, "de")
        pinned = await a.handle(Request(CHAT, Task.TRANSCRIBE, Audio(note, "n.ogg")))
    assert not first.cached and again.cached and not pinned.cached
    assert [c.language for c in recognized(model)] == [None, "de"]


async def test_usage_shows_the_recognizers_tokens_and_the_audio_heard(model, tmp_path):
    from core.flow.access import usage_text
    note = make_clip(None, [(440, 0.5, 1.0)], total_s=30.0, fmt="ogg")
    async with Assistant(asr_settings(model, tmp_path)) as a:
        await a.handle(Request(CHAT, Task.TRANSCRIBE, Audio(note, "n.ogg"), user_id="1"))
        text = usage_text(await a.access.report(CHAT, Sender("1"), private=True))
    assert "750 audio" in text and "Audio heard here today: 30 seconds." in text
