"""No secret leaves the process: the bots and the CLI run for real (as `earshot …` subprocesses) at DEBUG
log level with distinctive credentials, through ordinary use and failures, then the logs, everything sent
to the stand-ins and the SQLite files are searched for the secrets. Also: the database is private (0600)
and no temporary audio is left behind."""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from core.words import messages
from tests.conftest import free_port
from tests.fakes.dashscope import Failure, FakeDashScope, tone_audio
from tests.fakes.server import Threaded
from tests.fakes.slack import FakeSlack, event_body, signed_headers, slash_body
from tests.fakes.telegram import FakeTelegram
from tests.waiting import until_sync as wait_until

ROOT = Path(__file__).resolve().parents[1]
EARSHOT = [sys.executable, "-c", "from bots.cli import main; main()"]


def _hex(n: int = 24) -> str:
    return secrets.token_hex(n // 2)


# fresh every run, so a match can only be a leak; the random part alone is searched too (a token's
# tail without its prefix, a URL-quoted form…)
KEY, TG, BOT, SIGNING, APP = _hex(), _hex(32), _hex(), _hex(), _hex()
DASHSCOPE_KEY = f"sk-{KEY}"
TELEGRAM_TOKEN = f"{secrets.randbelow(10**9) + 10**9}:{TG}"
SLACK_BOT = f"xoxb-{BOT}"
SLACK_SIGNING = SIGNING
SLACK_APP = f"xapp-1-{APP}"
NEEDLES = [DASHSCOPE_KEY, TELEGRAM_TOKEN, SLACK_BOT, SLACK_SIGNING, SLACK_APP, KEY, TG, BOT, APP]

CLIP = tone_audio((0, 0.5), (440, 1.0), (0, 0.5), fmt="ogg")
WEBM = tone_audio((0, 0.5), (440, 1.0), (0, 0.5), fmt="webm")
BAD_KEY = Failure(401, "InvalidApiKey", "Invalid API-key provided.")


def leaks(where: str, text: str) -> list[str]:
    return [f"{where}: …{text[max(0, i - 60):i + 80]}…" for n in NEEDLES if (i := text.find(n)) >= 0]


class Run:
    """One `earshot …` process with its output captured in a file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = open(log, "wb")
        self.proc = subprocess.Popen([*EARSHOT, *args], env=env, cwd=ROOT, stdout=self._out,
                                     stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        return self.proc.returncode


@contextmanager
def running(args: list[str], env: dict[str, str], log: Path) -> Iterator[Run]:
    run = Run(args, env, log)
    try:
        yield run
    finally:
        code = run.stop()
        assert code == 0, run.output()[-3000:]


def base_env(tmp: Path, ds_url: str, db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "SLACK_", "DASHSCOPE_", "EARSHOT_"))}
    return env | {"DASHSCOPE_API_KEY": DASHSCOPE_KEY, "DASHSCOPE_HTTP_BASE_URL": ds_url + "/api/v1",
                  "EARSHOT_DB": str(db), "EARSHOT_LOG_LEVEL": "DEBUG", "EARSHOT_METRICS_PORT": "0",
                  "TMPDIR": str(tmp / "scratch"),
                  "HOME": str(tmp), "PYTHONPATH": str(ROOT)}


def drive_telegram(tg: FakeTelegram, tgs: Threaded, ds: FakeDashScope, dss: Threaded) -> None:
    def texts(chat: int) -> list[str]:
        return tgs.call(tg.texts, chat)

    def next_text(chat: int, push: dict[str, Any]) -> str:
        before = len(texts(chat))
        tgs.call(tg.push, chat, **push)
        return wait_until(lambda: texts(chat)[before:], what=f"an answer to {push.get('text') or push.get('kind')}")[0]

    voice = {"kind": "voice", "data": CLIP}
    assert "440Hz" in next_text(201, voice)
    assert next_text(201, {"text": "/usage"}).startswith("Used here today")
    next_text(201, {"text": "and what came before?"})
    assert next_text(202, voice).startswith("Sorry, I only answer")              # a stranger
    dss.call(ds.fail, BAD_KEY)                                                    # the model refuses the key
    assert next_text(201, voice) == messages.MISCONFIGURED
    tgs.call(tg.fail, "sendMessage", 500, "Internal Server Error", 1)            # Telegram fails once
    next_text(201, voice)
    assert next_text(201, {"kind": "document", "data": os.urandom(3000), "file_name": "x.mp3",
                           "mime": "audio/mpeg"}) == messages.NOT_AUDIO


def drive_slack_http(slack: FakeSlack, s: Threaded, url: str) -> list[str]:
    """Events and commands posted to the app's endpoint; returns what the app answered on HTTP."""
    said: list[str] = []

    def post(body: bytes, secret: str = SLACK_SIGNING) -> httpx.Response:
        r = httpx.post(url + "/slack/events", content=body, headers=signed_headers(secret, body), timeout=10)
        said.append(r.text)
        return r

    def posts() -> list[dict[str, Any]]:
        return s.call(lambda: list(slack.posts))

    def dm(data: bytes) -> dict[str, Any]:
        record = s.call(slack.add_file, data)
        return {"type": "message", "subtype": "file_share", "channel": "D0ALICE01", "channel_type": "im",
                "user": "U0ALICE", "text": "", "ts": s.call(slack.ts), "files": [FakeSlack.event_file(record)]}

    assert post(event_body(dm(WEBM))).status_code == 200
    wait_until(lambda: any("440Hz" in (p["text"] or "") for p in posts()), what="the Slack answer")
    assert "Used here today" in post(slash_body("usage", response_url=s.call(slack.response_url))).text
    assert post(slash_body("help"), secret="not-the-secret").status_code == 401
    s.call(setattr, slack, "files_scope", False)                                 # downloads get a sign-in page
    n = len(posts())
    post(event_body(dm(WEBM)))
    wait_until(lambda: len(posts()) > n, what="the Slack apology")
    return said


def drive_slack_socket(slack: FakeSlack, s: Threaded) -> list[str]:
    wait_until(lambda: s.call(lambda: list(slack.sockets)), what="the Socket Mode connection")
    record = s.call(slack.add_file, WEBM)
    event = {"type": "message", "subtype": "file_share", "channel": "D0ALICE01", "channel_type": "im",
             "user": "U0ALICE", "text": "", "ts": s.call(slack.ts), "files": [FakeSlack.event_file(record)]}

    def envelope(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        return asyncio.run_coroutine_threadsafe(slack.send_envelope(kind, payload, within=10), s.loop).result(15)

    acks = [envelope("events_api", json.loads(event_body(event)))]
    wait_until(lambda: any("440Hz" in (p["text"] or "") for p in s.call(lambda: list(slack.posts))),
               what="the Socket Mode answer")
    import urllib.parse
    acks.append(envelope("slash_commands", dict(urllib.parse.parse_qsl(slash_body("usage").decode()))))
    return [json.dumps(a) for a in acks]


def sent_to_stand_ins(tg: FakeTelegram, slack: FakeSlack, socket_slack: FakeSlack, ds: FakeDashScope) -> str:
    """Everything the app sent the services, minus where a credential belongs (auth headers, the bot's URL)."""
    parts: list[Any] = [tg.calls, list(tg.messages.values()), tg.edits, tg.commands]
    for sl in (slack, socket_slack):
        parts += [[(c.method, c.params) for c in sl.calls], sl.posts, sl.updates, sl.responses, sl.socket_acks]
    parts += [[(c.body, c.texts, {k: v for k, v in c.headers.items() if k.lower() != "authorization"})
               for c in ds.calls]]
    return json.dumps(parts, default=repr, ensure_ascii=False)


def test_no_secret_in_logs_messages_or_the_database(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    tg, slack, socket_slack = FakeTelegram(token=TELEGRAM_TOKEN), FakeSlack(token=SLACK_BOT), \
        FakeSlack(token=SLACK_BOT, app_token=SLACK_APP)
    ds = FakeDashScope(api_key=DASHSCOPE_KEY)
    dbs = {name: tmp_path / f"{name}.db" for name in ("telegram", "slack", "socket", "cli")}
    logs: list[str] = []
    with Threaded(tg.app) as tgs, Threaded(slack.app) as ss, Threaded(socket_slack.app) as sss, \
            Threaded(ds.app) as dss:
        slack.url, socket_slack.url = ss.url, sss.url
        env = base_env(tmp_path, dss.url, dbs["telegram"])
        port = free_port()
        # all three bots start at once (they take a moment to import), then each is put through its paces
        with running(["telegram"], env | {"TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN, "TELEGRAM_API_BASE_URL": tgs.url,
                                          "EARSHOT_ALLOWED_USERS": "201, 5550001"},
                     tmp_path / "telegram.log") as bot, \
             running(["slack", "--port", str(port)],
                     base_env(tmp_path, dss.url, dbs["slack"]) | {
                         "SLACK_BOT_TOKEN": SLACK_BOT, "SLACK_SIGNING_SECRET": SLACK_SIGNING,
                         "SLACK_API_URL": ss.url + "/api/"}, tmp_path / "slack.log") as http_app, \
             running(["slack"], base_env(tmp_path, dss.url, dbs["socket"]) | {
                         "SLACK_BOT_TOKEN": SLACK_BOT, "SLACK_APP_TOKEN": SLACK_APP,
                         "SLACK_API_URL": sss.url + "/api/"}, tmp_path / "socket.log") as socket_app:
            wait_until(lambda: tgs.call(lambda: list(tg.commands)) or bot.proc.poll() is not None, 30)
            drive_telegram(tg, tgs, ds, dss)
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: _healthy(url) or http_app.proc.poll() is not None, 30)
            logs += drive_slack_http(slack, ss, url)
            drive_slack_socket(socket_slack, sss)
            runs = [bot, http_app, socket_app]
        logs += [r.output() for r in runs]

        # the terminal: an answer as JSON, then a refused key
        clip = tmp_path / "clip.ogg"
        clip.write_bytes(CLIP)
        cli_env = base_env(tmp_path, dss.url, dbs["cli"])
        ok = subprocess.run([*EARSHOT, "transcribe", str(clip), "--json"], env=cli_env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0 and "TONE440" in ok.stdout, ok.stderr[-2000:]   # by the recognizer (default)
        dss.call(ds.fail, BAD_KEY)
        refused = subprocess.run([*EARSHOT, "summarize", str(clip), "-v"], env=cli_env, cwd=ROOT,
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode == 4 and "DASHSCOPE_API_KEY" in refused.stderr, refused.stderr[-2000:]
        logs += [ok.stdout, ok.stderr, refused.stdout, refused.stderr]

        found = [leak for i, text in enumerate(logs) for leak in leaks(f"output {i}", text)]
        found += leaks("sent to the stand-ins", sent_to_stand_ins(tg, slack, socket_slack, ds))

    assert len(logs) > 5 and sum(len(t) for t in logs) > 20_000, "DEBUG logging produced almost nothing"
    assert any(" DEBUG " in t for t in logs)
    for name, db in dbs.items():
        assert db.exists(), name
        for f in [db, *db.parent.glob(db.name + "-*")]:          # the database and its WAL / shared memory
            found += leaks(f.name, f.read_bytes().decode("latin-1"))
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f"{f.name} is {oct(f.stat().st_mode)}"
    assert not found, "\n".join(found)
    assert not list(scratch.iterdir()), f"temporary files left behind: {list(scratch.iterdir())}"


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
