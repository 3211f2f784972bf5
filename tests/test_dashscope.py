"""DashScopeClient against the DashScope stand-in, over real HTTP on loopback."""
from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import time
from dataclasses import replace
from itertools import pairwise

import httpx
import pytest

from core.errors import (
    AudioError,
    BadModelResponse,
    ContentRejected,
    ModelAuthError,
    ModelError,
    ModelInputError,
    ModelThrottled,
    ModelUnavailable,
    QuotaExhausted,
)
from core.model.dashscope import DashScopeClient, ModelAnswer, audio_item, text_item
from core.values import Usage
from tests.fakes.dashscope import (
    ACCESS_DENIED,
    ARREARAGE,
    BAD_PARAMETER,
    CONTENT,
    FREE_QUOTA,
    FREE_TIER_ONLY,
    HANG,
    HTML,
    SERVER_ERROR,
    TEXT_ONLY_MARKER,
    THROTTLED,
    UNAVAILABLE,
    Failure,
    FakeDashScope,
    tone_audio,
)
from tests.fakes.server import Served, Threaded

KEY = "sk-test-9f8e7d6c5b4a-SECRET"
JSON_TYPE = "application/json; charset=utf-8"


@functools.cache
def tones(fmt: str = "mp3") -> bytes:
    return tone_audio((0, 0.5), (440, 1.0), (0, 1.5), (660, 1.0), (0, 0.2), fmt=fmt)


def ask(audio: bytes | None = None, text: str = "What do you hear?") -> list[dict]:
    content = [audio_item(audio if audio is not None else tones()), text_item(text)]
    return [{"role": "system", "content": [text_item("You are a careful listener.")]},
            {"role": "user", "content": content}]


@pytest.fixture
def fake() -> FakeDashScope:
    return FakeDashScope(api_key=KEY)


@pytest.fixture
async def served(fake):
    async with Served(fake.app) as s:
        yield s


@pytest.fixture
async def make_client(served):
    clients: list[DashScopeClient] = []

    def make(**kw) -> DashScopeClient:
        opts = {"timeout": 5.0, "retry_budget": 5.0, "backoff": 0.01, "max_attempts": 4} | kw
        client = DashScopeClient(opts.pop("api_key", KEY), opts.pop("base_url", served.url + "/api/v1"),
                                 opts.pop("model", "qwen-audio-turbo-latest"), **opts)
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.aclose()


# --- the request and the answer ------------------------------------------------------------------

async def test_request_is_exactly_what_the_service_documents(fake, make_client):
    client = make_client()
    msgs = ask()
    answer = await client.generate(msgs, max_tokens=200)

    [call] = fake.calls
    assert call.headers["Authorization"] == f"Bearer {KEY}"
    assert call.headers["Content-Type"] == JSON_TYPE
    assert call.headers["Accept"] == JSON_TYPE
    assert "X-DashScope-SSE" not in call.headers
    assert call.body == {"model": "qwen-audio-turbo-latest", "input": {"messages": msgs},
                         "parameters": {"result_format": "message", "max_tokens": 200}}
    uri = call.body["input"]["messages"][1]["content"][0]["audio"]
    assert uri.startswith("data:;base64,")
    assert base64.b64decode(uri.removeprefix("data:;base64,")) == tones()
    [item] = call.items
    assert item.format == "mp3" and item.accepted and not item.over_30s

    assert isinstance(answer, ModelAnswer)
    assert answer.text == "heard 440Hz@0.5s 660Hz@3.0s (4.2s)" == call.reply
    assert answer.request_id == call.request_id
    assert answer.finish_reason == "stop"
    assert answer.usage == Usage(**call.usage)
    assert 100 <= answer.usage.audio_tokens <= 110       # 25 per second heard


async def test_parameters_are_sent_even_when_empty(fake, make_client):
    await make_client(model="qwen-audio-turbo").generate([{"role": "user", "content": [text_item("hi")]}])
    assert fake.calls[0].body["parameters"] == {"result_format": "message"}
    assert fake.calls[0].reply.startswith(TEXT_ONLY_MARKER)


async def test_usage_with_input_token_details_counts_audio_once(fake, make_client):
    fake.usage_style = "details"
    answer = await make_client().generate(ask())
    raw = fake.calls[0].usage
    assert answer.usage.audio_tokens == raw["input_tokens_details"]["audio_tokens"] > 0
    assert answer.usage.input_tokens == raw["input_tokens_details"]["text_tokens"]
    assert answer.usage.total == raw["total_tokens"]


async def test_wav_and_other_listed_formats_are_heard(fake, make_client):
    client = make_client()
    for fmt in ("wav", "aac", "amr", "3gp"):
        answer = await client.generate(ask(tones(fmt)))
        heard = fake.calls[-1].items[0].tones                 # AAC adds ~0.07 s of encoder priming
        assert [hz for hz, _ in heard] == [440, 660], (fmt, answer.text)
        assert heard[0][1] == pytest.approx(0.5, abs=0.1) and heard[1][1] == pytest.approx(3.0, abs=0.1)
    assert [i.format for i in fake.audio_items()] == ["wav", "aac", "amr", "3gp"]


def test_audio_item_refuses_what_the_service_would():
    assert audio_item(b"\xff\xfb\x90") == {"audio": "data:;base64,//uQ"}
    assert text_item("x") == {"text": "x"}
    with pytest.raises(AudioError, match="10 MB"):
        audio_item(b"\0" * (8 * 1024 * 1024))             # 8 MB raw is ~10.7 MB encoded


# --- streaming -----------------------------------------------------------------------------------

async def test_stream_hands_over_deltas_and_returns_the_whole_answer(fake, make_client):
    deltas: list[str] = []

    async def on_delta(piece: str) -> None:
        deltas.append(piece)

    answer = await make_client().generate(ask(), on_delta=on_delta, max_tokens=300)
    [call] = fake.calls
    assert call.headers["X-DashScope-SSE"] == "enable"
    assert call.headers["Accept"] == "text/event-stream"
    assert call.parameters == {"result_format": "message", "max_tokens": 300, "incremental_output": True}
    assert len(deltas) >= 3
    assert "".join(deltas) == answer.text == call.reply == "heard 440Hz@0.5s 660Hz@3.0s (4.2s)"
    assert answer.usage == Usage(**call.usage)              # the last (cumulative) usage
    assert answer.request_id == call.request_id and answer.finish_reason == "stop"


async def test_mid_stream_error_is_raised_and_never_retried(fake, make_client):
    fake.fail(replace(SERVER_ERROR, mid_stream=True))
    deltas: list[str] = []

    async def on_delta(piece: str) -> None:
        deltas.append(piece)

    with pytest.raises(ModelUnavailable) as info:
        await make_client().generate(ask(), on_delta=on_delta)
    assert len(deltas) == 1                                  # got one piece, then the error
    assert len(fake.calls) == 1
    assert info.value.status == 500 and info.value.code == "InternalError"
    assert info.value.request_id == fake.calls[0].request_id


async def test_stream_refused_up_front_is_retried(fake, make_client):
    fake.fail(THROTTLED)                                     # non-2xx with an SSE error body
    deltas: list[str] = []

    async def on_delta(piece: str) -> None:
        deltas.append(piece)

    answer = await make_client().generate(ask(), on_delta=on_delta)
    assert len(fake.calls) == 2
    assert "".join(deltas) == answer.text == fake.calls[1].reply


# --- errors --------------------------------------------------------------------------------------

async def test_bad_key_is_an_operator_error_naming_the_key(fake, make_client):
    with pytest.raises(ModelAuthError) as info:
        await make_client(api_key="sk-wrong").generate(ask())
    err = info.value
    assert "key" in err.operator_message and "DASHSCOPE_API_KEY" in err.operator_message
    assert err.status == 401 and err.code == "InvalidApiKey" and err.request_id == fake.calls[0].request_id
    assert "sk-wrong" not in str(err) and err.user_message != err.operator_message
    assert len(fake.calls) == 1


async def test_missing_key_fails_without_a_call(fake, make_client):
    with pytest.raises(ModelAuthError, match="DASHSCOPE_API_KEY"):
        await make_client(api_key="").generate(ask())
    assert fake.calls == []


async def test_unknown_model_says_to_fix_earshot_model(fake, make_client):
    with pytest.raises(ModelAuthError, match="EARSHOT_MODEL") as info:
        await make_client(model="qwen-audio-nope").generate(ask())
    assert info.value.code == "ModelNotFound" and len(fake.calls) == 1


@pytest.mark.parametrize(("failure", "error", "phrase"), [
    (ACCESS_DENIED, ModelAuthError, "EARSHOT_MODEL"),
    (FREE_QUOTA, QuotaExhausted, "quota"),
    (FREE_TIER_ONLY, QuotaExhausted, "quota"),
    (ARREARAGE, QuotaExhausted, "billing"),
    (CONTENT, ContentRejected, "inspection"),
    (BAD_PARAMETER, ModelInputError, "InvalidParameter"),
    (Failure(413, "BadRequest.TooLarge", "Payload Too Large."), ModelInputError, "Too Large"),
    (Failure(415, "BadRequest.UnsupportedFileFormat", "Input file format is not supported."),
     ModelInputError, "format"),
])
async def test_errors_that_retrying_cannot_fix_are_not_retried(fake, make_client, failure, error, phrase):
    fake.fail(failure, failure, failure)
    with pytest.raises(error, match=phrase) as info:
        await make_client().generate(ask())
    assert len(fake.calls) == 1
    assert (info.value.status, info.value.code) == (failure.status, failure.code)
    assert info.value.request_id == fake.calls[0].request_id
    assert not info.value.retryable


async def test_unsupported_format_is_refused_by_the_service(fake, make_client):
    with pytest.raises(ModelInputError, match="not supported"):
        await make_client().generate(ask(tones("ogg")))
    assert fake.rejected == ["opus"] and len(fake.calls) == 1


@pytest.mark.parametrize("failure", [THROTTLED, SERVER_ERROR, UNAVAILABLE,
                                     Failure(408, "RequestTimeOut", "Request timed out.")])
async def test_passing_failures_are_retried(fake, make_client, failure):
    fake.fail(failure, failure)
    answer = await make_client().generate(ask())
    assert len(fake.calls) == 3 and answer.request_id == fake.calls[2].request_id


async def test_retries_stop_after_the_attempt_limit(fake, make_client):
    fake.fail(*[SERVER_ERROR] * 10)
    with pytest.raises(ModelUnavailable) as info:
        await make_client(max_attempts=3).generate(ask())
    assert len(fake.calls) == 3
    assert info.value.status == 500 and info.value.request_id == fake.calls[-1].request_id


async def test_retry_after_is_honoured(fake, make_client):
    fake.fail(replace(THROTTLED, retry_after=0.6))
    started = time.monotonic()
    await make_client().generate(ask())
    assert time.monotonic() - started >= 0.6 and len(fake.calls) == 2


async def test_retry_after_beyond_the_budget_gives_up_at_once(fake, make_client):
    fake.fail(replace(THROTTLED, retry_after=120))
    started = time.monotonic()
    with pytest.raises(ModelThrottled) as info:
        await make_client(retry_budget=2).generate(ask())
    assert time.monotonic() - started < 1 and len(fake.calls) == 1
    assert info.value.retry_after == 120 and "busy" in info.value.user_message


async def test_a_hang_times_out_within_the_budget(fake, make_client):
    fake.fail(*[HANG] * 10)
    started = time.monotonic()
    with pytest.raises(ModelUnavailable, match="0.3s"):
        await make_client(timeout=0.3, retry_budget=1.0).generate(ask())
    assert time.monotonic() - started < 2.0
    assert 2 <= len(fake.calls) <= 5


async def test_connection_refused_is_unavailable(make_client):
    client = make_client(base_url="http://127.0.0.1:9/api/v1", retry_budget=0.2, max_attempts=2)
    with pytest.raises(ModelUnavailable, match="Connect"):
        await client.generate(ask())


async def test_a_proxy_page_is_a_bad_response_and_retried_when_5xx(fake, make_client):
    fake.fail(HTML)
    answer = await make_client().generate(ask())
    assert answer.text and len(fake.calls) == 2

    fake.fail(*[HTML] * 10)
    with pytest.raises(BadModelResponse) as info:
        await make_client(max_attempts=2).generate(ask())
    assert "text/html" in info.value.operator_message
    assert "DASHSCOPE_HTTP_BASE_URL" in info.value.operator_message
    assert info.value.status == 502


async def test_a_proxy_page_with_4xx_is_not_retried(fake, make_client):
    fake.fail(*[replace(HTML, status=403)] * 3)
    with pytest.raises(BadModelResponse, match="403"):
        await make_client().generate(ask())
    assert len(fake.calls) == 1


async def test_a_wrong_base_url_is_a_clear_bad_response_not_retried(fake, make_client, served):
    with pytest.raises(BadModelResponse, match="DASHSCOPE_HTTP_BASE_URL"):
        await make_client(base_url=served.url + "/wrong").generate(ask())


async def test_http_200_with_an_error_code_is_an_error(fake, make_client):
    fake.fail(Failure(200, "DataInspectionFailed", "Output data may contain inappropriate content."))
    with pytest.raises(ContentRejected):
        await make_client().generate(ask())


async def test_errors_are_typed_model_errors_with_user_text(fake, make_client):
    fake.fail(*[UNAVAILABLE] * 2)
    with pytest.raises(ModelError) as info:
        await make_client(max_attempts=2).generate(ask())
    assert info.value.user_message == "The model is unavailable right now. Please try again later."


# --- secrets and load ------------------------------------------------------------------------------

async def test_the_key_never_reaches_logs_errors_or_reprs(fake, make_client, caplog):
    caplog.set_level(logging.DEBUG)
    client = make_client(max_attempts=2)
    await client.generate(ask())
    fake.fail(SERVER_ERROR, Failure(400, "InvalidParameter", f"bad request from {KEY}"))
    with pytest.raises(ModelInputError) as info:
        await client.generate(ask())
    bad = make_client(api_key=KEY + "-revoked")
    with pytest.raises(ModelAuthError) as info2:
        await bad.generate(ask())
    assert caplog.records                                   # it does log: request ids, statuses, retries
    for text in (caplog.text, repr(client), repr(bad), str(info.value), repr(info.value),
                 info.value.operator_message, str(info2.value), info2.value.operator_message):
        assert KEY not in text


async def test_calls_in_flight_are_bounded_and_queued_calls_do_not_time_out(make_client):
    fake = FakeDashScope(api_key=KEY, inspect=False, latency=0.25)
    async with Served(fake.app) as s:
        # 8 calls, 2 at a time: the last start ~0.75 s in, after their own 0.6 s timeout would have passed
        client = make_client(base_url=s.url + "/api/v1", max_concurrency=2, timeout=0.6, max_attempts=1)
        answers = await asyncio.gather(*(client.generate(ask()) for _ in range(8)))
    assert len(answers) == 8 and all(a.text.startswith("heard ") for a in answers)
    assert fake.max_in_flight == 2 and len(fake.calls) == 8


async def test_client_works_as_an_async_context_manager_over_a_custom_transport(fake, served):
    async with DashScopeClient(KEY, served.url + "/api/v1/", "qwen2-audio-instruct",
                               transport=httpx.AsyncHTTPTransport(retries=0)) as client:
        answer = await client.generate(ask())
    assert answer.text.startswith("heard 440Hz@0.5s")
    assert fake.calls[0].model == "qwen2-audio-instruct"


# --- the stand-in itself (other suites rely on it being strict) ------------------------------------

def _raw(msgs: list[dict], **parameters) -> dict:
    return {"model": "qwen-audio-turbo", "input": {"messages": msgs}, "parameters": parameters}


@pytest.mark.parametrize(("audio", "code"), [
    ("file:///tmp/a.mp3", "InvalidParameter"),
    ("https://example.com/a.mp3", "InvalidParameter"),
    ("data:audio/mp3;base64,AAAA", "InvalidParameter"),
    ("data:;base64," + "A" * (10 * 1024 * 1024 + 4), "InvalidParameter"),
])
async def test_stand_in_refuses_audio_the_service_would(fake, served, audio, code):
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as http:
        resp = await http.post(served.url + "/api/v1/services/aigc/multimodal-generation/generation",
                               json=_raw([{"role": "user", "content": [{"audio": audio}]}]))
    assert resp.status_code == 400 and resp.json()["code"] == code
    assert fake.calls[0].status == 400


async def test_stand_in_hears_only_the_first_30_seconds(fake, make_client):
    long = tone_audio((0, 1), (440, 1), (0, 29), (880, 1), fmt="mp3")
    answer = await make_client().generate(ask(long))
    [item] = fake.audio_items()
    assert item.over_30s and item.tones == [(440, 1.0)]
    assert answer.text == "heard 440Hz@1.0s (32.0s)"
    assert answer.usage.audio_tokens == 750


async def test_stand_in_text_only_answer_echoes_markers(make_client, fake):
    said = "Summarise: [00:00] heard 440Hz@0.5s; [00:30] heard 660Hz@2.0s"
    msgs = [{"role": "user", "content": [text_item(said)]}]
    answer = await make_client().generate(msgs)
    assert answer.text == f"{TEXT_ONLY_MARKER} 440Hz@0.5s 660Hz@2.0s"
    assert answer.usage.audio_tokens == 0 and answer.usage.input_tokens > 0


async def test_stand_in_enforces_the_models_output_cap(make_client):
    with pytest.raises(ModelInputError, match="max_tokens"):
        await make_client(model="qwen-audio-turbo").generate(ask(), max_tokens=1501)


def test_stand_in_streams_cumulatively_when_asked_and_runs_threaded():
    fake = FakeDashScope(api_key=KEY)
    with Threaded(fake.app) as s, httpx.Client() as http:
        with http.stream("POST", s.url + "/api/v1/services/aigc/multimodal-generation/generation",
                         json=_raw(ask()), headers={"Authorization": f"Bearer {KEY}",
                                                     "X-DashScope-SSE": "enable"}) as resp:
            lines = list(resp.iter_lines())
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert lines[:3] == ["id:1", "event:result", ":HTTP_STATUS/200"]
    choices = [json.loads(ln[5:])["output"]["choices"][0] for ln in lines if ln.startswith("data:")]
    texts = [c["message"]["content"][0]["text"] for c in choices]
    assert len(texts) >= 3 and all(b.startswith(a) for a, b in pairwise(texts))   # not incremental
    assert texts[-1] == fake.calls[0].reply
    assert [c["finish_reason"] for c in choices] == ["null"] * (len(choices) - 1) + ["stop"]


async def test_a_reply_cut_by_max_tokens_says_length(fake, make_client):
    fake.reply = lambda call: "word " * 100
    answer = await make_client().generate(ask(), max_tokens=10)
    assert answer.finish_reason == "length" and len(answer.text) == 40
