"""The application commands earshot registers (one bulk overwrite at start, discord.py's CommandTree.sync):
`/earshot` with its subcommands, and the message commands "Transcribe with earshot" / "Summarize with earshot".
Each callback only hands its options to the handlers (.handlers)."""
from __future__ import annotations

from typing import Literal

import discord
from discord import app_commands

from core.values import Task

from .handlers import DiscordHandlers

MESSAGE_COMMANDS = {"Transcribe with earshot": Task.TRANSCRIBE, "Summarize with earshot": Task.SUMMARIZE}
AUDIO = "An audio or video file (else the latest audio in this channel)"


def command_tree(client: discord.Client, h: DiscordHandlers) -> app_commands.CommandTree:
    tree: app_commands.CommandTree = app_commands.CommandTree(client)
    group = app_commands.Group(name="earshot", description="Voice messages and audio, heard and answered")

    @group.command(name="help", description="What earshot does and how to ask it")
    async def help_(interaction: discord.Interaction) -> None:
        await h.slash(interaction, "help")

    @group.command(name="transcribe", description="Word-for-word transcript of the audio")
    @app_commands.describe(audio=AUDIO)
    async def transcribe(interaction: discord.Interaction, audio: discord.Attachment | None = None) -> None:
        await h.slash(interaction, "transcribe", "", audio)

    @group.command(name="summarize", description="Summary of the audio")
    @app_commands.describe(audio=AUDIO)
    async def summarize(interaction: discord.Interaction, audio: discord.Attachment | None = None) -> None:
        await h.slash(interaction, "summarize", "", audio)

    @group.command(name="ask", description="Ask a question about the audio")
    @app_commands.describe(question="What you want to know", audio=AUDIO)
    async def ask(interaction: discord.Interaction, question: str, audio: discord.Attachment | None = None) -> None:
        await h.slash(interaction, "ask", question, audio)

    @group.command(name="translate", description="What's said, in another language")
    @app_commands.describe(language="The language to translate into", audio=AUDIO)
    async def translate(interaction: discord.Interaction, language: str,
                        audio: discord.Attachment | None = None) -> None:
        await h.slash(interaction, "translate", language, audio)

    @group.command(name="usage", description="Tokens used today, and what's left")
    async def usage(interaction: discord.Interaction) -> None:
        await h.slash(interaction, "usage")

    @group.command(name="lang", description="The language earshot speaks here")
    @app_commands.describe(code="A language code (en, de, es, fr, it, ja, zh-Hans, zh-Hant) or auto")
    async def lang(interaction: discord.Interaction, code: str | None = None) -> None:
        await h.slash(interaction, "lang", code or "")

    @group.command(name="voice", description="Answers spoken back as voice messages, or text only")
    @app_commands.describe(state="on or off", name="The voice (models that speak)")
    async def voice(interaction: discord.Interaction, state: Literal["on", "off"], name: str | None = None) -> None:
        await h.slash(interaction, "voice", f"{state} {name or ''}".strip())

    @group.command(name="spoken", description="The language spoken in the audio, for the recognizer")
    @app_commands.describe(language="A language code, or auto")
    async def spoken(interaction: discord.Interaction, language: str | None = None) -> None:
        await h.slash(interaction, "spoken", language or "")

    @group.command(name="digest", description="Sum up this channel's voice messages")
    @app_commands.describe(what="on, off, 2h, 24h, 7d, or daily 09:00 Europe/Berlin (empty: since the last one)")
    async def digest(interaction: discord.Interaction, what: str | None = None) -> None:
        await h.slash(interaction, "digest", what or "")

    @group.command(name="auto", description="Transcribe every voice message in this channel")
    @app_commands.describe(state="on or off (people who can manage the server); empty: as it stands")
    async def auto(interaction: discord.Interaction, state: Literal["on", "off"] | None = None) -> None:
        await h.slash(interaction, "auto", state or "")

    tree.add_command(group)
    for name, task in MESSAGE_COMMANDS.items():
        tree.add_command(app_commands.ContextMenu(name=name, callback=_on_message(h, task)))

    @tree.error
    async def on_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        await h.on_error(interaction, error)

    return tree


def _on_message(h: DiscordHandlers, task: Task):
    async def callback(interaction: discord.Interaction, message: discord.Message) -> None:
        await h.message_command(interaction, message, task)
    return callback
