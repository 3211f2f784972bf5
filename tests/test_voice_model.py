"""Spoken answers from any model: a model that can't speak has its answer read out by the voice model
(EARSHOT_TTS_MODEL, qwen3-tts-flash), fetched only from DashScope or Alibaba's storage, cut at sentence ends
when long and joined into one OGG/Opus voice note; an Omni model that speaks keeps speaking itself."""
from __future__ import annotations

import subprocess

import httpx
import imageio_ffmpeg
import numpy as np
import pytest

from core.errors import VoiceUnavailable
from core.flow.service import Assistant
from core.model.voice import allowed_audio_url, split_text
from core.values import Audio, ChatKey, Request, Task
from tests.audio_fixtures import make_clip
from tests.conftest import MODEL_KEY, settings_for
from tests.fakes.compat import SPOKEN_HZ
from tests.fakes.dashscope import find_tones
from tests.fakes.speech import TTS_HZ, TTS_MAX_CHARS

CHAT = ChatKey("telegram", "9")
NATIVE = "/api/v1/services/aigc/multimodal-generation/generation"


def tts_settings(model, tmp_path, /, **kw):
    return settings_for(model, tmp_path, tts_model="qwen3-tts-flash", retry_budget=3, **kw)


def spoken_tones(ogg: bytes) -> list[int]:
    pcm = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", "pipe:0",
                          "-f", "s16le", "-ac", "1", "-ar", "16000", "pipe:1"], input=ogg, capture_output=True,
                         check=True).stdout
    return [hz for hz, _ in find_tones(np.frombuffer(pcm, "<i2").astype(np.float64) / 32768)]


def is_ogg_opus(data: bytes) -> bool:
    return data[:4] == b"OggS" and b"OpusHead" in data[:100]


def tts_calls(model) -> list:
    return [c for c in model.calls if c.task == "tts"]


# --- the stand-in's rules ---------------------------------------------------------------------------

async def test_the_voice_stand_in_refuses_what_the_service_refuses(model):
    async with httpx.AsyncClient(base_url=model.url, headers={"Authorization": f"Bearer {MODEL_KEY}"}) as http:
        def say(text, voice="Cherry", **extra):
            return http.post(NATIVE, json={"model": "qwen3-tts-flash",
                                           "input": {"text": text, "voice": voice, **extra}})
        assert (await say("x" * (TTS_MAX_CHARS + 1))).status_code == 400
        assert (await say("Hello.", voice="Tina")).status_code == 400
        assert (await say("")).status_code == 400
        assert (await say("Hello.", language_type="Klingon")).status_code == 400
        ok = (await say("Hello there.", language_type="english")).json()
        url = ok["output"]["audio"]["url"]
        assert "Signature=" in url and ok["usage"] == {"characters": 12}
        async with httpx.AsyncClient() as bare:
            wav = await bare.get(url)
            assert wav.status_code == 200 and wav.content[:4] == b"RIFF"
            assert (await bare.get(url.split("?")[0])).status_code == 404       # unsigned: refused
    assert model.speech.fetches and "Authorization" not in model.speech.fetch_headers[0]


# --- the pieces --------------------------------------------------------------------------------------

def test_long_text_is_cut_at_sentence_ends_within_the_limit():
    sentences = [f"Sentence number {i} says something about the audio, at some length." for i in range(40)]
    text = " ".join(sentences)
    pieces = split_text(text, 600)
    assert len(pieces) > 1 and all(len(p) <= 600 for p in pieces)
    assert all(p.endswith(".") for p in pieces)                    # every cut at a sentence end
    assert " ".join(pieces) == text
    no_stops = "word " * 400
    assert all(len(p) <= 600 for p in split_text(no_stops, 600)) and "".join(split_text(no_stops)).count("word") == 400
    assert split_text("一句话。又一句话！", 5) == ["一句话。", "又一句话！"]


def test_audio_is_fetched_only_from_dashscope_or_alibabas_storage():
    base = "https://dashscope.aliyuncs.com/api/v1"
    assert allowed_audio_url("http://dashscope-result-bj.oss-cn-beijing.aliyuncs.com/a.wav?Signature=x", base)
    assert allowed_audio_url("https://dashscope.aliyuncs.com/files/a.wav", base)
    for bad in ("https://evil.example/a.wav", "http://x.oss-cn-beijing.aliyuncs.com.evil.example/a.wav",
                "file:///etc/passwd", "http://user:pw@x.oss-cn-beijing.aliyuncs.com/a.wav",
                "http://x.oss-cn-beijing.aliyuncs.com:8080/a.wav", ""):
        assert not allowed_audio_url(bad, base), bad


# --- earshot's spoken answers ------------------------------------------------------------------------

async def test_qwen_audio_answers_aloud_through_the_voice_model(model, tmp_path):
    note = make_clip(None, [(440, 0.5, 1.0)], total_s=2.0, fmt="ogg")
    async with Assistant(tts_settings(model, tmp_path)) as a:
        assert await a.voice_on(CHAT, "eldric sage") == "Eldric Sage"         # the voice model's own list
        reply = await a.handle(Request(CHAT, Task.CHAT, Audio(note, "n.ogg")))
    [tts] = tts_calls(model)
    assert tts.text == reply.text and tts.voice == "Eldric Sage"
    assert reply.speech is not None and is_ogg_opus(reply.speech.ogg)
    assert spoken_tones(reply.speech.ogg) == [round(TTS_HZ, -1)]
    assert reply.usage.output_tokens >= len(reply.text)                     # the characters billed are counted
    assert len(model.speech.fetches) == 1 and "Authorization" not in model.speech.fetch_headers[0]


async def test_an_answer_over_the_limit_is_spoken_in_pieces_and_joined(model, tmp_path):
    long = " ".join(f"Part {i} of a long answer that keeps going on." for i in range(45))
    model.reply = lambda call: long if call.task == "chat" else ""
    note = make_clip(None, [(440, 0.5, 1.0)], total_s=2.0, fmt="ogg")
    async with Assistant(tts_settings(model, tmp_path)) as a:
        reply = await a.handle(Request(CHAT, Task.ASK, Audio(note, "n.ogg"), text="What?", voice="Cherry"))
    calls = tts_calls(model)
    assert len(calls) == 4 and all(len(c.text) <= TTS_MAX_CHARS and c.text.endswith(".") for c in calls)
    assert " ".join(c.text for c in calls) == long
    assert reply.speech is not None and is_ogg_opus(reply.speech.ogg)
    assert reply.speech.seconds == pytest.approx(sum(min(4.0, 0.8 + len(c.text) / 250) for c in calls) + 3 * 0.3,
                                                 abs=0.05)


async def test_audio_elsewhere_is_not_fetched_and_the_answer_comes_in_text(model, tmp_path):
    model.speech.tts_url_base = "http://127.0.0.1:9"                      # another origin than the service's
    note = make_clip(None, [(440, 0.5, 1.0)], total_s=2.0, fmt="ogg")
    async with Assistant(tts_settings(model, tmp_path)) as a:
        reply = await a.handle(Request(CHAT, Task.CHAT, Audio(note, "n.ogg"), voice="Cherry"))
    assert reply.text and reply.speech is None and not model.speech.fetches and len(tts_calls(model)) == 1


async def test_voices_are_checked_against_the_voice_models_list(model, tmp_path):
    async with Assistant(tts_settings(model, tmp_path)) as a:
        with pytest.raises(VoiceUnavailable) as exc:
            await a.voice_on(CHAT, "Tina")
    assert "Eldric Sage" in exc.value.user_message.format(**exc.value.fmt)
    async with Assistant(settings_for(model, tmp_path)) as a:              # no voice model: can't speak
        with pytest.raises(VoiceUnavailable):
            await a.voice_on(CHAT, None)


async def test_an_omni_model_that_speaks_keeps_speaking_itself(model, tmp_path):
    note = make_clip(None, [(440, 0.5, 1.0)], total_s=2.0, fmt="ogg")
    async with Assistant(tts_settings(model, tmp_path, model="qwen-omni-turbo")) as a:
        reply = await a.handle(Request(CHAT, Task.CHAT, Audio(note, "n.ogg"), voice="Cherry"))
    assert not tts_calls(model) and reply.speech is not None
    assert spoken_tones(reply.speech.ogg) == [round(SPOKEN_HZ, -1)]


async def test_the_recognizer_and_the_voice_work_side_by_side(model, tmp_path):
    note = make_clip(None, [(440, 0.5, 1.0)], total_s=2.0, fmt="ogg")
    async with Assistant(tts_settings(model, tmp_path, asr_model="qwen3-asr-flash")) as a:
        heard = await a.handle(Request(CHAT, Task.TRANSCRIBE, Audio(note, "n.ogg")))
        spoken = await a.handle(Request(CHAT, Task.CHAT, Audio(note, "n.ogg"), voice="Cherry"))
    assert heard.text.startswith("[fake-asr]") and spoken.speech is not None
    assert [c.task for c in model.calls] == ["asr", "chat", "tts"]


def test_cli_speak_on_qwen_audio_goes_through_the_voice_model(threaded_model, tmp_path):
    from tests.conftest import cli_env, earshot
    note, out = tmp_path / "n.ogg", tmp_path / "answer.ogg"
    make_clip(note, [(440, 0.5, 1.0)], total_s=2.0, fmt="ogg")
    p = earshot(cli_env(threaded_model, tmp_path, EARSHOT_TTS_MODEL="qwen3-tts-flash"), "ask", note,
                "What is it?", "--speak", out, "--voice", "serena")
    assert p.returncode == 0, p.stderr
    assert "440Hz" in p.stdout and is_ogg_opus(out.read_bytes())
    assert spoken_tones(out.read_bytes()) == [round(TTS_HZ, -1)]
    assert [c.voice for c in threaded_model.calls if c.task == "tts"] == ["Serena"]
