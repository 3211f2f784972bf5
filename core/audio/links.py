"""Audio by link: fetch a user-given http(s) URL the way a server must, guarded against SSRF.

- only http and https; credentials in the URL are dropped, no cookies or proxies' credentials are sent;
- every host's addresses are resolved and refused unless all are public (private, loopback, link-local,
  multicast, reserved and unspecified refused, IPv4 and IPv6, IPv4-mapped and 6to4/Teredo embeddings too);
- the connection goes to the very address that was checked: the connection pool's network layer
  (GuardedNetwork) resolves, checks and connects in one step, while the URL keeps the name for the Host
  header, TLS SNI and the certificate check, so a second DNS answer can't differ;
- redirects are followed by hand, at most MAX_REDIRECTS, each one checked again;
- the size cap holds while streaming, whatever Content-Length says; one timeout covers the whole fetch.
`allow_private` (EARSHOT_URL_ALLOW_PRIVATE) lifts only the address check.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from email.message import Message
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote

import httpcore
import httpx

from core.config import Settings
from core.errors import AudioError, InputError
from core.values import Audio
from core.words import messages

log = logging.getLogger(__name__)

MAX_REDIRECTS = 3
SCHEMES = ("http", "https")
USER_AGENT = "earshot (audio link fetcher)"
# what is clearly not audio; anything else (octet-stream, no type) is left to the decoder to judge
_NOT_AUDIO = re.compile(r"^(text/|application/(xhtml|xml|json|javascript|pdf)|image/)", re.I)
_URL = re.compile(r"https?://[^\s<>|\"']+", re.I)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]


class LinkError(InputError):
    """A link that can't be fetched, or doesn't lead to audio."""


def find_link(text: str | None) -> str | None:
    """The message's link, when the message is one: an http(s) URL as its first word (Slack's <url|label> too)."""
    words = (text or "").strip()
    if words.startswith("<") and ">" in words:           # Slack: <https://…> or <https://…|label>
        words = words[1:].split(">", 1)[0].split("|", 1)[0]
    match = _URL.match(words)
    return match.group(0).rstrip(".,;:!?)") if match else None


@dataclass(frozen=True, slots=True)
class LinkedAudio:
    """A message that starts with a link to audio: the URL, a file name from its path, and the words after it."""

    url: str
    name: str | None
    rest: str


def split_link(text: str | None) -> LinkedAudio | None:
    """The link a message starts with (find_link), and what follows it (a task, a question); None if none."""
    url = find_link(text)
    if url is None:
        return None
    words = (text or "").strip()
    rest = words.split(">", 1)[1] if words.startswith("<") else words[words.find(url) + len(url):]
    name = url.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return LinkedAudio(url, name if "." in name else None, rest.strip())


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in ipaddress.IPv6Network("64:ff9b::/96"):      # NAT64: reaches the IPv4 address inside
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress) -> bool:
    """True only for a globally routable unicast address (and, for IPv6, any IPv4 it carries too)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:           # ::ffff:a.b.c.d is the IPv4 address itself
            return is_public(ip.ipv4_mapped)
        inner = _embedded_ipv4(ip)
        if (inner is not None and not is_public(inner)) or ip.is_site_local:
            return False
    if (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
            or ip.is_unspecified):
        return False
    return ip.is_global


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class GuardedNetwork(httpcore.AsyncNetworkBackend):
    """Every TCP connection resolves its host once, checks every address, and connects to a checked one.

    The URL is never rewritten, so the Host header, TLS SNI and the certificate check keep the name, while
    the socket goes to the address that passed: a second DNS answer (rebinding) never gets a say.
    """

    def __init__(self, resolver: Resolver, allow_private: bool,
                 network: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.resolver = resolver
        self.allow_private = allow_private
        self.network = network or httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        ip = await self.checked_address(host, port)
        return await self.network.connect_tcp(str(ip), port, timeout=timeout, local_address=local_address,
                                              socket_options=socket_options)

    async def checked_address(self, host: str, port: int) -> IPAddress:
        """One of the host's addresses, all of which must be public unless private ones are allowed."""
        host = host.strip("[]")
        try:
            found = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in await self.resolver(host, port)]
            except OSError as err:
                raise LinkError(messages.LINK_UNREACHABLE, f"resolving {host}: {err}",
                                fmt=dict(reason=f"there is no host {host}")) from None
        if not found:
            raise LinkError(messages.LINK_UNREACHABLE, fmt=dict(reason=f"there is no host {host}"))
        if not self.allow_private:
            bad = [ip for ip in found if not is_public(ip)]
            if bad:   # any non-public answer refuses the host: another lookup could pick that one
                raise LinkError(messages.LINK_PRIVATE, f"refused {host}: it resolves to {bad[0]}")
        return found[0]

    async def sleep(self, seconds: float) -> None:
        await self.network.sleep(seconds)

    async def connect_unix_socket(self, *args: Any, **kw: Any) -> httpcore.AsyncNetworkStream:
        raise LinkError(messages.LINK_BAD, "unix sockets are never used for links")


class LinkFetcher:
    """`await LinkFetcher(...).fetch(url)` -> Audio. Holds no state between fetches.

    resolver and network stand for the system's DNS and sockets (tests route a public-looking name to a
    loopback server through them); everything that decides what may be fetched runs as in production.
    """

    def __init__(self, *, max_bytes: int, timeout: float, allow_private: bool = False,
                 resolver: Resolver = system_resolver, network: httpcore.AsyncNetworkBackend | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.guard = GuardedNetwork(resolver, allow_private, network)
        self.ssl_context = ssl_context

    async def fetch(self, url: str) -> Audio:
        try:
            async with asyncio.timeout(self.timeout):
                return await self._fetch(url)
        except TimeoutError:
            raise LinkError(messages.LINK_TIMEOUT, f"fetching {_safe(url)} timed out",
                            fmt=dict(seconds=self.timeout)) from None

    async def _fetch(self, url: str) -> Audio:
        # httpcore: no cookie jar, no proxies or .netrc from the environment, no redirects behind our back
        async with httpcore.AsyncConnectionPool(network_backend=self.guard, ssl_context=self.ssl_context,
                                                max_connections=2) as pool:
            target = _parse(url)
            for hop in range(MAX_REDIRECTS + 1):
                headers: dict[bytes | str, bytes | str] = {"Host": _host_header(target), "User-Agent": USER_AGENT,
                           "Accept": "audio/*, video/*, */*;q=0.5", "Accept-Encoding": "identity"}
                try:
                    async with pool.stream("GET", str(target), headers=headers, extensions={"timeout": {
                            "connect": self.timeout, "read": self.timeout, "pool": self.timeout}}) as response:
                        status = response.status
                        if status in (301, 302, 303, 307, 308):
                            location = _header(response, "location")
                            if hop == MAX_REDIRECTS:
                                raise LinkError(messages.LINK_TOO_MANY_REDIRECTS,
                                                f"{_safe(url)} redirects more than {MAX_REDIRECTS} times",
                                                fmt=dict(limit=MAX_REDIRECTS))
                            if not location:
                                raise LinkError(messages.LINK_UNREACHABLE, fmt=dict(reason="it redirects nowhere"))
                            target = _parse(str(target.join(location)))
                            log.info("link redirects to %s", _safe(str(target)))
                            continue
                        return await self._body(target, response)
                except httpcore.ConnectError as err:
                    raise LinkError(messages.LINK_UNREACHABLE, f"{_safe(str(target))}: {err}",
                                    fmt=dict(reason="the server can't be reached")) from None
                except (httpcore.TimeoutException, TimeoutError):
                    raise TimeoutError from None
                except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as err:
                    raise LinkError(messages.LINK_UNREACHABLE, f"{_safe(str(target))}: {type(err).__name__}: {err}",
                                    fmt=dict(reason="the connection failed")) from None
        raise AssertionError("unreachable")

    async def _body(self, url: httpx.URL, response: httpcore.Response) -> Audio:
        if response.status != 200:
            raise LinkError(messages.LINK_UNREACHABLE, fmt=dict(reason=f"the server answered HTTP {response.status}"))
        content_type = _header(response, "content-type").split(";", 1)[0].strip().lower()
        if _NOT_AUDIO.match(content_type):
            raise LinkError(messages.LINK_NOT_AUDIO, fmt=dict(content_type=content_type))
        chunks: list[bytes] = []
        got = 0
        limit_mb = self.max_bytes / 2**20
        async for chunk in response.aiter_stream():    # counted as it arrives, whatever Content-Length said
            if not chunks and chunk.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
                raise LinkError(messages.LINK_NOT_AUDIO, fmt=dict(content_type="text/html"))
            got += len(chunk)
            if got > self.max_bytes:
                raise AudioError(messages.TOO_BIG, f"link body passed {limit_mb:.0f} MB; cut off",
                                 fmt=dict(size_mb=got / 2**20, limit_mb=limit_mb))
            chunks.append(chunk)
        data = b"".join(chunks)
        if not data:
            raise AudioError(messages.EMPTY_FILE)
        return Audio(data, filename=_filename(url, _header(response, "content-disposition")),
                     mime_type=content_type or None)


def _parse(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError, ValueError):
        raise LinkError(messages.LINK_BAD) from None
    if parsed.scheme not in SCHEMES or not parsed.host:
        raise LinkError(messages.LINK_BAD, f"refused link scheme {parsed.scheme!r}")
    # credentials in a link are never sent; the fragment is the browser's
    return parsed.copy_with(username=None, password=None, fragment=None)


def _header(response: httpcore.Response, name: str) -> str:
    wanted = name.lower().encode()
    return next((v.decode("latin-1") for k, v in response.headers if k.lower() == wanted), "")


def _host_header(url: httpx.URL) -> str:
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{host}:{url.port}" if url.port else host


def _filename(url: httpx.URL, disposition: str) -> str | None:
    if disposition:
        msg = Message()
        msg["content-disposition"] = disposition
        if name := msg.get_filename():
            return PurePosixPath(name).name or None
    name = PurePosixPath(unquote(url.path)).name
    return name or None


def _safe(url: str) -> str:
    """A URL for logs: no query string (it may carry a token)."""
    return url.split("?", 1)[0]


def fetcher_for(settings: Settings) -> LinkFetcher:
    """The fetcher configured by EARSHOT_MAX_FILE_MB, EARSHOT_URL_TIMEOUT and EARSHOT_URL_ALLOW_PRIVATE."""
    return LinkFetcher(max_bytes=settings.max_file_bytes, timeout=settings.url_timeout,
                       allow_private=settings.url_allow_private)
