"""Memory of a Telegram webhook server under forged POSTs: three 90 MB bodies with a wrong secret token.

earshot's webhook server (bots.telegram.webhook, aiohttp, headers first, 256 KiB cap) against the server
python-telegram-bot's run_webhook starts (tornado, 100 MB default limit, secret checked after the body is
read), each in a child process on loopback; the figure is the child's resident memory (VmRSS, and its peak
VmHWM) before and after. Run: `.venv/bin/python -m bench.webhook_bodies`.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BODY = 90 * 1024 * 1024
POSTS = 3
SECRET = "s" * 32

SERVER = """
import asyncio, socket, sys
from telegram.ext import ApplicationBuilder
async def main():
    app = ApplicationBuilder().token("123456:bench").updater(None).build()
    if sys.argv[1] == "earshot":
        from bots.telegram.webhook import WebhookServer
        port = await WebhookServer(app, path="/hook", secret=sys.argv[2], listen="127.0.0.1", port=0).start()
    else:   # the server python-telegram-bot's Updater.start_webhook builds
        from telegram.ext._utils.webhookhandler import WebhookAppClass, WebhookServer
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
        hook = WebhookAppClass("/hook", app.bot, app.update_queue, sys.argv[2])
        server = WebhookServer("127.0.0.1", port, hook, None)
        await server.serve_forever()
    print(port, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) // 1024, int(fields["VmHWM"].split()[0]) // 1024


def forged_post(port: int) -> str:
    """A 90 MB POST with a wrong secret, sent as fast as the server takes it; the status line, if any."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(f"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"X-Telegram-Bot-Api-Secret-Token: wrong\r\nContent-Length: {BODY}\r\n\r\n".encode())
        chunk = b"{" * (1024 * 1024)
        try:
            for _ in range(BODY // len(chunk)):
                conn.sendall(chunk)
        except OSError:          # the server refused and closed: the rest was never sent
            pass
        try:
            return conn.recv(200).split(b"\r\n", 1)[0].decode()
        except OSError:
            return "(closed)"


def run(kind: str) -> dict[str, object]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, kind, SECRET], cwd=ROOT, stdout=subprocess.PIPE,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        before = memory(proc.pid)
        started = time.perf_counter()
        answers = [forged_post(port) for _ in range(POSTS)]
        took = time.perf_counter() - started
        after = memory(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    return {"server": kind, "rss_before_mib": before[0], "rss_after_mib": after[0], "peak_mib": after[1],
            "answers": answers, "seconds": round(took, 2)}


def main() -> None:
    for kind in ("ptb-tornado", "earshot"):
        print(run(kind))


if __name__ == "__main__":
    main()
