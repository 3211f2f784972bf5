"""The `earshot` command as a user runs it: a subprocess against the DashScope stand-in."""
from __future__ import annotations

import importlib.metadata
import json
import re
import sys
from pathlib import Path

import pytest

from bots.launch import EARLY_GUESS
from core.config import Settings
from tests.audio_fixtures import FFMPEG, make_clip
from tests.conftest import earshot, one_clean_line
from tests.fakes.dashscope import FREE_QUOTA, HTML

EARSHOT = str(Path(sys.executable).with_name("earshot"))


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    out = {}
    for name, plan, total in [("voice.ogg", [(440, 0.5, 1.0), (660, 2.0, 1.0)], 3.5),
                              ("long.m4a", [(440, 1.0, 2.0), (550, 40.0, 2.0)], 45.0)]:
        out[name] = d / name
        make_clip(out[name], plan, total_s=total, fmt=name.rsplit(".", 1)[1])
    return out




def test_transcribe_prints_the_answer(earshot_env, threaded_model, clips):
    p = earshot(earshot_env, "transcribe", clips["voice.ogg"])
    assert p.returncode == 0, p.stderr
    assert re.findall(r"(\d+)Hz@", p.stdout) == ["440", "660"]
    assert p.stderr == ""
    assert threaded_model.calls[0].items[0].format == "mp3"


def test_json_gives_parts_offsets_and_usage(earshot_env, clips):
    p = earshot(earshot_env, "transcribe", clips["long.m4a"], "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert [part["offset"] for part in out["parts"]][0] == "00:00" and len(out["parts"]) == 2
    assert out["parts"][1]["start"] > 25
    assert out["usage"]["total"] == sum(out["usage"][k] for k in ("audio_tokens", "input_tokens", "output_tokens"))
    assert out["task"] == "transcribe" and out["duration"] == pytest.approx(45.0, abs=0.2)


def test_every_task_runs(earshot_env, threaded_model, clips):
    for args in (["summarize"], ["sentiment"], ["events"], ["ask"], ["ask", "--", "what rings?"],
                 ["translate", "--to", "French"]):
        cmd = [args[0], clips["voice.ogg"], *args[1:]]
        p = earshot(earshot_env, *cmd)
        assert p.returncode == 0, (args, p.stderr)
        assert p.stdout.strip()
    assert any("French" in t for c in threaded_model.calls for t in c.texts)
    assert any("what rings?" in t for c in threaded_model.calls for t in c.texts)


def test_wrong_key_says_so(earshot_env, clips):
    p = earshot({**earshot_env, "DASHSCOPE_API_KEY": "sk-wrong"}, "transcribe", clips["voice.ogg"])
    assert p.returncode == 4
    assert "DASHSCOPE_API_KEY" in one_clean_line(p.stderr)
    assert "sk-wrong" not in p.stderr


def test_missing_key_says_so(earshot_env, clips, threaded_model):
    earshot_env = {k: v for k, v in earshot_env.items() if k != "DASHSCOPE_API_KEY"}
    p = earshot(earshot_env, "summarize", clips["voice.ogg"])
    assert p.returncode == 4 and "DASHSCOPE_API_KEY" in one_clean_line(p.stderr)
    assert threaded_model.calls == []


def test_not_audio_is_one_line_and_costs_nothing(earshot_env, threaded_model, tmp_path):
    f = tmp_path / "notes.ogg"
    f.write_text("shopping list: milk, eggs\n" * 50)
    p = earshot(earshot_env, "transcribe", f)
    assert p.returncode == 1 and one_clean_line(p.stderr)
    assert earshot(earshot_env, "transcribe", tmp_path / "nope.ogg").returncode == 1
    assert threaded_model.calls == []


def test_service_failures_are_one_line(earshot_env, threaded_model, clips):
    threaded_model.fail(FREE_QUOTA)
    p = earshot(earshot_env, "transcribe", clips["voice.ogg"])
    assert p.returncode == 4 and "quota" in one_clean_line(p.stderr).lower()
    threaded_model.fail(HTML, HTML, HTML, HTML, HTML, HTML)
    p = earshot(earshot_env, "transcribe", clips["voice.ogg"])
    assert p.returncode == 3 and one_clean_line(p.stderr)


def test_usage_errors_and_help(earshot_env, clips):
    p = earshot(earshot_env, "translate", clips["voice.ogg"])
    assert p.returncode == 2 and "--to" in p.stderr
    h = earshot(earshot_env, "--help")
    assert h.returncode == 0
    for command in ("transcribe", "summarize", "sentiment", "events", "ask", "translate", "telegram", "slack",
                    "doctor"):
        assert command in h.stdout
    v = earshot(earshot_env, "--version")
    assert v.returncode == 0 and v.stdout.strip() == f"earshot {importlib.metadata.version('earshot')}"


def test_the_early_decode_guesses_the_settings_defaults():
    fields = {str(alias): f for f in Settings.model_fields.values()
              for alias in getattr(f.validation_alias, "choices", [f.validation_alias])}
    for name, guess in EARLY_GUESS.items():
        default = fields[name].default
        assert (float(guess) if isinstance(default, float) else guess) == default, name


def test_an_early_decode_with_other_limits_than_the_settings_is_not_taken(earshot_env, threaded_model, clips,
                                                                          tmp_path):
    log = tmp_path / "ffmpeg-runs.log"
    ffmpeg_sh = tmp_path / "ffmpeg"
    ffmpeg_sh.write_text(f'#!/bin/sh\necho run >> "{log}"\nexec "{FFMPEG}" "$@"\n')
    ffmpeg_sh.chmod(0o755)
    # settings read names in any case; the early guess only the usual spelling, so it guesses the default
    env = {**earshot_env, "EARSHOT_FFMPEG": str(ffmpeg_sh), "earshot_max_audio_seconds": "600"}
    p = earshot(env, "transcribe", clips["voice.ogg"], "--json")
    assert p.returncode == 0 and re.findall(r"(\d+)Hz@", json.loads(p.stdout)["text"]) == ["440", "660"], p.stderr
    assert log.read_text().splitlines() == ["run", "run"]     # the guess was wrong: decoded again, as asked


def test_ffmpeg_starts_before_the_rest_loads_and_runs_once(earshot_env, threaded_model, clips, tmp_path):
    log = tmp_path / "ffmpeg-runs.log"
    ffmpeg_sh = tmp_path / "ffmpeg"            # counts its runs, then is the real ffmpeg
    ffmpeg_sh.write_text(f'#!/bin/sh\necho run >> "{log}"\nexec "{FFMPEG}" "$@"\n')
    ffmpeg_sh.chmod(0o755)
    env = {**earshot_env, "EARSHOT_FFMPEG": str(ffmpeg_sh)}
    p = earshot(env, "transcribe", clips["voice.ogg"], "--json")
    assert p.returncode == 0 and re.findall(r"(\d+)Hz@", json.loads(p.stdout)["text"]) == ["440", "660"], p.stderr
    assert log.read_text().splitlines() == ["run"]          # the decode started first is the pipeline's
    calls = len(threaded_model.calls)
    p = earshot(env, "transcribe", clips["voice.ogg"], "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["cached"] is True and len(threaded_model.calls) == calls
    # answered from the cache, which needs no decode: ffmpeg had started before anything else, and was stopped
    assert log.read_text().splitlines() == ["run", "run"]
