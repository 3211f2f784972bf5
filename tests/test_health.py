"""GET /healthz and GET /metrics of the running bots, and their request log lines, through the stand-ins."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bots.slack import SlackSocketMode
from tests.conftest import free_port, serving, settings_for, slack_running, spawn
from tests.fakes.dashscope import FakeDashScope, tone_audio
from tests.fakes.server import Served
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import FakeTelegram
from tests.test_whatsapp import whatsapp_running
from tests.waiting import until

EARSHOT = str(Path(sys.executable).with_name("earshot"))
KEY = "sk-health-test-key"


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.text()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value}; fails on anything not in the Prometheus text format."""
    out = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("earshot_"), family.name
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(found: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in found.items() if n == name and set(labels.items()) <= set(ls))


async def test_telegram_bot_serves_health_metrics_and_json_request_logs(tmp_path: Path) -> None:
    tg, ds = FakeTelegram(), FakeDashScope(api_key=KEY)
    db, log = tmp_path / "earshot.db", tmp_path / "bot.log"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with Served(tg.app) as tgs, Served(ds.app) as dss:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DASHSCOPE_", "EARSHOT_"))}
        env |= {"TELEGRAM_BOT_TOKEN": tg.token, "TELEGRAM_API_BASE_URL": tgs.url, "DASHSCOPE_API_KEY": KEY,
                "DASHSCOPE_HTTP_BASE_URL": dss.url + "/api/v1", "EARSHOT_DB": str(db),
                "EARSHOT_METRICS_PORT": str(port), "EARSHOT_LOG_FORMAT": "json"}
        proc = await asyncio.to_thread(spawn, [EARSHOT, "telegram"], log, env)
        try:
            async def healthy() -> bool:
                try:
                    return (await get(base + "/healthz"))[0] == 200
                except aiohttp.ClientError:
                    assert proc.poll() is None, log.read_text()[-3000:]
                    return False
            await until(healthy, 30)
            tg.push(1001, kind="voice", data=tone_audio((0, 0.5), (440, 1.0), (0, 0.5), fmt="ogg"), mime="audio/ogg")
            await until(lambda: tg.texts(1001), 30)

            status, text = await get(base + "/metrics")
            assert status == 200
            found = samples(text)
            assert total(found, "earshot_requests_total", platform="telegram", outcome="ok") == 1
            assert total(found, "earshot_model_latency_seconds_count", model="qwen-audio-turbo-latest") >= 1
            assert total(found, "earshot_tokens_total", kind="audio") > 0
            assert total(found, "earshot_tokens_total", kind="output") > 0
            assert total(found, "earshot_jobs", state="done") == 1
            assert total(found, "earshot_ffmpeg_seconds_count") >= 1

            db.unlink()                                    # the data volume went away under the bot
            status, text = await get(base + "/healthz")
            assert status == 503 and "database" in text
        finally:
            proc.terminate()
            proc.wait(30)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    handled = [entry for entry in lines if entry["message"].startswith("handled ")]
    assert len(handled) == 1, lines
    entry = handled[0]
    assert entry["platform"] == "telegram" and entry["chat"] == "1001" and entry["outcome"] == "ok"
    assert entry["chunks"] == 1 and entry["tokens"] > 0 and entry["audio_seconds"] > 0 and entry["latency_seconds"] > 0
    assert tg.token not in log.read_text() and KEY not in log.read_text()


async def container_health_check(port: int) -> subprocess.CompletedProcess:
    """deploy/healthcheck.py, the image's HEALTHCHECK, pointed at `port`."""
    script = Path(__file__).parents[1] / "deploy" / "healthcheck.py"     # __file__ is absolute
    return await asyncio.to_thread(subprocess.run, [sys.executable, str(script), str(port)], capture_output=True,
                                   text=True, timeout=30)


async def test_slack_http_mode_serves_health_on_its_port_and_metrics_only_on_the_metrics_port(tmp_path: Path) -> None:
    metrics_port = free_port()
    async with slack_running(tmp_path, ds=FakeDashScope(api_key=KEY), metrics_port=metrics_port) as world:
        port = world.server.port
        base = f"http://127.0.0.1:{port}"
        assert await get(base + "/healthz") == (200, "ok\n")
        assert (await container_health_check(port)).returncode == 0
        status, _ = await get(base + "/metrics")          # the public events port shows no figures
        assert status == 404
        status, text = await get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200 and total(samples(text), "earshot_jobs", state="queued") == 0
        (tmp_path / "earshot.db").unlink()
        status, text = await get(base + "/healthz")
        assert status == 503 and text.startswith("database: ") and "slack: " not in text
        assert str(tmp_path) not in text and "earshot.db" not in text     # no path: the host's layout stays private
        check = await container_health_check(port)
        assert check.returncode == 1 and "database" in check.stdout


async def test_whatsapp_serves_health_on_its_port_and_metrics_only_on_the_metrics_port(tmp_path: Path) -> None:
    metrics_port = free_port()
    async with whatsapp_running(tmp_path, metrics_port=metrics_port) as phone:
        base = f"http://127.0.0.1:{phone.server.port}"
        assert await get(base + "/healthz") == (200, "ok\n")
        assert (await container_health_check(phone.server.port)).returncode == 0
        status, _ = await get(base + "/metrics")          # the public webhook port shows no figures
        assert status == 404
        status, text = await get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200 and total(samples(text), "earshot_jobs", state="queued") == 0
        assert (await get(f"http://127.0.0.1:{metrics_port}/healthz")) == (200, "ok\n")
        (tmp_path / "earshot.db").unlink()                  # the data volume went away under the bot
        status, text = await get(base + "/healthz")
        assert status == 503 and text.startswith("database: ")
        assert str(tmp_path) not in text and "earshot.db" not in text
    # stopped: the metrics port is given back
    with socket.socket() as s:
        s.bind(("127.0.0.1", metrics_port))


async def test_health_says_what_is_wrong_without_the_error_text(tmp_path: Path) -> None:
    """A database that stops answering: /healthz says so in a few words; the exception's text (which can
    name files, hosts, users) goes to the log only."""
    async with slack_running(tmp_path, ds=FakeDashScope(api_key=KEY)) as world:
        await world.server.earshot.history.close()           # closed under the process: every query fails
        status, text = await get(f"http://127.0.0.1:{world.server.port}/healthz")
        assert status == 503 and text == "database: does not answer\n"


async def test_socket_mode_health_names_a_failing_platform(tmp_path: Path) -> None:
    port = free_port()
    async with serving(FakeSlack()) as slack, serving(FakeDashScope(api_key=KEY)) as model:
        slack.failures["auth.test"] = "fatal_error"          # Slack is having trouble: we start, but are unwell
        app = SlackSocketMode(settings_for(model, tmp_path, slack=slack, slack_app_token=slack.app_token,
                                           slack_signing_secret=None, metrics_port=port))
        await app.start()
        try:
            status, text = await get(f"http://127.0.0.1:{port}/healthz")
            assert status == 503 and text.startswith("slack: ") and "fatal_error" in text
            status, _ = await get(f"http://127.0.0.1:{port}/metrics")
            assert status == 200
        finally:
            await app.stop()
