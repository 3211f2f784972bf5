"""The audio pipeline: every format users send decodes; bad input fails with the right sentence;
long audio splits at pauses into MP3 chunks of at most 30 s whose offsets are true."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.audio import ffmpeg, pipeline
from core.errors import AudioError
from core.values import Audio
from core.words import messages
from tests.audio_fixtures import (
    FFMPEG,
    decode_pcm,
    is_mp3,
    make_clip,
    make_long_silence,
    make_video_without_audio,
    mp3_header,
    tone_spans,
    tones,
)

MB = 1 << 20


def prepare(data: bytes, *, max_bytes: int = 20 * MB, max_seconds: float = 1800,
            timeout: float = 30) -> pipeline.Prepared:
    return pipeline.prepare(Audio(data), max_bytes=max_bytes, max_seconds=max_seconds, timeout=timeout)


def refused(data: bytes, **kw) -> AudioError:
    with pytest.raises(AudioError) as info:
        prepare(data, **kw)
    assert "\n" not in info.value.user_message
    return info.value


def assert_span(found: list[tuple[float, float]], start: float, end: float, tol: float = 0.06) -> None:
    assert len(found) == 1, found
    assert found[0][0] == pytest.approx(start, abs=tol) and found[0][1] == pytest.approx(end, abs=tol), found


# --- formats -------------------------------------------------------------------------------------
FORMATS = [
    ("ogg", {}),                                                    # Telegram voice note (Opus)
    ("webm", {}),                                                   # Slack / browser clip (Opus)
    ("mp3", {"rate": 44100, "channels": 2}),
    ("m4a", {"rate": 44100}),                                       # index at the end: needs seeking
    ("m4a", {"faststart": True}),
    ("aac", {}),                                                    # raw ADTS
    ("wav", {"rate": 44100, "channels": 2}),
    ("wav", {"rate": 48000, "channels": 2, "sample_fmt": "s24"}),
    ("wav", {"rate": 8000, "sample_fmt": "u8"}),
    ("wav", {"rate": 22050, "sample_fmt": "f32"}),
    ("flac", {"rate": 96000, "sample_fmt": "s24", "channels": 2}),
    ("amr", {}),
    ("3gp", {}),
    ("mp4", {}),                                                    # video note: video + AAC
]


@pytest.mark.parametrize("fmt,options", FORMATS,
                         ids=[f"{f}-{'-'.join(map(str, o.values()))}" for f, o in FORMATS])
def test_each_format_decodes_to_the_right_duration_and_sound(fmt, options):
    data = make_clip(None, [(440, 0.5, 1.0)], total_s=2.0, fmt=fmt, **options)
    prepared = prepare(data)
    assert prepared.duration == pytest.approx(2.0, abs=0.05)
    [chunk] = prepared.chunks
    assert (chunk.start, chunk.end) == (0.0, pytest.approx(prepared.duration))
    pcm = decode_pcm(chunk.data)
    # MP3 decoders add up to a frame or two of padding; the tone itself must sit where it was made
    assert len(pcm) / 16000 == pytest.approx(2.0, abs=0.15)
    assert_span(tone_spans(pcm, 440), 0.5, 1.5)


def test_very_short_sound_is_fine():
    prepared = prepare(make_clip(None, [(1000, 0.0, 0.05)], total_s=0.05, fmt="wav", rate=16000))
    assert prepared.duration == pytest.approx(0.05, abs=0.001)
    assert len(prepared.chunks) == 1 and is_mp3(prepared.chunks[0].data)


def test_chunks_are_compact_mono_16khz_mp3():
    prepared = prepare(make_clip(None, [(440, 0.0, 10.0)], total_s=10.0, fmt="ogg"))
    data = prepared.chunks[0].data
    assert is_mp3(data)
    assert data[:3] != b"ID3"                  # no tag: nothing but audio goes to the model
    assert mp3_header(data) == {"version": "2", "layer": 3, "sample_rate": 16000, "mono": 1}
    assert len(data) < 10 * 32000 / 8 * 1.1    # ~32 kbit/s


# --- refusals ------------------------------------------------------------------------------------
def test_empty_file():
    assert refused(b"").user_message == messages.EMPTY_FILE


@pytest.mark.parametrize("fmt,keep", [("ogg", 100), ("m4a", 300), ("flac", 40), ("wav", 44), ("amr", 6)])
def test_truncated_files(fmt, keep):
    data = make_clip(None, [(440, 0.0, 1.0)], fmt=fmt)
    assert refused(data[:keep]).user_message in (messages.NOT_AUDIO, messages.NO_SAMPLES)


@pytest.mark.parametrize("seed", range(3))
def test_random_bytes(seed):
    data = np.random.default_rng(seed).integers(0, 256, 40_000, dtype=np.uint8).tobytes()
    assert refused(data).user_message == messages.NOT_AUDIO


PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
       b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84"
       b"\x00\x00\x00\x00IEND\xaeB`\x82")
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


@pytest.mark.parametrize("data", [b"Meeting notes: call Anna on Friday.\n" * 50, PNG, PDF],
                         ids=["text", "png", "pdf"])
def test_non_audio_renamed_ogg(data):
    with pytest.raises(AudioError) as info:
        pipeline.prepare(Audio(data, filename="voice.ogg", mime_type="audio/ogg"),
                      max_bytes=20 * MB, max_seconds=1800, timeout=30)
    assert info.value.user_message == messages.NOT_AUDIO


def test_video_without_audio():
    assert refused(make_video_without_audio()).user_message == messages.NO_AUDIO_TRACK


@pytest.mark.parametrize("options", [{}, {"noise_dbfs": -75.0, "fmt": "wav"}, {"dc": 0.25, "fmt": "wav"}],
                         ids=["digital", "faint-hiss", "dc-offset"])
def test_silence_only(options):
    fmt = options.pop("fmt", "ogg")
    assert refused(make_clip(None, [], total_s=3.0, fmt=fmt, **options)).user_message == messages.SILENT


def test_quiet_speech_level_is_not_silence():
    # a tone at -40 dBFS (far from the mic) is still sound
    assert prepare(make_clip(None, [(300, 0.5, 1.0)], total_s=2.0, fmt="ogg", amplitude=0.01)).chunks


def test_too_big_is_refused_before_decoding():
    garbage = b"\0not audio at all" * 1000     # would be NOT_AUDIO if it were decoded
    error = refused(garbage, max_bytes=10_000)
    assert error.user_message == messages.TOO_BIG.format(size_mb=len(garbage) / MB, limit_mb=10_000 / MB)


def test_too_long_is_refused_with_the_limit_in_words():
    data = make_clip(None, [(440, 0.0, 8.0)], total_s=8.0, fmt="ogg")
    assert refused(data, max_seconds=5).user_message == messages.TOO_LONG.format(limit="5 seconds")
    # exactly at the limit: fine
    assert prepare(data, max_seconds=8).duration == pytest.approx(8.0, abs=0.05)


@pytest.fixture(scope="module")
def ten_hours_of_silence() -> bytes:
    return make_long_silence(seconds=10 * 3600)


def test_hours_of_compressed_silence_are_refused_in_seconds(ten_hours_of_silence):
    started = time.monotonic()
    error = refused(ten_hours_of_silence, max_seconds=1800)
    assert time.monotonic() - started < 5
    assert error.user_message == messages.TOO_LONG.format(limit="30 minutes")


@pytest.mark.parametrize("seconds,words", [(1800, "30 minutes"), (60, "1 minute"), (3600, "1 hour"),
                                            (7200, "2 hours"), (90, "90 seconds"), (150, "2.5 minutes")])
def test_describe_seconds(seconds, words):
    assert pipeline.describe_seconds(seconds) == words


def _would_follow(path: Path) -> bool:
    """Plain ffmpeg (no whitelists) really does follow this file: the refusal below is earned."""
    out = subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-i", str(path), "-f", "s16le", "-"],
                         capture_output=True, timeout=30)
    return out.returncode == 0 and len(out.stdout) > 0


def test_hls_playlist_pointing_at_a_local_file_is_refused(tmp_path):
    target = tmp_path / "secret.ogg"
    make_clip(target, [(440, 0.0, 1.0)], fmt="ogg")
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.0,\n{target}\n#EXT-X-ENDLIST\n".encode()
    (tmp_path / "list.m3u8").write_bytes(playlist)
    assert _would_follow(tmp_path / "list.m3u8")
    error = refused(playlist)
    # newer ffmpeg builds already refuse an HLS playlist without an .m3u8 name; older ones stop at the whitelist
    assert error.user_message == messages.NOT_AUDIO
    assert "whitelist" in error.operator_message or "Not detecting m3u8/hls" in error.operator_message


def test_ffconcat_pointing_at_a_local_file_is_refused(tmp_path):
    target = tmp_path / "secret.ogg"
    make_clip(target, [(440, 0.0, 1.0)], fmt="ogg")
    script = b"ffconcat version 1.0\nfile 'secret.ogg'\n"
    (tmp_path / "list.ogg").write_bytes(script)
    assert _would_follow(tmp_path / "list.ogg")
    error = refused(script)
    # refused for what it is, not merely because the named file isn't beside earshot's temp copy
    assert error.user_message == messages.NOT_AUDIO and "whitelist" in error.operator_message


def test_decode_timeout_kills_ffmpeg():
    data = make_clip(None, [(440, 0.0, 1.0)], fmt="ogg")
    assert refused(data, timeout=0.001).user_message == messages.DECODE_TIMEOUT


# --- splitting -----------------------------------------------------------------------------------
def chunk_tones(chunk: pipeline.Chunk, freq: float) -> list[tuple[float, float]]:
    return tone_spans(decode_pcm(chunk.data), freq)


def test_a_tone_straddling_30s_stays_whole_and_offsets_are_true():
    plan = [(440, 5.0, 5.0), (880, 27.0, 5.0), (660, 44.0, 2.0)]
    prepared = prepare(make_clip(None, plan, total_s=50.0, fmt="ogg"))
    assert prepared.duration == pytest.approx(50.0, abs=0.05)
    first, second = prepared.chunks
    assert first.start == 0.0 and second.end == pytest.approx(50.0, abs=0.05)
    assert first.end == second.start and 22.0 < first.end <= 27.0    # cut in the pause before the tone
    assert_span(chunk_tones(first, 440), 5.0, 10.0)
    assert chunk_tones(first, 880) == []
    assert_span(chunk_tones(second, 880), 27.0 - second.start, 32.0 - second.start)
    assert_span(chunk_tones(second, 660), 44.0 - second.start, 46.0 - second.start)
    for chunk in prepared.chunks:
        assert is_mp3(chunk.data)
        assert chunk.end - chunk.start <= pipeline.MAX_CHUNK_SECONDS
        decoded_seconds = len(decode_pcm(chunk.data)) / 16000
        assert decoded_seconds <= 30.0
        # the last chunk also carries the encoder's final flush
        assert decoded_seconds == pytest.approx(chunk.end - chunk.start, abs=0.08)


def test_silent_stretches_are_skipped_but_offsets_stay_true():
    plan = [(440, 2.0, 4.0), (880, 70.0, 5.0)]
    prepared = prepare(make_clip(None, plan, total_s=100.0, fmt="wav", rate=16000))
    assert prepared.duration == pytest.approx(100.0)
    # digital silence ties everywhere, so every cut falls as late as allowed: full-length chunks
    full = round(int(pipeline.MAX_CHUNK_SECONDS / pipeline.FRAME_SECONDS) * pipeline.FRAME_SECONDS, 3)
    second = (round(2 * full, 3), round(3 * full, 3))
    assert [(c.start, c.end) for c in prepared.chunks] == [(0.0, full), second]
    assert_span(chunk_tones(prepared.chunks[0], 440), 2.0, 6.0)
    assert_span(chunk_tones(prepared.chunks[1], 880), 70.0 - 2 * full, 75.0 - 2 * full)


def test_sound_without_pauses_splits_into_full_chunks_without_a_sliver():
    prepared = prepare(make_clip(None, [], total_s=60.0, fmt="ogg", noise_dbfs=-20.0))
    spans = [(c.start, c.end) for c in prepared.chunks]
    assert spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(60.0, abs=0.05)
    assert all(a[1] == b[0] for a, b in pairwise(spans))
    assert all(end - start <= pipeline.MAX_CHUNK_SECONDS for start, end in spans)
    assert spans[-1][1] - spans[-1][0] >= pipeline.MIN_TAIL_SECONDS


def _segment(samples: np.ndarray) -> pipeline.AudioSegment:
    pcm = (np.clip(samples[:, 0], -1, 1) * 32767).astype("<i2").tobytes()
    return pipeline.AudioSegment(data=pcm, sample_width=2, frame_rate=16000, channels=1)


@settings(max_examples=25, deadline=None)
@given(total=st.floats(0.5, 130.0), gaps=st.lists(st.floats(0.0, 130.0), max_size=6), seed=st.integers(0, 3))
def test_split_covers_everything_in_bounded_pieces(total, gaps, seed):
    # noise everywhere except short pauses at random places
    samples = tones([], total, noise_dbfs=-20.0, seed=seed)
    for g in gaps:
        samples[int(g * 16000):int((g + 0.3) * 16000)] = 0
    segment = _segment(samples)
    spans = pipeline.split(segment)
    duration = len(segment.raw_data) / 32000
    assert spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(duration)
    assert all(a[1] == b[0] for a, b in pairwise(spans))
    assert all(0 < end - start <= pipeline.MAX_CHUNK_SECONDS for start, end in spans)
    if len(spans) > 1:
        assert spans[-1][1] - spans[-1][0] >= pipeline.MIN_TAIL_SECONDS - pipeline.FRAME_SECONDS
    assert len(spans) <= int(duration // (pipeline.MAX_CHUNK_SECONDS - pipeline.SEARCH_SECONDS)) + 1


def test_split_cuts_in_the_middle_of_the_latest_pause():
    samples = tones([], 40.0, noise_dbfs=-20.0)
    samples[int(25.0 * 16000):int(25.5 * 16000)] = 0     # a pause inside the search window
    samples[int(27.0 * 16000):int(27.3 * 16000)] = 0     # and a later one: prefer it
    [(_, cut), _] = pipeline.split(_segment(samples))
    assert 27.0 < cut < 27.3


# --- ffmpeg ----------------------------------------------------------------------------------------
def test_ffmpeg_is_found_and_given_to_pydub():
    exe = ffmpeg.executable()
    assert Path(exe).exists()
    assert pipeline.AudioSegment.converter == exe


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prlimit and /proc are Linux")
def test_children_get_cpu_and_memory_caps():
    with subprocess.Popen(["sleep", "5"]) as child:
        try:
            ffmpeg.limit_child(child.pid, timeout=10)
            limits = Path(f"/proc/{child.pid}/limits").read_text()
        finally:
            child.kill()
    cpu = next(line for line in limits.splitlines() if line.startswith("Max cpu time")).split()
    mem = next(line for line in limits.splitlines() if line.startswith("Max address space")).split()
    assert cpu[3] == "21" and mem[3] == str(ffmpeg.MEMORY_LIMIT)


def test_the_ffmpeg_binary_can_be_chosen(tmp_path):
    import imageio_ffmpeg

    from core.audio import ffmpeg
    try:
        ffmpeg.choose("bundled")
        assert ffmpeg.executable() == imageio_ffmpeg.get_ffmpeg_exe()
        ffmpeg.choose(str(tmp_path / "no-such-ffmpeg"))
        assert ffmpeg.executable() == str(tmp_path / "no-such-ffmpeg")
    finally:
        ffmpeg.choose(None)
    assert ffmpeg.executable()


# --- a decode started ahead (the CLI's ffmpeg runs while earshot loads) ------------------------------
def test_the_pipeline_takes_the_decode_started_ahead_of_it(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    data = make_clip(None, [(440, 0.5, 1.0)], total_s=2.0, fmt="ogg")
    other = make_clip(None, [(660, 0.5, 1.0)], total_s=2.0, fmt="ogg")
    runs = tmp_path / "runs.log"
    counting = tmp_path / "ffmpeg"             # counts its runs, then is the real ffmpeg
    counting.write_text(f'#!/bin/sh\necho run >> "{runs}"\nexec "{ffmpeg.executable()}" "$@"\n')
    counting.chmod(0o755)
    try:
        ffmpeg.choose(str(counting))
        with pipeline.decoding_ahead(data, max_seconds=1800, timeout=30):
            prepare(other)                                      # other bytes: not the decode under way
            assert len(runs.read_text().splitlines()) == 2
            prepared = prepare(data)                            # the same bytes: the one under way
            assert len(runs.read_text().splitlines()) == 2
            assert [p.name for p in tmp_path.glob("earshot-*")] == []   # taken and cleaned up
        with pipeline.decoding_ahead(data, max_seconds=1800, timeout=30):
            ffmpeg.choose(None)                                 # the settings name another ffmpeg: not taken
            prepare(data)
            assert len(runs.read_text().splitlines()) == 3
    finally:
        ffmpeg.choose(None)
    assert prepared.duration == pytest.approx(2.0, abs=0.05)
    assert_span(tone_spans(decode_pcm(prepared.chunks[0].data), 440), 0.5, 1.5)


def _children() -> list[str]:
    """This thread's child processes, running or not yet reaped (Linux)."""
    return Path(f"/proc/{os.getpid()}/task/{threading.get_native_id()}/children").read_text().split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux")
def test_a_decode_started_ahead_and_never_taken_is_stopped_and_cleaned_up(tmp_path, monkeypatch,
                                                                           ten_hours_of_silence):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with pipeline.decoding_ahead(ten_hours_of_silence, max_seconds=1800, timeout=30):    # ffmpeg works for a while
        assert len(_children()) == 1 and len(list(tmp_path.glob("earshot-*"))) == 1
        refused(make_clip(None, [(440, 0.0, 3.0)], total_s=3.0), max_seconds=2)   # other bytes and limits
        assert len(_children()) == 1                                              # still running, not taken
    assert _children() == [] and list(tmp_path.glob("earshot-*")) == []
