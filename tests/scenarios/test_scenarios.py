"""What every adapter must do, written once and run against each one through its stand-in (tests/scenarios/driver.py
says how; tests/scenarios/drivers/ has one driver per platform). A behaviour that works on one platform and not on
another fails here, under that platform's name.

Each scenario starts the adapter as deployed (`earshot <platform>` in a process of its own), pushes events as the
platform delivers them, and reads what the adapter sent back through the platform. The model stand-in says which
tones it heard ('440Hz@0.5s'), so an answer shows which voice note it is about."""
from __future__ import annotations

import re
from collections.abc import Callable

from core.values import Task
from core.words import messages
from tests.scenarios.driver import ALICE, BOB, Driver, Said
from tests.waiting import until


def heard(hz: int) -> Callable[[Said], bool]:
    """An answer about a voice note with a tone of `hz`."""
    return lambda said: f"{hz}Hz@" in said.text


def answers(driver: Driver) -> list[Said]:
    """The adapter's answers about audio (what the model heard), oldest first."""
    return [s for s in driver.sent() if re.search(r"\d+Hz@", s.text)]


def tones_of_last_call(driver: Driver) -> list[tuple[int, float]]:
    return [tone for item in driver.model.calls[-1].items for tone in item.tones]


async def test_a_voice_note_is_answered_in_reply(driver: Driver) -> None:
    await driver.start()
    note = await driver.send_voice_note(driver.voice(440))
    [answer] = await driver.wait_for_sent(1)
    assert "440Hz@0.5s" in answer.text, answer
    assert answer.chat == note.chat and answer.reply_to == note.id
    await driver.idle()
    assert driver.sent() == [answer]
    assert len(driver.model.calls) == 1 and tones_of_last_call(driver) == [(440, 0.5)]
    assert driver.download_count == 1


async def test_a_redelivered_event_is_answered_once(driver: Driver) -> None:
    await driver.start()
    note = await driver.send_voice_note(driver.voice(440))
    await driver.redeliver(note)                      # at once: while the first delivery is being handled
    await driver.wait_for_sent(1, heard(440))
    await driver.idle()
    await driver.redeliver(note)                      # once it was answered
    await driver.idle()
    await driver.restart()
    await driver.redeliver(note)                      # to a process that never saw it
    await driver.idle()
    assert len(answers(driver)) == 1 and len(driver.sent()) == 1
    assert len(driver.model.calls) == 1 and driver.download_count == 1


async def test_a_stranger_is_refused_once_without_a_download(driver: Driver) -> None:
    await driver.start(EARSHOT_ALLOWED_USERS=driver.user_id(ALICE))
    await driver.send_voice_note(driver.voice(440), user=BOB)
    [refusal] = await driver.wait_for_sent(1)
    assert refusal.text.startswith(messages.NOT_ALLOWED.split("{")[0]) and driver.user_id(BOB) in refusal.text
    await driver.send_voice_note(driver.voice(660), user=BOB)
    await driver.send_command("summarize", user=BOB)
    await driver.idle()
    await driver.restart()                            # the refusal is remembered: still told only once
    await driver.send_voice_note(driver.voice(660), user=BOB)
    await driver.idle()
    assert driver.sent() == [refusal]
    assert driver.download_count == 0 and not driver.model.calls

    note = await driver.send_voice_note(driver.voice(880))      # the one allowed is answered
    [answer] = await driver.wait_for_sent(1, heard(880))
    assert answer.reply_to == note.id and driver.download_count == 1


async def test_a_long_answer_is_split_at_the_platforms_limit(driver: Driver) -> None:
    paragraph = "Tom & Jerry said x<y and y>z, twice. " * 34        # 1,258 characters, more once escaped
    reply = "\n\n".join(f"{n}. {paragraph.strip()}" for n in range(6))  # within what the model may answer
    driver.model.reply = lambda call: reply
    await driver.start()
    note = await driver.send_voice_note(driver.voice(440))
    await driver.wait_for_sent(1)
    await driver.idle()                                # the answer's job delivered: every part of it is sent
    parts = driver.sent()
    sizes = [p.size for p in parts]
    assert len(parts) >= -(-len(reply) // driver.platform_limit), sizes      # as few as the limit allows, or more
    assert all(size <= driver.platform_limit for size in sizes), sizes
    assert all(p.chat == note.chat for p in parts)
    assert parts[0].reply_to == note.id and all(p.reply_to in (note.id, None) for p in parts)
    assert " ".join(p.text for p in parts).split() == reply.split()    # every word, in order, nothing extra


async def test_a_button_under_an_answer_asks_the_same_audio_again(driver: Driver) -> None:
    await driver.start()
    first = await driver.send_voice_note(driver.voice(440))
    [answer] = await driver.wait_for_sent(1, heard(440))
    await driver.send_voice_note(driver.voice(660))              # the chat's latest audio is now another one
    await driver.wait_for_sent(1, heard(660))
    assert Task.SUMMARIZE in answer.buttons, answer.buttons
    await driver.tap(answer, Task.SUMMARIZE)
    await driver.wait_for_sent(3)
    await driver.idle()
    summary = driver.sent()[2]
    assert "440Hz" in summary.text and "660Hz" not in summary.text
    assert summary.chat == first.chat and summary.reply_to in (first.id, answer.id)
    assert len(driver.model.calls) == 3 and tones_of_last_call(driver) == [(440, 0.5)]
    assert "summar" in " ".join(driver.model.calls[-1].texts).lower()
    assert Task.SUMMARIZE not in summary.buttons


async def test_a_restart_mid_job_loses_nothing_and_doubles_nothing(driver: Driver) -> None:
    driver.model.latency = 60.0                       # the model takes its time...
    await driver.start()
    first = await driver.send_voice_note(driver.voice(440))
    await until(lambda: driver.model.in_flight, 30, "the model to be asked")
    second = await driver.send_voice_note(driver.voice(660))     # waits behind the first
    await until(driver.events_handled, 30, "the second voice note to be taken in")
    driver.model.latency = 0.2
    await driver.restart()                            # ...and the process dies mid-answer
    await driver.wait_for_sent(2, lambda s: bool(re.search(r"\d+Hz@", s.text)))
    await driver.idle()
    got = answers(driver)
    assert [("440Hz" in a.text, "660Hz" in a.text) for a in got] == [(True, False), (False, True)], got
    assert [a.reply_to for a in got] == [first.id, second.id]
    assert len(driver.model.calls) == 3               # the first asked twice (cut off once), the second once
    assert len(driver.sent()) == 2


async def test_a_command_is_answered_in_the_users_language(driver: Driver) -> None:
    german = messages.text(messages.NO_AUDIO_YET, "de")
    assert german != messages.NO_AUDIO_YET
    await driver.start()
    await driver.send_command("summarize", language="de")
    await driver.wait_for_sent(1, lambda s: s.text == german)
    await driver.send_command("summarize", user=BOB, language="en")
    await driver.wait_for_sent(1, lambda s: s.text == messages.NO_AUDIO_YET)
    await driver.idle()
    assert sorted(s.text for s in driver.sent() if s.text in (german, messages.NO_AUDIO_YET)) == \
        sorted([german, messages.NO_AUDIO_YET])
    assert not driver.model.calls and driver.download_count == 0
