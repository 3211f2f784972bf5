"""Audio by link (core.audio.links): a real loopback web server, fetched through the real guard.

The "allowed host" case needs a public name that leads to the loopback server. DNS and the socket layer
are the system's, not earshot's, so those two (and only those) are stood in for: a resolver that gives
audio.example.com a public address, and a network that carries connections to that address to 127.0.0.1
and records where each one was asked to go. The guard's checks, redirects and streaming run unchanged.
"""
from __future__ import annotations

import ipaddress

import httpcore
import pytest
from aiohttp import web

from core.audio.links import LinkError, LinkFetcher, find_link, is_public
from core.errors import AudioError
from core.words import messages
from tests.fakes.dashscope import tone_audio
from tests.fakes.server import Served

PUBLIC_NAME, PUBLIC_IP = "audio.example.com", "93.184.215.14"
CLIP = tone_audio((0, 0.2), (440, 0.5), (0, 0.2), fmt="mp3")


class Origin:
    """A web server with audio, a page, a huge stream, redirects and a cookie trap."""

    def __init__(self) -> None:
        self.seen: list[dict] = []         # request headers, in order
        self.app = web.Application()
        self.app.router.add_get("/clip.mp3", self.clip)
        self.app.router.add_get("/page", self.page)
        self.app.router.add_get("/huge.mp3", self.huge)
        self.app.router.add_get("/hop/{n}", self.hop)
        self.app.router.add_get("/to-loopback", self.to_loopback)
        self.app.router.add_get("/cookie", self.cookie)
        self.url = ""
        self.sent = 0

    async def clip(self, request: web.Request) -> web.Response:
        self.seen.append(dict(request.headers))
        return web.Response(body=CLIP, content_type="audio/mpeg")

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>a podcast</title>", content_type="text/html")

    async def huge(self, request: web.Request) -> web.StreamResponse:
        # chunked, no Content-Length to trust or distrust; 8 MB offered against a 1 MB cap
        resp = web.StreamResponse(headers={"Content-Type": "audio/mpeg"})
        await resp.prepare(request)
        try:
            for _ in range(128):
                await resp.write(b"\0" * 65536)
                self.sent += 65536
        except (ConnectionResetError, ConnectionError):
            pass
        return resp

    async def hop(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        raise web.HTTPFound(f"/hop/{n - 1}" if n > 0 else "/clip.mp3")

    async def to_loopback(self, request: web.Request) -> web.Response:
        port = request.url.port
        raise web.HTTPFound(f"http://127.0.0.1:{port}/clip.mp3")

    async def cookie(self, request: web.Request) -> web.Response:
        resp = web.HTTPFound("/clip.mp3")
        resp.set_cookie("session", "secret-cookie")
        raise resp


class RoutedNetwork(httpcore.AnyIOBackend):
    """The network: connections to PUBLIC_IP reach the loopback server; every dial is recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.dials: list[tuple[str, int]] = []

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):  # noqa: ASYNC109
        # (httpcore's network backend interface names it `timeout`)
        self.dials.append((host, port))
        return await super().connect_tcp("127.0.0.1" if host == PUBLIC_IP else host, port, timeout=timeout,
                                         local_address=local_address, socket_options=socket_options)


async def public_dns(host: str, port: int) -> list[str]:
    if host == PUBLIC_NAME:
        return [PUBLIC_IP]
    raise OSError(f"no such host {host}")


@pytest.fixture
async def origin():
    o = Origin()
    async with Served(o.app) as s:
        o.url = s.url
        yield o


def fetcher(**kw) -> LinkFetcher:
    return LinkFetcher(max_bytes=kw.pop("max_bytes", 1 << 20), timeout=kw.pop("timeout", 10), **kw)


async def test_loopback_is_refused_by_default_and_fetched_when_private_is_allowed(origin):
    with pytest.raises(LinkError) as err:
        await fetcher().fetch(origin.url + "/clip.mp3")
    assert err.value.user_message == messages.LINK_PRIVATE
    assert origin.seen == [], "the refused address was contacted"
    audio = await fetcher(allow_private=True).fetch(origin.url + "/clip.mp3?x=1")
    assert audio.data == CLIP and audio.filename == "clip.mp3" and audio.mime_type == "audio/mpeg"


async def test_a_public_host_is_fetched_from_the_address_that_was_checked(origin):
    network = RoutedNetwork()
    port = int(origin.url.rsplit(":", 1)[1])
    audio = await fetcher(resolver=public_dns, network=network).fetch(f"http://{PUBLIC_NAME}:{port}/clip.mp3")
    assert audio.data == CLIP
    assert network.dials == [(PUBLIC_IP, port)]          # the checked address, not a second lookup
    assert origin.seen[-1]["Host"] == f"{PUBLIC_NAME}:{port}"


async def test_a_redirect_to_loopback_from_an_allowed_host_is_refused(origin):
    network = RoutedNetwork()
    port = int(origin.url.rsplit(":", 1)[1])
    with pytest.raises(LinkError) as err:
        await fetcher(resolver=public_dns, network=network).fetch(f"http://{PUBLIC_NAME}:{port}/to-loopback")
    assert err.value.user_message == messages.LINK_PRIVATE
    assert network.dials == [(PUBLIC_IP, port)], "the redirect's loopback target was dialled"
    assert origin.seen == []


async def test_redirects_are_followed_at_most_three_times(origin):
    f = fetcher(allow_private=True)
    assert (await f.fetch(origin.url + "/hop/2")).data == CLIP      # 3 redirects
    with pytest.raises(LinkError) as err:
        await f.fetch(origin.url + "/hop/3")                         # 4 redirects
    assert err.value.user_message == messages.LINK_TOO_MANY_REDIRECTS.format(limit=3)


async def test_an_oversized_stream_is_cut_off(origin):
    with pytest.raises(AudioError) as err:
        await fetcher(allow_private=True, max_bytes=1 << 20).fetch(origin.url + "/huge.mp3")
    assert "too big" in err.value.user_message
    assert origin.sent < 8 * 1024 * 1024, "the whole body was read"


async def test_a_web_page_gets_a_clear_answer(origin):
    with pytest.raises(LinkError) as err:
        await fetcher(allow_private=True).fetch(origin.url + "/page")
    assert err.value.user_message == messages.LINK_NOT_AUDIO.format(content_type="text/html")


async def test_no_cookies_or_credentials_are_sent(origin):
    user_url = origin.url.replace("http://", "http://alice:hunter2@") + "/cookie"
    assert (await fetcher(allow_private=True).fetch(user_url)).data == CLIP
    headers = {k.lower() for k in origin.seen[-1]}
    assert "cookie" not in headers and "authorization" not in headers


@pytest.mark.parametrize("url", ["ftp://example.com/a.mp3", "file:///etc/passwd", "gopher://x", "http://"])
async def test_only_http_and_https(url):
    with pytest.raises(LinkError) as err:
        await fetcher(allow_private=True).fetch(url)
    assert err.value.user_message == messages.LINK_BAD


@pytest.mark.parametrize("address,public", [
    ("8.8.8.8", True), ("2606:4700:4700::1111", True),
    ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False), ("224.0.0.1", False),
    ("240.0.0.1", False), ("255.255.255.255", False), ("::1", False), ("::", False), ("fe80::1", False),
    ("fc00::1", False), ("ff02::1", False), ("fec0::1", False),
    ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False), ("::ffff:8.8.8.8", True),
    ("2002:7f00:1::", False), ("64:ff9b::a00:1", False), ("2001:db8::1", False),
])
def test_which_addresses_are_public(address, public):
    assert is_public(ipaddress.ip_address(address)) is public


def test_finding_a_link_in_a_message():
    assert find_link("https://x.org/a.mp3 what is said?") == "https://x.org/a.mp3"
    assert find_link("<https://x.org/a.mp3|a.mp3> summarize") == "https://x.org/a.mp3"
    assert find_link("listen to https://x.org/a.mp3") is None
    assert find_link("ftp://x.org/a.mp3") is None
