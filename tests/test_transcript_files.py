"""Transcripts as files: a 6-minute recording's transcript arrives with .txt and .srt files whose cue times
are where the tones really are (the DashScope stand-in names each tone it hears and its time in the chunk)."""
from __future__ import annotations

import re

import pytest

from core.audio import subtitles
from core.values import Part, Reply, Task
from tests.conftest import DM, World, bot_running
from tests.fakes.dashscope import MARKER, tone_audio
from tests.fakes.slack import FakeSlack
from tests.waiting import until

# (Hz, second it starts) over 6 minutes of silence
TONES = [(440, 12.0), (550, 101.0), (660, 207.5), (770, 333.0)]
LENGTH = 360.0
_SRT_CUE = re.compile(r"(\d+)\n(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})\n(.*?)\n\n", re.S)


@pytest.fixture(scope="module")
def recording() -> bytes:
    segments, at = [], 0.0
    for hz, start in TONES:
        segments += [(0, start - at), (hz, 1.0)]
        at = start + 1.0
    segments.append((0, LENGTH - at))
    return tone_audio(*segments, fmt="ogg")


def parse_srt(text: str) -> list[tuple[float, float, str]]:
    cues = []
    for m in _SRT_CUE.finditer(text):
        g = [int(x) for x in m.groups()[1:9]]
        cues.append((g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000, g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000,
                     m.group(10)))
    return cues


def check_cues(srt: str) -> None:
    cues = parse_srt(srt)
    assert cues and all(0 < end - start <= 30.0 for start, end, _ in cues), cues
    assert cues[-1][1] <= LENGTH
    heard = [(int(hz), start + float(t)) for start, _, text in cues for hz, t in MARKER.findall(text)]
    assert [hz for hz, _ in heard] == [hz for hz, _ in TONES]
    for (_, at), (_, truth) in zip(heard, TONES, strict=True):
        assert at == pytest.approx(truth, abs=0.3)


async def test_telegram_sends_a_long_transcript_as_txt_and_srt(tmp_path, recording):
    async with bot_running(tmp_path) as bot:
        mid = bot.tg.push(401, kind="audio", data=recording, file_name="standup.ogg", mime="audio/ogg",
                          duration=int(LENGTH), caption="/transcribe")
        await bot.said(401, within=60)
        await until(lambda: len(bot.tg.documents(401)) == 2, within=30)
        txt, srt = bot.tg.documents(401)
        assert (txt["file_name"], srt["file_name"]) == ("standup.txt", "standup.srt")
        assert txt["reply_to"] == mid and srt["reply_to"] == mid
        assert all(f"{hz}Hz" in txt["data"].decode() for hz, _ in TONES)
        check_cues(srt["data"].decode())


async def test_slack_uploads_a_long_transcript_into_the_thread(world: World, recording) -> None:  # noqa: F811
    record = world.slack.add_file(recording, name="standup.ogg", mimetype="audio/ogg", filetype="ogg",
                                  subtype=None)
    event = {"type": "message", "subtype": "file_share", "channel": DM, "channel_type": "im", "user": "U0ALICE",
             "text": "transcribe", "ts": world.slack.ts(), "files": [FakeSlack.event_file(record)]}
    await world.event(event)
    await until(lambda: len(world.slack.uploads) == 2, within=60)
    txt, srt = world.slack.uploads
    assert (txt["name"], srt["name"]) == ("standup.txt", "standup.srt")
    assert txt["channel"] == DM and txt["thread_ts"] == event["ts"]
    check_cues(srt["data"].decode())


def test_short_transcripts_stay_in_the_chat_and_other_tasks_never_come_as_files():
    short = Reply("hi", Task.TRANSCRIBE, parts=(Part(0, 20, "hi"),), duration=20)
    assert not subtitles.wants_files(short, 4096)
    assert subtitles.wants_files(Reply("x" * 5000, Task.TRANSCRIBE, duration=20), 4096)
    assert not subtitles.wants_files(Reply("x" * 5000, Task.SUMMARIZE, duration=400), 4096)


def test_cues_split_at_the_models_marks_and_never_run_past_30_seconds():
    # events' marks were already moved to the whole recording (core.flow.service); a 39 s span is cut in two
    reply = Reply("", Task.EVENTS, parts=(Part(25, 80, "intro 00:31 a door 01:10 music"),), duration=80)
    assert [(c.start, c.end, c.text) for c in subtitles.cues(reply)] == [
        (25, 31, "intro"), (31, 50.5, "a"), (50.5, 70, "door"), (70, 80, "music")]
    # a transcript's marks are the chunk's own: moved by the chunk's start
    reply = Reply("", Task.TRANSCRIBE, parts=(Part(60, 85, "[00:02] hello [00:10] there"),), duration=85)
    assert [(c.start, c.end, c.text) for c in subtitles.cues(reply)] == [(62, 70, "hello"), (70, 85, "there")]
    vtt = subtitles.vtt(Reply("", Task.TRANSCRIBE, parts=(Part(0, 2.5, "hello"),), duration=2.5))
    assert vtt == "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nhello\n\n"


HOSTILE = "Tom & Jerry --> 00:00:09.000 <v Mallory> forged <c.red>red</c> <i>x</i> {\\an8} top -- > end"


def test_webvtt_cue_text_is_escaped_so_it_can_neither_end_a_cue_nor_forge_a_speaker():
    vtt = subtitles.vtt(Reply("", Task.TRANSCRIBE, parts=(Part(0, 4, HOSTILE),), duration=4))
    header, cue, end = vtt.split("\n\n")
    assert header == "WEBVTT" and end == ""
    timing, text = cue.split("\n")                                   # one cue, one line of text
    assert timing == "00:00:00.000 --> 00:00:04.000"
    assert "-->" not in text and "<" not in text and ">" not in text
    assert "Tom &amp; Jerry --&gt; 00:00:09.000 &lt;v Mallory&gt; forged &lt;c.red&gt;red&lt;/c&gt;" in text
    import html
    assert html.unescape(text) == HOSTILE                          # a player shows exactly what was said


def test_srt_cue_text_has_no_arrow_no_formatting_tags_and_no_blank_line():
    reply = Reply("", Task.TRANSCRIBE, parts=(Part(0, 4, HOSTILE), Part(4, 8, "next\n\n2\n--> x")),
                  duration=8)
    blocks = subtitles.srt(reply).split("\n\n")
    assert blocks[-1] == "" and len(blocks) == 3
    for n, block in enumerate(blocks[:-1], 1):
        number, timing, text = block.split("\n")                   # number, timing, one line of text
        assert number == str(n) and timing.count("-->") == 1 and "-->" not in text
        assert not re.search(r"<[/a-zA-Z]|\{\\", text), text
    assert [c[2] for c in parse_srt(subtitles.srt(reply))][1] == "next 2 -> x"
