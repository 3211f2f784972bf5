"""Every HTTP endpoint earshot serves checks headers first and reads at most a small body (bots.web).

Each test sends only a request's headers and the first kilobyte of a body that claims to be 100 MB, then
waits for the answer: it arrives, and the connection closes, while 99.99% of the body was never sent. A
server that read the body before answering (python-telegram-bot's tornado server, aiohttp's request.text()
behind Slack's signature check) would wait for the rest instead, and the test would fail at its deadline.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from telegram import Update
from telegram.ext import Application, ApplicationBuilder

from bots.health import HealthServer, serve_health
from bots.telegram.webhook import WebhookServer
from bots.web import SLACK_BODY_CAP, TELEGRAM_BODY_CAP, WHATSAPP_BODY_CAP
from tests.conftest import SLACK_SECRET, free_port, slack_running, spawn
from tests.fakes.dashscope import FakeDashScope
from tests.fakes.server import Served
from tests.fakes.slack import event_body, signed_headers
from tests.fakes.telegram import FakeTelegram
from tests.test_whatsapp import ALICE, whatsapp_running
from tests.test_whatsapp import SECRET as WHATSAPP_SECRET
from tests.waiting import job_rows, until

EARSHOT = str(Path(sys.executable).with_name("earshot"))

HUGE = 100 * 1024 * 1024
SECRET = "the-webhook-secret_1234567890abcdef"
ANSWER_WITHIN = 10.0      # a deadline for a failing test, not a measurement


async def exchange(port: int, path: str, headers: dict[str, str], body: bytes, *,
                   method: str = "POST", length: int | None = None, chunked: bool = False,
                   refusal: bool = True) -> tuple[int, bool]:
    """Send the head of a request and `body` (the start of a `length`-byte body, or chunks) and nothing more;
    the status answered, and (for a `refusal`) whether the server then closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        if chunked:
            head.append("Transfer-Encoding: chunked")
            payload = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 8192]), body[i:i + 8192])
                               for i in range(0, len(body), 8192))
        else:
            head.append(f"Content-Length: {len(body) if length is None else length}")
            payload = body
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), ANSWER_WITHIN)
        status = int(status_line.split()[1])
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), ANSWER_WITHIN)
        if not refusal:
            return status, False
        try:
            rest = await asyncio.wait_for(reader.read(65536), ANSWER_WITHIN)
            closed = rest == b"" or await asyncio.wait_for(reader.read(65536), ANSWER_WITHIN) == b""
        except (TimeoutError, ConnectionError):
            closed = False
        return status, closed
    finally:
        writer.close()


# --- Telegram ---------------------------------------------------------------------------------------------

@asynccontextmanager
async def telegram_webhook() -> AsyncIterator[tuple[Application, int]]:
    """earshot's webhook server in front of a bare python-telegram-bot Application (no Bot API calls)."""
    application = ApplicationBuilder().token("123456:TEST-token").updater(None).build()
    server = WebhookServer(application, path="/hook", secret=SECRET, listen="127.0.0.1", port=0)
    port = await server.start()
    try:
        yield application, port
    finally:
        await server.stop()


def update_json(update_id: int = 7) -> bytes:
    return json.dumps({"update_id": update_id, "message": {
        "message_id": 1, "date": 1700000000, "chat": {"id": 42, "type": "private"}, "text": "hi"}}).encode()


async def test_a_wrong_secret_is_refused_before_the_body_is_read() -> None:
    async with telegram_webhook() as (application, port):
        for secret in ("guess", None):
            headers = {"Content-Type": "application/json"}
            if secret:
                headers["X-Telegram-Bot-Api-Secret-Token"] = secret
            status, closed = await exchange(port, "/hook", headers, b"x" * 1024, length=HUGE)
            assert (status, closed) == (403, True)
        assert application.update_queue.empty()


async def test_the_right_secret_still_cannot_send_more_than_the_cap() -> None:
    headers = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": SECRET}
    async with telegram_webhook() as (application, port):
        assert await exchange(port, "/hook", headers, b"{" * 1024, length=HUGE) == (413, True)
        # chunked: no length to refuse up front; read up to the cap, then refused
        assert await exchange(port, "/hook", headers, b" " * (TELEGRAM_BODY_CAP + 8192), chunked=True) == (413, True)
        assert application.update_queue.empty()


async def test_an_update_with_the_right_secret_goes_into_the_queue() -> None:
    headers = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": SECRET}
    async with telegram_webhook() as (application, port):
        status, _ = await exchange(port, "/hook", headers, update_json(7), refusal=False)
        assert status == 200
        update = application.update_queue.get_nowait()
        assert isinstance(update, Update) and update.update_id == 7 and update.effective_message.text == "hi"
        # an update the library can't read is skipped with 200 (Telegram would redeliver it forever)
        status, _ = await exchange(port, "/hook/", headers, b'{"update_id": 8, "message": {"chat": 5}}',
                                    refusal=False)
        assert status == 200 and application.update_queue.get_nowait().update_id == 8


async def test_earshot_telegram_webhook_refuses_a_forged_huge_post_unread(tmp_path: Path) -> None:
    """The real process (`earshot telegram --webhook-url`), as Telegram and a stranger reach it."""
    tg = FakeTelegram()
    port = free_port()
    hook = f"http://127.0.0.1:{port}/hook"
    async with Served(tg.app) as tgs, Served(FakeDashScope(api_key="sk-x").app) as dss:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DASHSCOPE_", "EARSHOT_"))}
        env |= {"TELEGRAM_BOT_TOKEN": tg.token, "TELEGRAM_API_BASE_URL": tgs.url, "DASHSCOPE_API_KEY": "sk-x",
                "DASHSCOPE_HTTP_BASE_URL": dss.url + "/api/v1", "EARSHOT_DB": str(tmp_path / "db"),
                "EARSHOT_METRICS_PORT": "0"}
        log = tmp_path / "bot.log"
        proc = await asyncio.to_thread(spawn, [EARSHOT, "telegram", "--webhook-url", hook, "--port", str(port),
                                               "--listen", "127.0.0.1"], log, env)
        try:
            async def listening() -> bool:
                assert proc.poll() is None, log.read_text()[-3000:]
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    return False
                writer.close()
                return tg.webhook is not None
            await until(listening, 30)
            forged = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": "guess"}
            assert await exchange(port, "/hook", forged, b"{" * 1024, length=HUGE) == (403, True)
            right = forged | {"X-Telegram-Bot-Api-Secret-Token": tg.webhook["secret_token"]}
            assert await exchange(port, "/hook", right, b"{" * 1024, length=HUGE) == (413, True)
        finally:
            proc.terminate()
            await asyncio.to_thread(proc.wait, 30)


# --- Slack --------------------------------------------------------------------------------------------------

async def test_slack_events_check_the_signature_headers_before_reading(tmp_path: Path) -> None:
    async with slack_running(tmp_path, ds=FakeDashScope(api_key="sk-x")) as world:
        port = world.server.port
        unsigned = {"Content-Type": "application/json"}
        assert await exchange(port, "/slack/events", unsigned, b"{" * 1024, length=HUGE) == (401, True)
        stale = signed_headers(SLACK_SECRET, b"{}", timestamp=1_600_000_000)
        assert await exchange(port, "/slack/events", stale, b"{" * 1024, length=HUGE) == (401, True)
        # well-formed, fresh signature headers (the signature itself needs the body): the cap still holds
        fresh = signed_headers(SLACK_SECRET, b"{}")
        assert await exchange(port, "/slack/events", fresh, b"{" * 1024, length=HUGE) == (413, True)
        assert await exchange(port, "/slack/events", fresh, b" " * (SLACK_BODY_CAP + 8192), chunked=True) == (413, True)
        # any other path on the public port: a body is refused unread too
        assert (await exchange(port, "/elsewhere", unsigned, b"{" * 1024, length=HUGE))[0] == 413
        # and a signed event of ordinary size still goes through
        body = event_body({"type": "app_mention", "user": "U0X", "channel": "C0X", "text": "hi", "ts": "1.0"})
        assert (await exchange(port, "/slack/events", signed_headers(SLACK_SECRET, body), body,
                               refusal=False))[0] == 200


# --- WhatsApp -----------------------------------------------------------------------------------------------

async def test_whatsapp_deliveries_check_the_signature_header_before_reading(tmp_path: Path) -> None:
    async with whatsapp_running(tmp_path) as phone:
        port, path = phone.server.port, "/whatsapp/webhook"
        unsigned = {"Content-Type": "application/json"}
        for headers in (unsigned, unsigned | {"X-Hub-Signature-256": "sha256=guess"},
                        unsigned | {"X-Hub-Signature-256": "sha1=" + "0" * 40}):
            assert await exchange(port, path, headers, b"{" * 1024, length=HUGE) == (401, True)
        # a well-formed signature (whether it matches needs the body): the cap still holds
        signed = phone.wa.signed(WHATSAPP_SECRET, b"{}")
        assert await exchange(port, path, signed, b"{" * 1024, length=HUGE) == (413, True)
        assert await exchange(port, path, signed, b" " * (WHATSAPP_BODY_CAP + 8192), chunked=True) == (413, True)
        # a body of ordinary size that the signature is not for: refused, nothing done
        body, _ = phone.wa.message(ALICE, text="help")
        assert await exchange(port, path, signed, body) == (401, True)
        # any other path on the public port: a body is refused unread too
        assert (await exchange(port, "/elsewhere", unsigned, b"{" * 1024, length=HUGE))[0] == 413
        assert [c["kind"] for c in phone.wa.calls] == ["phone"] and not job_rows(phone.settings.db_path)
        # and a delivery signed for its body still goes through
        assert (await exchange(port, path, phone.wa.signed(WHATSAPP_SECRET, body), body, refusal=False))[0] == 200
        await until(lambda: phone.wa.texts(ALICE), 30, "the help to be sent")


# --- health and metrics -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/nothing-here"])
async def test_health_and_metrics_take_no_body(tmp_path: Path, path: str) -> None:
    from core.store.db import Database
    history = Database(tmp_path / "h.db")
    await history.open()

    async def fine() -> None:
        return None
    server: HealthServer | None = await serve_health(history, fine, name="test", port=free_port())
    assert server is not None
    try:
        assert await exchange(server.port, path, {}, b"x" * 1024, method="GET", length=HUGE) == (413, True)
        assert await exchange(server.port, path, {}, b"x" * 4096, method="POST", chunked=True) == (413, True)
        assert (await exchange(server.port, "/healthz", {}, b"", method="GET", refusal=False))[0] == 200
    finally:
        await server.stop()
        await history.close()
