"""The Assistant end to end: real audio pipeline, real httpx client, DashScope stand-in on loopback."""
from __future__ import annotations

import asyncio
import re

import pytest

from core.errors import AudioError, ModelAuthError, ModelThrottled, NeedsAudio, NeedsText
from core.flow.service import Assistant
from core.values import Audio, ChatKey, Progress, Request, Task, Usage
from core.words import messages
from tests.audio_fixtures import make_clip
from tests.conftest import settings_for
from tests.fakes.dashscope import FREE_QUOTA, TEXT_ONLY_MARKER, FakeDashScope, heard

# every test here runs on SQLite and on PostgreSQL (tests/conftest.py: db_target)
pytestmark = pytest.mark.usefixtures("db_target")

CHAT = ChatKey("telegram", "42")
SHORT = [(440, 0.5, 1.0), (660, 2.0, 1.0)]
# 70 s: tones well inside each 30 s window, and one (880 Hz) straddling the 30 s mark
LONG = [(440, 1.0, 2.0), (880, 28.5, 3.0), (550, 45.0, 2.0), (660, 64.0, 2.0)]


@pytest.fixture(scope="module")
def short_ogg() -> bytes:
    return make_clip(None, SHORT, total_s=3.5, fmt="ogg")


@pytest.fixture(scope="module")
def long_ogg() -> bytes:
    return make_clip(None, LONG, total_s=70.0, fmt="ogg")


@pytest.fixture
def fake(model: FakeDashScope) -> FakeDashScope:
    return model


@pytest.fixture
async def assistant(fake, tmp_path):
    async with Assistant(settings_for(fake, tmp_path, retry_budget=2)) as a:
        yield a


async def test_voice_chat_sends_the_audio_alone(assistant, fake, short_ogg):
    reply = await assistant.handle(Request(CHAT, Task.CHAT, Audio(short_ogg, "voice.ogg")))
    assert heard(reply.text) == [440, 660]
    [call] = fake.calls
    assert call.model == "qwen-audio-turbo-latest"
    user = call.body["input"]["messages"][-1]
    assert [list(item) for item in user["content"]] == [["audio"]]  # voice chat: no text item
    assert call.items[0].format == "mp3" and call.items[0].accepted
    assert reply.usage.audio_tokens > 0 and reply.request_ids == (call.request_id,)


async def test_question_goes_with_the_audio(assistant, fake, short_ogg):
    await assistant.handle(Request(CHAT, Task.ASK, Audio(short_ogg), text="when does the beep start?"))
    assert any("when does the beep start?" in t for t in fake.calls[0].texts)


async def test_long_audio_is_heard_in_order_with_offsets(assistant, fake, long_ogg):
    seen: list[Progress] = []

    async def progress(p: Progress) -> None:
        seen.append(p)

    reply = await assistant.handle(Request(CHAT, Task.TRANSCRIBE, Audio(long_ogg, "long.ogg")), progress=progress)
    items = fake.audio_items()
    assert len(items) == 3 and all(not i.over_30s and i.accepted for i in items)
    assert heard(reply.text) == [440, 880, 550, 660]         # every part, in order
    assert reply.text.startswith("[00:00]") and "[00:" in reply.text[8:]
    assert [p.start for p in reply.parts] == sorted(p.start for p in reply.parts)
    # the tone across the 30 s limit was not cut: it reached the model whole, in one part
    straddler = [i for i in items if any(hz == 880 for hz, _ in i.tones)]
    assert len(straddler) == 1
    assert seen[-1] == Progress(3, 3) and seen[0].total == 3


async def test_long_summary_maps_then_combines_with_one_text_call(assistant, fake, long_ogg):
    reply = await assistant.handle(Request(CHAT, Task.SUMMARIZE, Audio(long_ogg)))
    audio_calls = [c for c in fake.calls if c.items]
    text_calls = [c for c in fake.calls if not c.items]
    assert len(audio_calls) == 3 and len(text_calls) == 1
    assert reply.text.startswith(TEXT_ONLY_MARKER)
    assert heard(reply.text) == [440, 880, 550, 660]
    assert reply.usage.total == sum(c.usage["audio_tokens"] + c.usage["input_tokens"] + c.usage["output_tokens"]
                                    for c in fake.calls)


async def test_chunks_run_concurrently_within_bounds(fake, tmp_path, long_ogg):
    fake.latency = 0.3
    async with Assistant(settings_for(fake, tmp_path, retry_budget=2, chunk_concurrency=2)) as a:
        await a.handle(Request(CHAT, Task.TRANSCRIBE, Audio(long_ogg)))
    assert fake.max_in_flight == 2  # in parallel, but never more than the bound


async def test_follow_up_carries_history_and_reset_clears_it(assistant, fake, short_ogg):
    await assistant.handle(Request(CHAT, Task.CHAT, Audio(short_ogg)))
    await assistant.handle(Request(CHAT, Task.FOLLOW_UP, text="and what came second?"))
    roles = fake.calls[-1].roles
    assert roles == ["system", "user", "assistant", "user"]
    assert fake.calls[-1].texts[-1] == "and what came second?"
    await assistant.history.reset(CHAT)
    with pytest.raises(NeedsAudio):
        await assistant.handle(Request(CHAT, Task.FOLLOW_UP, text="still there?"))
    assert (await assistant.history.usage_today(CHAT)).total > 0


async def test_history_is_trimmed_to_the_input_limit(fake, tmp_path, short_ogg):
    async with Assistant(settings_for(fake, tmp_path, retry_budget=2, history_turns=200)) as a:
        for i in range(12):
            await a.history.add_exchange(CHAT, "u", f"question {i} " + "word " * 400, "answer " * 400,
                                         usage=Usage())
        await a.handle(Request(CHAT, Task.FOLLOW_UP, text="sum it up"))
    call = fake.calls[-1]
    assert call.usage["input_tokens"] <= 6144
    assert 1 < len(call.roles) < 25 and call.roles[1] == "user"
    assert "question 11" in " ".join(call.texts)                   # the newest turns are the ones kept
    assert "question 0 " not in " ".join(call.texts)


async def test_chats_run_in_parallel(fake, tmp_path, short_ogg):
    """The Assistant keeps no order of its own: a chat's turns are put in order by the job runner
    (test_jobs: one chat in order, a reserved place)."""
    fake.latency = 0.3
    async with Assistant(settings_for(fake, tmp_path, retry_budget=2)) as a:
        await asyncio.gather(*(a.handle(Request(ChatKey("telegram", str(i)), Task.CHAT, Audio(short_ogg)))
                               for i in range(6)))
        assert fake.max_in_flight >= 3


async def test_bad_input_costs_nothing(assistant, fake):
    with pytest.raises(AudioError) as e:
        await assistant.handle(Request(CHAT, Task.TRANSCRIBE, Audio(b"shopping list: milk\n" * 40, "notes.ogg")))
    assert e.value.user_message and "Traceback" not in e.value.user_message
    with pytest.raises(NeedsText, match=re.escape(messages.NEED_QUESTION)):
        await assistant.handle(Request(CHAT, Task.ASK, Audio(b"x"), text=" "))
    with pytest.raises(NeedsAudio):
        await assistant.handle(Request(CHAT, Task.SUMMARIZE))
    assert fake.calls == []


async def test_model_errors_reach_the_caller_typed(fake, tmp_path, short_ogg):
    async with Assistant(settings_for(fake, tmp_path, retry_budget=2, dashscope_api_key=None)) as a:
        with pytest.raises(ModelAuthError):
            await a.handle(Request(CHAT, Task.CHAT, Audio(short_ogg)))
    assert fake.calls == []
    fake.fail(FREE_QUOTA)
    async with Assistant(settings_for(fake, tmp_path, retry_budget=2)) as a:
        with pytest.raises(Exception) as e:
            await a.handle(Request(CHAT, Task.CHAT, Audio(short_ogg)))
    assert e.value.operator and not isinstance(e.value, ModelThrottled)
    assert e.value.user_message == messages.QUOTA_USED_UP


async def test_streaming_reports_partial_text(assistant, fake, short_ogg):
    partials: list[str] = []

    async def progress(p: Progress) -> None:
        if p.partial:
            partials.append(p.partial)

    reply = await assistant.handle(Request(CHAT, Task.CHAT, Audio(short_ogg)), progress=progress, stream=True)
    assert fake.calls[0].stream
    assert len(partials) > 1 and partials[-1].strip() == reply.text
