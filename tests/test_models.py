"""Qwen-Omni (DashScope's compatible mode) and self-hosted models (vLLM) against the stand-ins of both on
loopback: the stand-ins' own rules (checked through the real openai SDK), the client's protocol quirks and
typed errors, chunks that follow each model's window, and spoken answers."""
from __future__ import annotations

import base64
import subprocess
from dataclasses import replace

import imageio_ffmpeg
import openai
import pytest

from core.config import Settings
from core.errors import (
    BadModelResponse,
    ContentRejected,
    ModelAuthError,
    ModelInputError,
    QuotaExhausted,
    VoiceUnavailable,
)
from core.flow.service import Assistant
from core.model.catalog import Backend, model_info
from core.model.openai_compat import OpenAICompatClient
from core.values import Audio, ChatKey, Request, Task
from core.words import messages
from tests.audio_fixtures import decode_pcm, make_clip
from tests.conftest import MODEL_KEY, cli_env, earshot, settings_for
from tests.fakes.compat import SPOKEN_HZ
from tests.fakes.dashscope import (
    ARREARAGE,
    CONTENT,
    FREE_TIER_ONLY,
    HTML,
    THROTTLED,
    Failure,
    find_tones,
    heard,
    tone_audio,
)

CHAT = ChatKey("telegram", "7")
MP3 = None    # filled lazily: a short MP3 clip


def mp3() -> bytes:
    global MP3
    if MP3 is None:
        MP3 = tone_audio((0, 0.3), (440, 1.0), (0, 0.5))
    return MP3


def omni_settings(model, tmp_path, name="qwen3-omni-flash", **kw) -> Settings:
    return settings_for(model, tmp_path, model=name, retry_budget=3, **kw)


def vllm_settings(model, tmp_path, name="Qwen/Qwen2-Audio-7B-Instruct", **kw) -> Settings:
    return Settings(openai_base_url=model.url + "/v1", model=name, db_path=tmp_path / "earshot.db",
                    retry_budget=3, **kw)


def client(model, *, dashscope=True, key=MODEL_KEY, name="qwen3-omni-flash", **kw) -> OpenAICompatClient:
    base = model.url + ("/compatible-mode/v1" if dashscope else "/v1")
    return OpenAICompatClient(key, base, name, dashscope=dashscope, backoff=0.01, **kw)


def clip_messages(data: bytes | None = None, text: str = "Transcribe.") -> list[dict]:
    b64 = base64.b64encode(data or mp3()).decode()
    return [{"role": "system", "content": [{"text": "You are earshot."}]},
            {"role": "user", "content": [{"audio": "data:;base64," + b64}, {"text": text}]}]


# --- the stand-ins' own rules, through the plain SDK ---------------------------------------------------

def _audio_part(data: str) -> dict:
    return {"type": "input_audio", "input_audio": {"data": data, "format": "mp3"}}


async def test_compat_stand_in_refuses_what_dashscope_refuses(model):
    sdk = openai.AsyncOpenAI(api_key=MODEL_KEY, base_url=model.url + "/compatible-mode/v1", max_retries=0)
    b64 = base64.b64encode(mp3()).decode()
    try:
        async def create(parts, **kw):
            return await sdk.chat.completions.create(model="qwen-omni-turbo",
                                                     messages=[{"role": "user", "content": parts}], **kw)
        with pytest.raises(openai.BadRequestError, match="only support stream mode"):
            await create([_audio_part("data:;base64," + b64)])
        with pytest.raises(openai.BadRequestError, match="does not appear to be valid"):
            await create([_audio_part(b64)], stream=True)
        with pytest.raises(openai.BadRequestError, match="audio_url"):
            await create([{"type": "audio_url", "audio_url": {"url": "data:;base64," + b64}}], stream=True)
        with pytest.raises(openai.BadRequestError, match="one audio"):
            await create([_audio_part("data:;base64," + b64)] * 2, stream=True)
        with pytest.raises(openai.BadRequestError, match="Voice"):
            await create([_audio_part("data:;base64," + b64)], stream=True, modalities=["text", "audio"],
                         audio={"voice": "Tina", "format": "wav"})
        bad = openai.AsyncOpenAI(api_key="sk-other-region", base_url=model.url + "/compatible-mode/v1",
                                 max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await bad.chat.completions.create(model="qwen-omni-turbo", stream=True,
                                              messages=[{"role": "user", "content": "hi"}])
        await bad.close()
    finally:
        await sdk.close()


async def test_vllm_stand_in_wants_raw_base64_and_hears_30_seconds(model):
    sdk = openai.AsyncOpenAI(api_key="EMPTY", base_url=model.url + "/v1", max_retries=0)
    b64 = base64.b64encode(mp3()).decode()
    try:
        msgs = lambda data: [{"role": "user", "content": [_audio_part(data)]}]   # noqa: E731
        with pytest.raises(openai.BadRequestError, match="Incorrect padding"):
            await sdk.chat.completions.create(model="Qwen/Qwen2-Audio-7B-Instruct",
                                              messages=msgs("data:;base64," + b64))
        answer = await sdk.chat.completions.create(model="Qwen/Qwen2-Audio-7B-Instruct", messages=msgs(b64))
        assert heard(answer.choices[0].message.content) == [440]          # non-streamed works on vLLM
        long = base64.b64encode(tone_audio((0, 1), (440, 1), (0, 31))).decode()
        with pytest.raises(openai.BadRequestError, match="expected 3000"):
            await sdk.chat.completions.create(model="Qwen/Qwen2-Audio-7B-Instruct", messages=msgs(long))
        with pytest.raises(openai.BadRequestError, match="text only"):
            await sdk.chat.completions.create(model="Qwen/Qwen2-Audio-7B-Instruct", messages=msgs(b64),
                                              modalities=["text", "audio"], audio={"voice": "Cherry", "format": "wav"})
    finally:
        await sdk.close()


# --- the client: each protocol's quirks, usage, errors -------------------------------------------------

async def test_omni_streams_text_and_maps_usage(model):
    pieces: list[str] = []

    async def on_delta(p: str) -> None:
        pieces.append(p)

    async with client(model) as c:
        answer = await c.generate(clip_messages(), max_tokens=100, on_delta=on_delta)
    assert heard(answer.text) == [440] and "".join(pieces) == answer.text and len(pieces) > 1
    [call] = model.calls
    assert call.api == "compat" and call.stream and call.roles == ["system", "user"]
    assert call.body["stream_options"] == {"include_usage": True}
    assert call.body["messages"][1]["content"][0]["input_audio"]["data"].startswith("data:;base64,")
    details = call.usage["prompt_tokens_details"]
    assert answer.usage.audio_tokens == details["audio_tokens"] == 23      # 1.8 s at 12.5 tokens/s, rounded up
    assert answer.usage.input_tokens == call.usage["prompt_tokens"] - details["audio_tokens"]
    assert answer.usage.output_tokens == call.usage["completion_tokens"] and answer.speech == b""


async def test_turbo_speaks_with_its_words_in_the_transcript_and_no_system_prompt(model):
    async with client(model, name="qwen-omni-turbo", system_when_speaking=False) as c:
        answer = await c.generate(clip_messages(text="What is this?"), voice="Ethan")
    [call] = model.calls
    assert call.voice == "Ethan" and call.body["audio"] == {"voice": "Ethan", "format": "wav"}
    assert call.body["modalities"] == ["text", "audio"]
    assert call.roles == ["user", "assistant", "user"]        # the role set in a first exchange instead
    assert heard(answer.text) == [440]                        # read from delta.audio.transcript
    assert len(answer.speech) == call.speech_bytes > 0
    assert answer.usage.output_tokens == call.usage["completion_tokens"]


async def test_vllm_gets_raw_base64_and_its_key_only(model):
    model.compat.vllm_key = "vllm-secret"
    async with client(model, dashscope=False, key="vllm-secret", name="Qwen/Qwen2-Audio-7B-Instruct") as c:
        answer = await c.generate(clip_messages())
    [call] = model.calls
    assert call.api == "vllm" and heard(answer.text) == [440]
    data = call.body["messages"][1]["content"][0]["input_audio"]["data"]
    assert not data.startswith("data:") and base64.b64decode(data) == mp3()
    assert call.headers["Authorization"] == "Bearer vllm-secret"


@pytest.mark.parametrize("failure, error, says", [
    (FREE_TIER_ONLY, QuotaExhausted, "AllocationQuota.FreeTierOnly"),
    (ARREARAGE, QuotaExhausted, "Arrearage"),
    (CONTENT, ContentRejected, "DataInspectionFailed"),
    (Failure(400, "invalid_parameter_error", "The audio is broken."), ModelInputError, "broken"),
    (replace(HTML, status=200), BadModelResponse, "not an OpenAI-compatible answer"),
])
async def test_omni_errors_are_typed(model, failure, error, says):
    model.fail(failure)
    async with client(model) as c:
        with pytest.raises(error) as exc:
            await c.generate(clip_messages())
    assert says in exc.value.operator_message or says in str(exc.value.code)
    assert len(model.calls) == 1                                           # none of these is retried


async def test_a_bad_key_names_the_region_and_throttling_is_retried(model):
    async with client(model, key="sk-beijing-key") as c:
        with pytest.raises(ModelAuthError) as exc:
            await c.generate(clip_messages())
    assert "per region" in exc.value.operator_message and "sk-beijing-key" not in exc.value.operator_message
    model.fail(THROTTLED, THROTTLED)
    async with client(model, name="Qwen/Qwen2-Audio-7B-Instruct", dashscope=False, key="") as c:
        answer = await c.generate(clip_messages())
    assert heard(answer.text) == [440] and [c.status for c in model.calls[1:]] == [429, 429, 200]


# --- the Assistant: chunks follow the model's window ----------------------------------------------------

def requests_of(model, api: str) -> list:
    return [c for c in model.calls if c.api == api and c.items]


async def test_qwen3_omni_flash_hears_95_seconds_in_one_streamed_request(model, tmp_path):
    plan = [(440, 1.0, 1.5), (660, 40.0, 1.5), (880, 90.0, 1.5)]
    note = make_clip(None, plan, total_s=95.0, fmt="ogg")
    async with Assistant(omni_settings(model, tmp_path)) as a:
        reply = await a.handle(Request(CHAT, Task.TRANSCRIBE, Audio(note, "long.ogg")))
    [call] = requests_of(model, "compat")
    assert call.stream and call.items[0].duration == pytest.approx(95, abs=0.5)
    assert heard(reply.text) == [440, 660, 880] and not reply.parts[0].start
    assert reply.usage.audio_tokens == call.usage["prompt_tokens_details"]["audio_tokens"] == pytest.approx(1188, abs=2)


async def test_qwen_omni_turbo_splits_four_minutes_in_two(model, tmp_path):
    plan = [(440, 1.0, 1.5), (660, 150.0, 1.5), (880, 230.0, 1.5)]
    note = make_clip(None, plan, total_s=240.0, fmt="ogg")
    async with Assistant(omni_settings(model, tmp_path, name="qwen-omni-turbo")) as a:
        reply = await a.handle(Request(CHAT, Task.TRANSCRIBE, Audio(note, "4min.ogg")))
    calls = requests_of(model, "compat")
    assert len(calls) == 2 and all(c.items[0].duration <= 180 for c in calls)
    assert heard(reply.text) == [440, 660, 880]
    assert [c.items[0].bytes for c in calls] and all(c.items[0].bytes < 10 * 2**20 for c in calls)


async def test_qwen2_audio_on_vllm_gets_at_most_30_seconds_per_request(model, tmp_path):
    plan = [(440, 1.0, 1.5), (660, 35.0, 1.5), (880, 62.0, 1.5)]
    note = make_clip(None, plan, total_s=65.0, fmt="ogg")
    # a DashScope key is set too: it must not travel to the self-hosted server's origin
    async with Assistant(vllm_settings(model, tmp_path, dashscope_api_key=MODEL_KEY)) as a:
        reply = await a.handle(Request(CHAT, Task.TRANSCRIBE, Audio(note, "note.ogg")))
    calls = requests_of(model, "vllm")
    assert len(calls) == 3 and all(c.items[0].duration <= 30 for c in calls)
    assert all(not c.body["messages"][-1]["content"][0]["input_audio"]["data"].startswith("data:") for c in calls)
    assert heard(reply.text) == [440, 660, 880]
    assert all(MODEL_KEY not in c.headers.get("Authorization", "") for c in calls)


def test_the_catalog_drives_windows_and_unknown_models_take_the_operators_figures():
    assert model_info("qwen3-omni-flash").window > 95 and model_info("qwen-omni-turbo").window < 180
    assert model_info("qwen-omni-turbo-2025-03-26").voices == model_info("qwen-omni-turbo").voices
    odd = model_info("my/whisperish", openai_server=True)
    assert odd.backend is Backend.OPENAI and odd.seconds == 30 and not odd.speaks
    tuned = model_info("my/whisperish", openai_server=True, seconds=90, context=32000)
    assert tuned.seconds == 90 and tuned.max_input == 32000
    assert not model_info("qwen3-omni-flash", openai_server=True).speaks       # vLLM serves text only
    s = Settings(dashscope_region="singapore", model="qwen-omni-turbo")
    assert s.compat_base_url == "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"
    s = Settings(dashscope_base_url="http://gw.internal:8080/api/v1")
    assert s.compat_base_url == "http://gw.internal:8080/compatible-mode/v1"
    s = Settings(model="Qwen/Qwen2.5-Omni-7B", openai_base_url="http://gpu-host:8000/v1", model_seconds=100)
    assert s.model_info.seconds == 100


# --- spoken answers ---------------------------------------------------------------------------------

async def test_a_chat_with_voice_on_gets_an_ogg_opus_answer_and_voice_off_text(model, tmp_path):
    note = make_clip(None, [(440, 0.5, 1.0)], total_s=2.0, fmt="ogg")
    async with Assistant(omni_settings(model, tmp_path)) as a:
        assert await a.voice_on(CHAT, "ethan") == "Ethan"
        spoken = await a.handle(Request(CHAT, Task.CHAT, Audio(note, "v.ogg")))
        assert spoken.speech is not None and spoken.speech.voice == "Ethan"
        assert spoken.speech.ogg[:4] == b"OggS" and b"OpusHead" in spoken.speech.ogg[:200]
        pcm = decode_pcm(spoken.speech.ogg)
        assert len(pcm) / 16000 == pytest.approx(spoken.speech.seconds, abs=0.1)
        [(hz, _)] = find_tones(pcm.astype("float64"))
        assert abs(hz - SPOKEN_HZ) <= 5                                      # the model's own speech
        summary = await a.handle(Request(CHAT, Task.SUMMARIZE, Audio(note, "v.ogg")))
        assert summary.speech is None                                        # only chat and ask are spoken
        await a.voice_off(CHAT)
        plain = await a.handle(Request(CHAT, Task.CHAT, Audio(note, "v.ogg")))
        assert plain.speech is None and model.calls[-1].voice is None
        with pytest.raises(VoiceUnavailable, match="Cherry"):
            await a.voice_on(CHAT, "Tina")
    async with Assistant(vllm_settings(model, tmp_path)) as a:
        with pytest.raises(VoiceUnavailable) as exc:
            await a.voice_on(CHAT)
        assert exc.value.user_message.startswith(messages.CANNOT_SPEAK.split("{")[0])
        assert await a.voice(CHAT) is None


# --- the command line -------------------------------------------------------------------------------


def test_cli_speak_writes_a_playable_ogg_opus_file(threaded_model, tmp_path):
    note = tmp_path / "note.ogg"
    make_clip(note, [(440, 0.5, 1.0)], total_s=2.0, fmt="ogg")
    out = tmp_path / "out.ogg"
    p = earshot(cli_env(threaded_model, tmp_path, EARSHOT_MODEL="qwen-omni-turbo"), "ask", note, "What is it?",
                "--speak", out, "--voice", "serena")
    assert p.returncode == 0, p.stderr
    assert heard(p.stdout) == [440] and threaded_model.calls[-1].voice == "Serena"
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(out), "-f", "null", "-"],
                           capture_output=True, text=True)
    assert probe.returncode == 0 and "Audio: opus" in probe.stderr and "Input #0, ogg" in probe.stderr


def test_cli_speak_on_a_model_that_cannot_speak_is_one_line_and_exit_4(threaded_model, tmp_path):
    note = tmp_path / "note.ogg"
    make_clip(note, [(440, 0.5, 1.0)], total_s=2.0, fmt="ogg")
    p = earshot(cli_env(threaded_model, tmp_path), "ask", note, "--speak", tmp_path / "x.ogg")
    assert p.returncode == 4 and "can't speak" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = earshot(cli_env(threaded_model, tmp_path, EARSHOT_MODEL="qwen-omni-turbo"), "ask", note,
                "--speak", tmp_path / "x.ogg", "--voice", "Tina")
    assert p.returncode == 1 and "Cherry, Serena, Ethan, Chelsie" in p.stderr
    assert not threaded_model.calls and not (tmp_path / "x.ogg").exists()        # nothing sent, nothing written


async def test_vllm_errors_are_typed_too(model):
    from tests.fakes.dashscope import Failure as F
    model.compat.vllm_key = "vllm-secret"
    async with client(model, dashscope=False, key="wrong", name="Qwen/Qwen2-Audio-7B-Instruct") as c:
        with pytest.raises(ModelAuthError) as exc:
            await c.generate(clip_messages())
    assert "EARSHOT_OPENAI_API_KEY" in exc.value.operator_message and "wrong" not in exc.value.operator_message
    model.fail(F(400, "BadRequestError", "mid-answer failure", mid_stream=True))
    seen: list[str] = []

    async def on_delta(p: str) -> None:
        seen.append(p)

    async with client(model, dashscope=False, key="vllm-secret", name="Qwen/Qwen2-Audio-7B-Instruct") as c:
        with pytest.raises(ModelInputError) as exc:
            await c.generate(clip_messages(), on_delta=on_delta)
    assert seen and not exc.value.retryable                   # text was shown: never asked again
    async with client(model, dashscope=False, key="vllm-secret", name="Qwen/Nope") as c:
        with pytest.raises(ModelAuthError, match="no model Qwen/Nope"):
            await c.generate(clip_messages())


async def test_a_stalled_server_times_out_and_is_asked_again(model):
    from tests.fakes.dashscope import HANG
    model.fail(replace(HANG, hang=5.0))
    async with client(model, timeout=0.5) as c:
        answer = await c.generate(clip_messages())
    assert heard(answer.text) == [440]
    assert len(model.calls) == 2 and model.calls[1].status == 200   # the first given up on, then asked again
