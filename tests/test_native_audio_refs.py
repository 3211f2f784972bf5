"""Audio kept by reference (core.flow.audio_refs): short tokens for buttons, bound to their chat, gone with retention
and /forget, so a button on expired audio says so."""
from __future__ import annotations

import pytest

from core.errors import AudioExpired, InputError
from core.flow.audio_refs import TOKEN_MAX, AudioRefs, MemoryAudioRefStore, looks_like_token
from core.values import ChatKey
from core.words import messages

DAY = 86400.0
CHAT = ChatKey("telegram", "501")
OTHER = ChatKey("telegram", "502")
FILE = '{"file_id":"voice-1-fid","kind":"voice","file_unique_id":"u1"}'


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def refs(clock: Clock) -> AudioRefs:
    return AudioRefs(MemoryAudioRefStore(), keep_seconds=30 * DAY, clock=clock)


async def test_a_token_is_short_opaque_and_resolves_to_the_audio_in_its_chat(refs: AudioRefs) -> None:
    token = await refs.mint(CHAT, FILE, audio_id="u1")
    assert looks_like_token(token) and len(token) <= TOKEN_MAX
    assert "fid" not in token and "voice" not in token          # the file id never leaves the server
    found = await refs.resolve(token, CHAT)
    assert (found.platform, found.chat_id, found.ref, found.audio_id) == ("telegram", "501", FILE, "u1")


async def test_the_same_audio_in_the_same_chat_keeps_one_token(refs: AudioRefs) -> None:
    first = await refs.mint(CHAT, FILE)
    assert await refs.mint(CHAT, FILE) == first
    assert await refs.mint(OTHER, FILE) != first                # another chat: its own token
    assert await refs.mint(CHAT, FILE + " ") != first


async def test_a_token_pressed_in_another_chat_does_not_reach_the_audio(refs: AudioRefs) -> None:
    token = await refs.mint(CHAT, FILE)
    with pytest.raises(AudioExpired):
        await refs.resolve(token, OTHER)
    with pytest.raises(AudioExpired):
        await refs.resolve(token, ChatKey("slack", "501"))


async def test_expired_audio_says_so_in_one_line(refs: AudioRefs, clock: Clock) -> None:
    token = await refs.mint(CHAT, FILE)
    clock.now += 30 * DAY + 1
    with pytest.raises(AudioExpired) as err:
        await refs.resolve(token, CHAT)
    assert isinstance(err.value, InputError) and err.value.user_message == messages.AUDIO_EXPIRED
    assert "\n" not in err.value.user_message
    assert await refs.mint(CHAT, FILE) != token                 # sent again: a fresh token
    assert await refs.prune() == 1


async def test_forget_ends_every_token_of_the_chat_and_no_other(refs: AudioRefs) -> None:
    mine, theirs = await refs.mint(CHAT, FILE), await refs.mint(OTHER, FILE)
    assert await refs.forget_chat("telegram", "501") == 1
    with pytest.raises(AudioExpired):
        await refs.resolve(mine, CHAT)
    assert (await refs.resolve(theirs, OTHER)).chat_id == "502"


@pytest.mark.parametrize("junk", ["", "x" * 40, "a:b", "../etc", "токен"])
async def test_anything_not_minted_is_expired_not_an_error(refs: AudioRefs, junk: str) -> None:
    with pytest.raises(AudioExpired):
        await refs.resolve(junk, CHAT)


def test_retention_must_be_positive() -> None:
    with pytest.raises(ValueError):
        AudioRefs(MemoryAudioRefStore(), keep_seconds=0)
