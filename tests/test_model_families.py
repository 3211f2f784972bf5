"""Any model by its family name (snapshots included), models declared by the operator, and vLLM as it really
answers: numeric error codes (in the stream and out of it) and no audio token figure."""
from __future__ import annotations

import base64
import json
import logging

import openai
import pytest

from core.config import Settings
from core.errors import ModelInputError, ModelUnavailable
from core.flow.service import Assistant
from core.model.catalog import Backend, Job, ModelSpec, model_info
from core.model.openai_compat import OpenAICompatClient
from core.values import Audio, ChatKey, Request, Task
from tests.audio_fixtures import make_clip
from tests.conftest import cli_env, earshot, settings_for
from tests.fakes.dashscope import Failure, heard, tone_audio

CHAT = ChatKey("telegram", "7")


def note() -> bytes:
    return tone_audio((0, 0.3), (440, 1.0), (0, 0.5))


@pytest.mark.parametrize("name, voices", [("qwen3.5-omni-plus", True), ("qwen3.8-omni-flash", False),
                                          ("qwen3.5-omni-plus-2026-03-15", True), ("qwen3-omni-flash-2025-12-01", True),
                                          ("qwen-omni-turbo-latest", True), ("qwen7-omni-max", True)])
def test_every_omni_name_resolves_to_the_compatible_mode(name, voices):
    info = model_info(name)
    assert info.backend is Backend.COMPAT and info.job is Job.CHAT and info.seconds >= 180
    assert info.speaks is voices and info.resolved != "guess"


def test_families_other_than_omni_and_the_cautious_guess():
    assert model_info("qwen-audio-turbo-2024-12-04").backend is Backend.NATIVE
    asr = model_info("qwen3-asr-flash-2026-02-10")
    assert asr.job is Job.ASR and asr.backend is Backend.COMPAT and asr.seconds == 300 and "ogg" in asr.formats
    assert model_info("qwen3-tts-flash-2025-11-27").job is Job.TTS
    assert model_info("Qwen/Qwen3-ASR-1.7B", openai_server=True).backend is Backend.OPENAI
    assert model_info("Qwen/Qwen3-ASR-1.7B", openai_server=True).job is Job.ASR
    guess = model_info("some-new-thing")
    assert guess.resolved == "guess" and guess.seconds == 30        # Qwen-Audio's cautious figures


def test_an_operator_declares_a_model_in_one_setting(monkeypatch):
    specs = {"qwen4-omni-max": {"backend": "compat", "seconds": 600, "voices": ["Cherry", "Ethan"]},
             "house-asr": {"backend": "openai", "job": "asr", "seconds": 120}}
    monkeypatch.setenv("EARSHOT_MODEL_SPECS", json.dumps(specs))
    s = Settings(model="qwen4-omni-max", asr_model="house-asr", openai_base_url="http://gpu:8000/v1")
    info = s.model_info       # declared compat: EARSHOT_OPENAI_BASE_URL is for the others
    assert info.backend is Backend.COMPAT and info.seconds == 600 and info.voices == ("Cherry", "Ethan")
    assert "declared" in info.resolved
    rec = s.info_of("house-asr")
    assert rec.job is Job.ASR and rec.backend is Backend.OPENAI and rec.seconds == 120
    with pytest.raises(ValueError):
        ModelSpec.model_validate({"backend": "somewhere"})


async def test_qwen3_5_omni_plus_goes_to_the_compatible_mode_by_its_snapshot_name(model, tmp_path):
    async with Assistant(settings_for(model, tmp_path, model="qwen3.5-omni-plus-2026-03-15")) as a:
        reply = await a.handle(Request(CHAT, Task.TRANSCRIBE, Audio(note(), "n.mp3")))
    [call] = [c for c in model.calls if c.items]
    assert call.api == "compat" and call.model == "qwen3.5-omni-plus-2026-03-15" and call.stream
    assert heard(reply.text) == [440]
    assert not [c for c in model.calls if c.api == "native"]


# --- the stand-in answers as vLLM does --------------------------------------------------------------

async def test_vllm_stand_in_sends_numeric_codes_in_and_out_of_the_stream(model):
    sdk = openai.AsyncOpenAI(api_key="x", base_url=model.url + "/v1", max_retries=0)
    b64 = base64.b64encode(note()).decode()
    msgs = [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": b64, "format": "mp3"}}]}]
    try:
        model.fail(Failure(500, "InternalServerError", "engine died"))
        with pytest.raises(openai.InternalServerError) as exc:
            await sdk.chat.completions.create(model="Qwen/Qwen2-Audio-7B-Instruct", messages=msgs)
        assert exc.value.body == {"message": "engine died", "type": "InternalServerError", "param": None,
                                  "code": 500}
        model.fail(Failure(500, "InternalServerError", "engine died mid-way", mid_stream=True))
        stream = await sdk.chat.completions.create(model="Qwen/Qwen2-Audio-7B-Instruct", messages=msgs,
                                                   stream=True)
        with pytest.raises(openai.APIError) as err:
            async for _ in stream:
                pass
        assert isinstance(err.value.body, dict) and err.value.body["code"] == 500
        done = await sdk.chat.completions.create(model="Qwen/Qwen2-Audio-7B-Instruct", messages=msgs)
        assert done.usage is not None and done.usage.prompt_tokens > 25
        assert done.usage.prompt_tokens_details is None                 # no audio_tokens, as vLLM
    finally:
        await sdk.close()


# --- earshot against it --------------------------------------------------------------------------------

def vllm(model, **kw) -> OpenAICompatClient:
    return OpenAICompatClient("", model.url + "/v1", "Qwen/Qwen2-Audio-7B-Instruct", dashscope=False,
                              backoff=0.01, **kw)


def clip() -> list[dict]:
    return [{"role": "user", "content": [{"audio": "data:;base64," + base64.b64encode(note()).decode()},
                                         {"text": "Transcribe."}]}]


async def test_an_engine_failure_in_the_stream_is_retried_and_logged_with_the_servers_name(model, caplog):
    model.fail(Failure(500, "InternalServerError", "EngineDeadError", mid_stream=True))
    caplog.set_level(logging.INFO)
    async with vllm(model) as c:       # no on_delta: nothing was shown, so asking again is safe
        answer = await c.generate(clip())
    assert heard(answer.text) == [440] and [x.status for x in model.calls] == [500, 200]
    text = " ".join(caplog.messages)
    assert "The model server at" in text and "dashscope" not in text.lower()


async def test_an_engine_failure_out_of_the_stream_is_a_retryable_service_error(model):
    model.fail(*[Failure(500, "InternalServerError", "EngineDeadError")] * 5)
    async with vllm(model, max_attempts=2) as c:
        with pytest.raises(ModelUnavailable) as exc:
            await c.generate(clip())
    assert exc.value.retryable and len(model.calls) == 2
    assert "DashScope" not in exc.value.operator_message


async def test_a_400_in_the_stream_is_the_inputs_fault(model):
    model.fail(Failure(400, "BadRequestError", "input_features dim[2] expected 3000", mid_stream=True))
    async with vllm(model) as c:
        with pytest.raises(ModelInputError) as exc:
            await c.generate(clip())
    assert not exc.value.retryable and len(model.calls) == 1
    assert "The model server at" in exc.value.operator_message


async def test_vllm_audio_tokens_are_estimated_and_said_to_be(model, tmp_path):
    s = Settings(openai_base_url=model.url + "/v1", model="Qwen/Qwen2-Audio-7B-Instruct",
                 db_path=tmp_path / "e.db", retry_budget=3)
    async with Assistant(s) as a:
        reply = await a.handle(Request(CHAT, Task.TRANSCRIBE, Audio(note(), "n.mp3")))
    [call] = [c for c in model.calls if c.items]
    assert reply.usage.estimated and reply.usage.audio_tokens == 50          # 1.8 s: two started seconds × 25
    assert reply.usage.audio_tokens + reply.usage.input_tokens == call.usage["prompt_tokens"]


def test_cli_json_says_which_figures_are_estimates(threaded_model, tmp_path):
    path = tmp_path / "n.ogg"
    make_clip(path, [(440, 0.5, 1.0)], total_s=2.0, fmt="ogg")
    env = cli_env(threaded_model, tmp_path, EARSHOT_OPENAI_BASE_URL=threaded_model.url + "/v1",
                  EARSHOT_MODEL="Qwen/Qwen2-Audio-7B-Instruct")
    p = earshot(env, "transcribe", path, "--json")
    assert p.returncode == 0, p.stderr
    usage = json.loads(p.stdout)["usage"]
    assert usage["estimated"] == ["audio_tokens", "input_tokens"] and usage["audio_tokens"] > 0
    p = earshot(cli_env(threaded_model, tmp_path), "transcribe", path, "--json")     # DashScope: its own figures
    assert json.loads(p.stdout)["usage"]["estimated"] == []

