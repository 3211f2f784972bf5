"""The Discord bot: DMs, mentions and replies in servers, `/earshot`, message commands and buttons, over the
Gateway (discord.py)."""
from .app import DiscordBot, run

__all__ = ["DiscordBot", "run"]
