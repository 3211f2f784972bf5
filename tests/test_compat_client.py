"""earshot's own client for OpenAI-compatible servers (core.model.openai_compat), which speaks JSON and
server-sent events itself instead of through the openai SDK: the CLI's path to the recognizer loads no SDK,
and what the SDK did that servers and users rely on still holds (no key, no Authorization header; an error
inside a stream; an answer that isn't JSON; a host that can't be reached)."""
from __future__ import annotations

import ast
import base64
import time
from dataclasses import replace
from pathlib import Path

import pytest

from core.errors import BadModelResponse, ContentRejected, ModelUnavailable, QuotaExhausted
from core.model.openai_compat import OpenAICompatClient
from tests.audio_fixtures import make_clip
from tests.conftest import MODEL_KEY, cli_env, earshot, one_clean_line
from tests.fakes.dashscope import FREE_TIER_ONLY, HTML, Failure, heard, tone_audio
from tests.fakes.speech import ASR_MARK

ROOT = Path(__file__).resolve().parent.parent


def omni(model, **kw) -> OpenAICompatClient:
    return OpenAICompatClient(MODEL_KEY, model.url + "/compatible-mode/v1", "qwen3-omni-flash", dashscope=True,
                              backoff=0.01, **kw)


def recognizer(model, **kw) -> OpenAICompatClient:
    return OpenAICompatClient(MODEL_KEY, model.url + "/compatible-mode/v1", "qwen3-asr-flash", dashscope=True,
                              backoff=0.01, **kw)


def messages() -> list[dict]:
    b64 = base64.b64encode(tone_audio((0, 0.3), (440, 1.0), (0, 0.5))).decode()
    return [{"role": "user", "content": [{"audio": "data:;base64," + b64}, {"text": "Transcribe."}]}]


def note() -> bytes:
    return tone_audio((0, 0.3), (440, 1.0), (0, 0.5), fmt="ogg")


# --- no SDK ---------------------------------------------------------------------------------------------

def test_no_module_of_earshot_imports_the_openai_sdk():
    found = []
    for path in [*(ROOT / "core").rglob("*.py"), *(ROOT / "bots").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "openai"]
    assert not found, found


def test_a_transcript_by_the_recognizer_from_the_terminal_loads_no_openai_sdk(threaded_model, tmp_path):
    path = tmp_path / "n.ogg"
    make_clip(path, [(440, 0.5, 1.0)], total_s=2.0, fmt="ogg")
    # -X importtime's report, on stderr: one line per module the command imported
    env = cli_env(threaded_model, tmp_path, EARSHOT_ASR_MODEL="qwen3-asr-flash", PYTHONPROFILEIMPORTTIME="1")
    p = earshot(env, "transcribe", path, "--no-cache")
    assert p.returncode == 0 and ASR_MARK in p.stdout, p.stderr
    modules = {line.rsplit("|", 1)[1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}
    assert "core.model.openai_compat" in modules                       # the recognizer's client was used
    assert not {m for m in modules if m.split(".")[0] == "openai"}
    assert [c.task for c in threaded_model.calls] == ["asr"]


# --- what the SDK did, kept -----------------------------------------------------------------------------

async def test_a_keyless_server_gets_no_authorization_header(model):
    async with OpenAICompatClient("", model.url + "/v1", "Qwen/Qwen2-Audio-7B-Instruct", dashscope=False) as c:
        answer = await c.generate(messages())
    [call] = model.calls
    assert heard(answer.text) == [440] and "Authorization" not in call.headers
    assert call.headers["Content-Type"] == "application/json" and call.headers["Accept"] == "text/event-stream"


async def test_an_error_event_inside_dashscopes_stream_is_typed_and_not_asked_again_once_shown(model):
    model.fail(replace(Failure(400, "DataInspectionFailed", "Output data may contain inappropriate content."),
                       mid_stream=True))
    shown: list[str] = []

    async def on_delta(piece: str) -> None:
        shown.append(piece)

    async with omni(model) as c:
        with pytest.raises(ContentRejected) as exc:
            await c.generate(messages(), on_delta=on_delta)
    assert shown and not exc.value.retryable and len(model.calls) == 1
    assert exc.value.code == "DataInspectionFailed"


async def test_a_service_failure_inside_the_stream_is_asked_again_when_nothing_was_shown(model):
    model.fail(Failure(500, "InternalError", "An internal error has occured.", mid_stream=True))
    async with omni(model) as c:
        answer = await c.generate(messages())
    assert heard(answer.text) == [440] and [x.status for x in model.calls] == [500, 200]


async def test_the_recognizer_reads_its_answer_and_the_language_it_heard(model):
    async with recognizer(model) as c:
        answer = await c.recognize(note(), mime="audio/ogg", fmt="ogg", language="de")
    [call] = model.calls
    assert call.task == "asr" and not call.stream and call.asr_options == {"enable_itn": False, "language": "de"}
    assert call.headers["Authorization"] == f"Bearer {MODEL_KEY}" and call.headers["Accept"] == "application/json"
    assert answer.text.startswith(ASR_MARK) and answer.language == "de" and answer.emotion == "neutral"
    assert answer.usage.audio_tokens == call.usage["prompt_tokens_details"]["audio_tokens"]


async def test_a_page_that_is_not_json_from_the_recognizer_names_the_setting_and_is_not_asked_again(model):
    model.fail(replace(HTML, status=200))
    async with recognizer(model) as c:
        with pytest.raises(BadModelResponse) as exc:
            await c.recognize(note(), mime="audio/ogg", fmt="ogg")
    assert "DASHSCOPE_COMPAT_BASE_URL" in exc.value.operator_message
    assert not exc.value.retryable and len(model.calls) == 1          # a wrong base URL doesn't heal


async def test_a_gateway_page_before_the_recognizer_is_asked_again(model):
    model.fail(HTML)
    async with recognizer(model) as c:
        answer = await c.recognize(note(), mime="audio/ogg", fmt="ogg")
    assert answer.text.startswith(ASR_MARK) and [x.status for x in model.calls] == [502, 200]


async def test_the_recognizers_errors_carry_the_code_and_the_request_id(model):
    model.fail(FREE_TIER_ONLY)
    async with recognizer(model) as c:
        with pytest.raises(QuotaExhausted) as exc:
            await c.recognize(note(), mime="audio/ogg", fmt="ogg")
    [call] = model.calls
    assert exc.value.code == "AllocationQuota.FreeTierOnly" and exc.value.request_id == call.request_id
    assert "qwen3-asr-flash" in exc.value.operator_message


def test_an_unreachable_recognizer_fails_fast_naming_the_setting(threaded_model, tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "n.ogg"
    make_clip(path, [(440, 0.5, 1.0)], total_s=2.0, fmt="ogg")
    env = cli_env(threaded_model, tmp_path, EARSHOT_ASR_MODEL="qwen3-asr-flash", EARSHOT_RETRY_BUDGET="60",
                  DASHSCOPE_HTTP_BASE_URL=f"http://127.0.0.1:{port}/api/v1")
    started = time.monotonic()
    p = earshot(env, "transcribe", path, "--no-cache")
    took = time.monotonic() - started
    line = one_clean_line(p.stderr)
    assert p.returncode == 3 and "127.0.0.1" in line and "DASHSCOPE_HTTP_BASE_URL" in line, line
    assert took < 10, took


async def test_a_recognizer_that_never_answers_is_given_up_on_and_asked_again(model):
    model.fail(Failure(None, hang=5.0))
    async with recognizer(model, timeout=0.5) as c:
        answer = await c.recognize(note(), mime="audio/ogg", fmt="ogg")
    assert answer.text.startswith(ASR_MARK) and len(model.calls) == 2


async def test_a_stream_that_stalls_after_the_first_words_is_a_typed_failure_not_asked_again(model):
    model.chunk_delay = 2.0                     # each piece of the answer waits this long after the last
    shown: list[str] = []

    async def on_delta(piece: str) -> None:
        shown.append(piece)

    async with omni(model, timeout=0.3) as c:
        with pytest.raises(ModelUnavailable) as exc:
            await c.generate(messages(), on_delta=on_delta)
    assert shown and not exc.value.retryable and len(model.calls) == 1
    assert "no answer within 0.3s" in exc.value.operator_message
