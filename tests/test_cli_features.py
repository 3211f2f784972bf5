"""The CLI's answer cache (`"cached"` in --json), transcript formats and links, as a user runs them."""
from __future__ import annotations

import json
import re

import pytest
from aiohttp import web

from core.words import messages
from tests.audio_fixtures import make_clip
from tests.conftest import earshot, one_clean_line
from tests.fakes.server import Threaded


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "talk.m4a"
    make_clip(path, [(440, 1.0, 2.0), (550, 40.0, 2.0)], total_s=45.0, fmt="m4a")
    return path


def test_the_second_time_is_answered_from_the_cache(earshot_env, threaded_model, long_clip):
    first = json.loads(earshot(earshot_env, "transcribe", long_clip, "--json").stdout)
    calls = len(threaded_model.calls)
    second = json.loads(earshot(earshot_env, "transcribe", long_clip, "--json").stdout)
    assert first["cached"] is False and second["cached"] is True
    assert second["usage"]["total"] == 0 and second["text"] == first["text"] and len(threaded_model.calls) == calls
    off = earshot({**earshot_env, "EARSHOT_CACHE_DAYS": "0"}, "transcribe", long_clip, "--json")
    assert json.loads(off.stdout)["cached"] is False and len(threaded_model.calls) > calls


def test_transcript_formats(earshot_env, threaded_model, long_clip):
    srt = earshot(earshot_env, "transcribe", long_clip, "--format", "srt")
    assert srt.returncode == 0, srt.stderr
    starts = re.findall(r"^(\d\d:\d\d:\d\d,\d{3}) --> ", srt.stdout, re.M)
    assert len(starts) == 2 and starts[0] == "00:00:00,000"
    vtt = earshot(earshot_env, "transcribe", long_clip, "--format", "vtt").stdout
    assert vtt.startswith("WEBVTT\n\n") and re.search(r"\d\d:\d\d:\d\d\.\d{3} --> ", vtt)
    data = json.loads(earshot(earshot_env, "transcribe", long_clip, "--format", "json").stdout)
    assert [c["text"].split("Hz")[0][-3:] for c in data["cues"]] == ["440", "550"]
    assert data["cues"][1]["start"] + float(re.search(r"550Hz@([\d.]+)s", data["cues"][1]["text"])[1]) \
        == pytest.approx(40.0, abs=0.3)
    bad = earshot(earshot_env, "transcribe", long_clip, "--format", "doc")
    assert bad.returncode == 2 and "--format" in one_clean_line(bad.stderr)


def test_a_link_is_refused_on_loopback_unless_private_addresses_are_allowed(earshot_env, threaded_model, long_clip):
    async def talk(request: web.Request) -> web.Response:
        return web.Response(body=long_clip.read_bytes(), content_type="audio/mp4")

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html>hi</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/talk.m4a", talk)
    app.router.add_get("/", page)
    with Threaded(app) as served:
        refused = earshot(earshot_env, "transcribe", served.url + "/talk.m4a")
        assert refused.returncode == 1
        assert one_clean_line(refused.stderr) == "earshot: " + messages.TERMINAL[messages.LINK_PRIVATE]
        allowed = {**earshot_env, "EARSHOT_URL_ALLOW_PRIVATE": "1"}
        ok = earshot(allowed, "transcribe", served.url + "/talk.m4a")
        assert ok.returncode == 0 and re.findall(r"(\d+)Hz@", ok.stdout) == ["440", "550"], ok.stderr
        page = earshot(allowed, "summarize", served.url + "/")
        assert page.returncode == 1
        assert one_clean_line(page.stderr) == "earshot: " + messages.TERMINAL[messages.LINK_NOT_AUDIO].format(
            content_type="text/html")
