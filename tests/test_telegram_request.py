"""The Bot API's requests over aiohttp (bots/telegram/request.py), against servers on loopback: what
python-telegram-bot's own request class promised (form fields, multipart uploads, TimedOut, NetworkError,
the environment's proxy) still holds."""
from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp import web
from telegram import Bot, InputFile
from telegram.error import NetworkError, TimedOut

from bots.telegram.request import AiohttpRequest
from tests.fakes.server import Served


class Recorder:
    """A server that keeps what it was sent, and can be told to stall."""

    def __init__(self) -> None:
        self.seen: list[dict] = []
        self.stall = asyncio.Event()
        self.stalling = False
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        if self.stalling:
            await self.stall.wait()
        form = await request.post()
        fields = {k: (v.filename, v.content_type, v.file.read()) if isinstance(v, web.FileField) else v
                  for k, v in form.items()}
        self.seen.append({"path": request.path, "url": str(request.url), "method": request.method,
                          "fields": fields, "agent": request.headers.get("User-Agent", "")})
        if request.path.endswith("/getMe"):
            return web.json_response({"ok": True, "result": {"id": 123, "is_bot": True, "first_name": "earshot",
                                                             "username": "earshot_bot"}})
        return web.json_response({"ok": True, "result": {"message_id": 7, "date": 0,
                                                         "chat": {"id": 1, "type": "private"}}})


async def test_parameters_go_form_encoded_and_files_as_multipart():
    rec = Recorder()
    async with Served(rec.app) as server:
        request = AiohttpRequest(4)
        bot = Bot("123:abc", base_url=f"{server.url}/bot", request=request, get_updates_request=AiohttpRequest())
        async with bot:
            await bot.send_message(1, "héllo & <b>", read_timeout=5)
            await bot.send_document(1, InputFile(b"transcript text", filename="note.txt"), caption="the words")
    _me, message, document = rec.seen
    assert message["path"] == "/bot123:abc/sendMessage" and message["fields"]["text"] == "héllo & <b>"
    assert message["fields"]["chat_id"] == "1" and "python-telegram-bot" in message["agent"]
    assert document["fields"]["caption"] == "the words"
    assert document["fields"]["document"] == ("note.txt", "text/plain", b"transcript text")


async def test_a_stalled_server_is_a_timeout_and_a_closed_port_a_network_error():
    rec = Recorder()
    rec.stalling = True
    async with Served(rec.app) as server:
        try:
            async with AiohttpRequest(read_timeout=0.3) as request:
                with pytest.raises(TimedOut):
                    await request.post(f"{server.url}/bot1:x/getMe")
        finally:
            rec.stall.set()
    with socket.socket() as s:                    # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with AiohttpRequest() as request:
        with pytest.raises(NetworkError) as err:
            await request.post(f"http://127.0.0.1:{port}/bot1:x/getMe")
    assert not isinstance(err.value, TimedOut)


async def test_requests_go_through_the_proxy_the_environment_names_unless_the_host_is_exempt(monkeypatch):
    api, proxy = Recorder(), Recorder()
    async with Served(api.app) as server, Served(proxy.app) as via:
        monkeypatch.setenv("HTTP_PROXY", via.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with AiohttpRequest() as request:
            await request.post(f"{server.url}/bot1:x/getMe")
        assert [s["url"] for s in proxy.seen] == [f"{server.url}/bot1:x/getMe"] and api.seen == []

        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with AiohttpRequest() as request:
            await request.post(f"{server.url}/bot1:x/getMe")
        assert len(proxy.seen) == 1 and [s["path"] for s in api.seen] == ["/bot1:x/getMe"]
