"""Building and running the Discord bot: discord.py pointed at DISCORD_API_URL, the Gateway it names, the
commands registered with one bulk overwrite, health and metrics on EARSHOT_METRICS_PORT.

discord.py reads its REST base from `discord.http.Route.BASE` (the one setting for every request: the bot's and
the interaction webhooks'). The Gateway's address comes from `GET /gateway/bot`: discord.py's AutoShardedClient
asks it (and shards when Discord says so); a session Discord invalidates reconnects to
`DiscordWebSocket.DEFAULT_GATEWAY`, so that is set to the same address. One process, one bot: both are
process-wide settings, set before the client starts."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import aiohttp
import discord
import httpx
import yarl

from core.app import Earshot
from core.config import DEFAULT_DISCORD_API, Settings
from core.errors import EarshotError
from core.logs import RedactingFilter, guard_logs
from core.words import messages

from ..health import HealthServer, PlatformProbe, serve_health
from .commands import command_tree
from .convert import PLATFORM
from .handlers import DiscordHandlers

log = logging.getLogger(__name__)

DRAIN_SECONDS = 20.0
READY_TIMEOUT = 60.0


def intents() -> discord.Intents:
    """Servers and their channels, messages in servers and DMs, and their content (privileged: switched on in
    the Developer Portal; without it a server's messages arrive without attachments unless they mention earshot)."""
    wanted = discord.Intents.none()
    wanted.guilds = wanted.guild_messages = wanted.dm_messages = wanted.message_content = True
    return wanted


# discord.py logs interaction tokens at DEBUG (the Gateway's events, webhook URLs): never below INFO
TOKEN_LOGGERS = ("discord.gateway", "discord.http", "discord.webhook", "discord.client")


def quiet_tokens() -> None:
    for name in TOKEN_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(max(logging.INFO, logger.getEffectiveLevel()))


def point_at(api_url: str) -> None:
    """Every REST call discord.py makes goes to `api_url` (the base with its version)."""
    discord.http.Route.BASE = api_url.rstrip("/")


class EarshotClient(discord.AutoShardedClient):
    """discord.py's client with earshot's handlers, commands and start-up."""

    def __init__(self, handlers: DiscordHandlers, settings: Settings) -> None:
        # earshot never joins voice channels: no warnings about the voice libraries it doesn't need
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        super().__init__(intents=intents(), allowed_mentions=discord.AllowedMentions.none())
        self.handlers = handlers
        self.settings = settings
        self.tree = command_tree(self, handlers)
        handlers.attach(self)

    async def setup_hook(self) -> None:
        """After login, before the Gateway: the Gateway's address, the commands (bulk overwrite), then resume
        what a previous process left unanswered and post scheduled digests."""
        if self.settings.discord_api_url.rstrip("/") != DEFAULT_DISCORD_API:
            _, url, _ = await self.http.get_bot_gateway()
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
        commands = await self.tree.sync()
        log.info("registered %d application commands", len(commands))
        await self.handlers.earshot.start(PLATFORM, self.handlers.post)

    async def on_message(self, message: discord.Message) -> None:
        await self.handlers.on_message(message)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type is discord.InteractionType.component and not self.handlers.closing:
            await self.handlers.on_component(interaction)

    async def on_ready(self) -> None:
        log.info("earshot is on Discord as %s in %d server(s)", self.user, len(self.guilds))


def connection_probe(client: discord.Client) -> PlatformProbe:
    """For /healthz: connected to the Gateway, and the REST API answers."""
    async def probe() -> str | None:
        if client.is_closed() or not client.is_ready():
            return "not connected to the Gateway"
        try:
            await client.http.request(discord.http.Route("GET", "/users/@me"))
        except discord.HTTPException as exc:
            return f"the API does not answer ({exc.status})"
        return None
    return probe


class DiscordBot:
    """The bot inside a running loop: `await bot.start()` (connected and ready), later `await bot.stop()`."""

    def __init__(self, settings: Settings) -> None:
        if settings.discord_bot_token is None or not settings.discord_bot_token.get_secret_value():
            raise EarshotError(messages.DISCORD_NO_TOKEN)
        self.settings = settings
        self.client: EarshotClient | None = None
        self._gateway: asyncio.Task[None] | None = None
        self._health: HealthServer | None = None

    async def start(self) -> None:
        point_at(self.settings.discord_api_url)
        quiet_tokens()
        self.earshot = await Earshot.build(self.settings).open()    # the composition root (core.app)
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(60, connect=10))
        try:
            self.handlers = DiscordHandlers(self.earshot, self._http)
            self.client = EarshotClient(self.handlers, self.settings)
            await self._connect(self.client)
            self._health = await serve_health(self.earshot.history, connection_probe(self.client), name="discord",
                                              port=self.settings.metrics_port)
        except BaseException:
            await self._close()
            raise

    async def _connect(self, client: EarshotClient) -> None:
        assert self.settings.discord_bot_token is not None
        try:
            await client.login(self.settings.discord_bot_token.get_secret_value())
        except discord.LoginFailure:
            raise EarshotError(messages.DISCORD_BAD_TOKEN) from None
        except (aiohttp.ClientError, OSError, discord.HTTPException) as err:
            reason = RedactingFilter(self.settings.secrets()).redact(str(err) or type(err).__name__)
            raise EarshotError(messages.DISCORD_UNREACHABLE.format(url=self.settings.discord_api_url,
                                                                   reason=reason)) from None
        self._gateway = asyncio.create_task(client.connect(reconnect=True))
        ready = asyncio.create_task(client.wait_until_ready())
        done, _ = await asyncio.wait([self._gateway, ready], timeout=READY_TIMEOUT,
                                     return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._gateway in done:
            try:
                self._gateway.result()
            except discord.PrivilegedIntentsRequired:
                raise EarshotError(messages.DISCORD_NO_CONTENT_INTENT) from None
            raise EarshotError(messages.DISCORD_UNREACHABLE.format(url=self.settings.discord_api_url,
                                                                   reason="the Gateway closed"))
        if not done:
            log.warning("not ready after %.0f s; carrying on while discord.py keeps trying", READY_TIMEOUT)
        log.info("connected to Discord's Gateway")

    async def stop(self) -> None:
        """Jobs at work finish (or resume on the next start), then the Gateway closes."""
        if self._health is not None:
            await self._health.stop()
            self._health = None
        self.handlers.closing = True          # no new work; what is being handled stores its job first
        await self.earshot.jobs.stop(grace=DRAIN_SECONDS)
        await self._close()

    async def _close(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self._gateway is not None:
            try:
                await asyncio.wait_for(self._gateway, 10)
            except BaseException as err:   # what ended it is already logged by discord.py
                log.debug("the Gateway task ended with %s", type(err).__name__)
            self._gateway = None
        await self._http.aclose()
        await self.earshot.aclose()

    async def wait_closed(self) -> None:
        """Until the Gateway task ends by itself (discord.py gave up reconnecting)."""
        if self._gateway is not None:
            await asyncio.shield(self._gateway)


async def _serve(bot: DiscordBot) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(bot.start())
    asked = asyncio.create_task(stop.wait())
    await asyncio.wait([starting, asked], return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():             # stopped while connecting: let the start finish, then stop cleanly
        with contextlib.suppress(Exception):
            await starting
    starting.result()                   # a start that failed says why (EarshotError: one line)
    waiting = asyncio.create_task(stop.wait())
    closed = asyncio.create_task(bot.wait_closed())
    try:
        await asyncio.wait([waiting, closed], return_when=asyncio.FIRST_COMPLETED)
        log.info("shutting down")
    finally:
        waiting.cancel()
        closed.cancel()
        await bot.stop()


def run(settings: Settings) -> None:
    """`earshot discord`: connect to the Gateway and answer until SIGTERM/SIGINT."""
    bot = DiscordBot(settings)
    guard_logs(settings.secrets(), settings.log_format)   # interaction tokens travel in webhook URLs
    asyncio.run(_serve(bot))
