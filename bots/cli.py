"""The `earshot` command: ask Qwen-Audio about a file from the terminal, or run the chat bots.

Imports are paid per command: pydantic, httpx, SQLite and the model client load only when a command
runs, the chat libraries (python-telegram-bot, slack-bolt, discord.py, aiohttp) only for the bots' commands
(`earshot telegram`, `slack`, `whatsapp`, `discord`), so `earshot --help` and a one-shot transcript don't wait on them.
"""
from __future__ import annotations

import gc
import logging
import re
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn
from urllib.parse import urlsplit

import typer

from core.errors import AnswerNotSaved, EarshotError, InputError, ModelError, VoiceUnavailable
from core.values import Audio, ChatKey, Progress, Reply, Request, Task
from core.words import messages

if TYPE_CHECKING:
    from core.config import Settings

app = typer.Typer(
    name="earshot",
    help="Talk to Qwen-Audio about voice notes and audio files: transcripts, summaries, mood, sounds, answers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

FileArg = Annotated[str, typer.Argument(help="Audio or video file (ogg, opus, mp3, m4a, wav, flac, amr, 3gp, webm, "
                                             "mp4…), or an http(s) link to one.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the answer, per-part offsets and token usage as JSON.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log what earshot is doing on stderr.")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Ask the model even when the same audio was answered "
                                          "before (EARSHOT_CACHE_DAYS), and keep nothing.")]

# exit codes: what a script can tell apart
EXIT_INPUT, EXIT_SERVICE, EXIT_CONFIG = 1, 3, 4


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"earshot: {message}", err=True)
    raise typer.Exit(code)


def _settings(**overrides: Any) -> Settings:
    from pydantic import ValidationError

    from core.config import Settings, invalid_settings
    try:
        settings = Settings()
    except ValidationError as exc:
        bad = "; ".join(f"{v}: {what}" for v, _, what in invalid_settings(exc.errors()))
        _fail(f"invalid configuration in the environment: {bad}", EXIT_CONFIG)
    return settings.model_copy(update=overrides) if overrides else settings


def _log_level(settings: Settings, default: int) -> int:
    """EARSHOT_LOG_LEVEL when set (a name like DEBUG, or a number), else the command's default."""
    name = (settings.log_level or "").strip().upper()
    if not name:
        return default
    level = int(name) if name.isdigit() else logging.getLevelName(name)
    if not isinstance(level, int):
        _fail(f"EARSHOT_LOG_LEVEL={settings.log_level!r} is not a log level (try DEBUG, INFO or WARNING)", EXIT_CONFIG)
    return level


def _read(file: str, settings: Settings) -> Audio:
    if file.lower().startswith(("http://", "https://")):
        from core.audio.links import fetcher_for, find_link
        url = find_link(file) or file
        return _until_done(fetcher_for(settings).fetch(url))
    if scheme := re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", file):   # ftp://, file://…: not a path either
        _fail(messages.LINK_SCHEME_CLI.format(scheme=scheme.group(1).lower()), EXIT_INPUT)
    path = Path(file)
    if path.is_dir():
        _fail(messages.FILE_IS_DIRECTORY.format(path=path), EXIT_INPUT)
    if not path.is_file():
        _fail(messages.FILE_NOT_FOUND.format(path=path), EXIT_INPUT)
    size = path.stat().st_size
    if size > settings.max_file_bytes:  # refuse before reading a huge file into memory
        _fail(messages.TERMINAL[messages.TOO_BIG].format(size_mb=size / 2**20, limit_mb=settings.max_file_mb),
              EXIT_INPUT)
    return Audio(path.read_bytes(), filename=path.name)


def _check_writable(path: Path) -> None:
    """--speak's file can be written: checked before any audio is read or sent, so a typo costs nothing."""
    import os
    reason = None
    if path.is_dir():
        reason = "it is a directory"
    elif path.exists():
        reason = None if os.access(path, os.W_OK) else "the file is not writable"
    elif not (parent := path.parent if str(path.parent) else Path(".")).is_dir():
        reason = f"there is no directory {parent}"
    elif not os.access(parent, os.W_OK | os.X_OK):
        reason = f"the directory {parent} is not writable"
    if reason:
        _fail(messages.SPEAK_UNWRITABLE.format(path=path, reason=reason), EXIT_INPUT)


class _ProgressBar:
    """A bar on stderr for audio long enough to need several parts, only when stderr is a terminal."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._task: Any = None

    async def __call__(self, p: Progress) -> None:
        if p.total < 2 or not sys.stderr.isatty():
            return
        if self._bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
            from rich.progress import Progress as Bar
            self._bar = Bar(TextColumn("Listening"), BarColumn(), MofNCompleteColumn(), TextColumn("parts"),
                            console=Console(stderr=True), transient=True)
            self._bar.start()
            self._task = self._bar.add_task("listening", total=p.total)
        self._bar.update(self._task, completed=p.done)

    @property
    def quiet(self) -> bool:
        """No bar shown yet."""
        return self._bar is None

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


WAITING_AFTER = 8.0    # seconds without an answer before a terminal is told what earshot is waiting for


async def _ask(settings: Settings, request: Request) -> Reply:
    import asyncio

    from core.app import Earshot
    from core.errors import ModelUnavailable
    url, setting = settings.model_endpoint
    host = urlsplit(url).hostname or url
    bar = _ProgressBar()

    async def waiting() -> None:      # a host that accepts and never answers: say who we wait for
        await asyncio.sleep(WAITING_AFTER)
        if bar.quiet and sys.stderr.isatty():
            typer.echo(f"earshot: waiting for {host}…", err=True)

    notice = asyncio.create_task(waiting())
    try:
        async with Earshot.build(settings) as app:     # the composition root, as the bots use it
            _loaded()
            return await app.assistant.handle(request, progress=bar)
    except ModelUnavailable as exc:
        if exc.unreachable:
            _fail(f"can't reach {host} (its name doesn't resolve, or it refused the connection): check the "
                  f"network, or {setting}, which points earshot there", EXIT_SERVICE)
        raise
    finally:
        notice.cancel()
        bar.close()


def _run(task: Task, file: str, text: str | None, as_json: bool, verbose: bool, fmt: str | None = None,
         speak: Path | None = None, voice: str | None = None, no_cache: bool = False,
         spoken: str | None = None) -> None:
    # one-shot commands stand alone: no chat history is sent with them; --no-cache: no answer cache either
    from core.logs import setup_logging
    settings = _settings(history_turns=0, **({"cache_days": 0.0} if no_cache else {}))
    setup_logging(_log_level(settings, logging.INFO if verbose else logging.CRITICAL), settings.secrets(),
                  settings.log_format)
    chosen = _voice(settings, voice) if speak is not None else None
    if speak is not None:
        _check_writable(speak)
    request = Request(ChatKey("cli", "terminal"), task, audio=_read(file, settings), text=text, voice=chosen,
                      spoken=spoken)
    unsaved: AnswerNotSaved | None = None
    try:
        reply = _until_done(_ask(settings, request))
    except AnswerNotSaved as exc:      # the database failed after the answer came: print it, then say so
        unsaved = exc
        assert isinstance(exc.reply, Reply)
        reply = exc.reply
    _show(reply, task, as_json, fmt, speak, settings)
    if unsaved is not None:
        _fail(unsaved.operator_message, EXIT_CONFIG)


def _show(reply: Reply, task: Task, as_json: bool, fmt: str | None, speak: Path | None, settings: Settings) -> None:
    if speak is not None:
        if reply.speech is None:
            _fail(messages.TERMINAL[messages.NO_SPEECH].format(model=settings.model), EXIT_SERVICE)
        try:
            speak.write_bytes(reply.speech.ogg)
        except OSError as exc:
            _fail(f"could not write {speak}: {exc.strerror or exc}", EXIT_INPUT)
    if fmt in ("srt", "vtt"):
        from core.audio import subtitles
        typer.echo(subtitles.render(reply, fmt), nl=False)
    elif as_json or fmt == "json":
        import json

        from core.audio import subtitles
        data = _as_json(reply, settings.model)
        if task is Task.TRANSCRIBE:
            data["cues"] = subtitles.cue_dicts(reply)
        typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        typer.echo(reply.text)


def _voice(settings: Settings, voice: str | None) -> str:
    """The voice for --speak, checked before any audio is read or sent: a model that can't speak is a
    configuration problem (exit 4); a voice it lacks, a bad option (exit 1)."""
    from core.flow.service import can_speak, choose_voice, speaking_models
    if not can_speak(settings):
        _fail(messages.CANNOT_SPEAK_CLI.format(model=settings.model, models=", ".join(speaking_models())), EXIT_CONFIG)
    try:
        return choose_voice(settings, voice)
    except VoiceUnavailable as exc:
        _fail(exc.user_message, EXIT_INPUT if settings.model_info.speaks and voice else EXIT_CONFIG)


def _until_done(work: Coroutine[Any, Any, Any]) -> Any:
    import asyncio
    try:
        return asyncio.run(work)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except AnswerNotSaved:
        raise                           # the caller still has an answer to give
    except EarshotError as exc:
        code = EXIT_CONFIG if exc.operator else EXIT_INPUT if isinstance(exc, InputError) else EXIT_SERVICE
        # the terminal user is the operator: say what to fix, in a terminal's words where a chat's would mislead
        if exc.operator or isinstance(exc, ModelError):
            _fail(exc.operator_message, code)
        terminal = messages.TERMINAL.get(exc.message)
        _fail(messages.text(terminal, None, **exc.fmt) if terminal else exc.user_message, code)


def _as_json(reply: Reply, model: str) -> dict[str, Any]:
    from dataclasses import asdict

    from core.audio.timestamps import mmss
    return {
        "task": reply.task.value,
        "model": model,
        "text": reply.text,
        "duration": reply.duration,
        "parts": [{"start": p.start, "end": p.end, "offset": mmss(p.start), "text": p.text} for p in reply.parts],
        "usage": {**{k: v for k, v in asdict(reply.usage).items() if k != "estimated"}, "total": reply.usage.total,
                  # figures earshot worked out itself (vLLM reports no audio tokens) rather than the service's
                  "estimated": ["audio_tokens", "input_tokens"] if reply.usage.estimated else []},
        "request_ids": list(reply.request_ids),
        "cached": reply.cached,      # answered from the answer cache: no model call, no tokens
        "language": reply.language,  # the language the recognizer heard (EARSHOT_ASR_MODEL), else null
        "emotion": reply.emotion,
    }


@app.command()
def transcribe(file: FileArg, as_json: JsonOpt = False, verbose: VerboseOpt = False, no_cache: NoCacheOpt = False,
               fmt: Annotated[str | None, typer.Option(
                   "--format", metavar="[text|srt|vtt|json]", show_default=False,
                   help="text (default), srt or vtt (subtitles with true offsets), or json (cues).")] = None,
               spoken: Annotated[str | None, typer.Option(
                   "--spoken", metavar="LANG", help="The language spoken in the audio (de, en, zh…), for the "
                   "recognizer (EARSHOT_ASR_MODEL); default: it detects the language.", show_default=False)] = None
               ) -> None:
    """Verbatim transcript. Long audio is heard in parts and stitched, each part marked with its mm:ss start."""
    from core.audio.subtitles import FORMATS
    from core.model.catalog import SPOKEN_LANGUAGES
    if fmt is not None and fmt not in FORMATS:
        _fail(f"--format must be one of {', '.join(FORMATS)}", 2)
    if as_json and fmt not in (None, "json"):
        _fail(f"--json prints JSON; it can't be combined with --format {fmt} (use one or the other)", 2)
    if spoken is not None and spoken.strip().lower() not in SPOKEN_LANGUAGES:
        _fail(f"--spoken must be one of {', '.join(SPOKEN_LANGUAGES)}", 2)
    _run(Task.TRANSCRIBE, file, None, as_json, verbose, fmt, no_cache=no_cache,
         spoken=spoken.strip().lower() if spoken else None)


@app.command()
def summarize(file: FileArg, as_json: JsonOpt = False, verbose: VerboseOpt = False,
              no_cache: NoCacheOpt = False) -> None:
    """A short summary of what is said."""
    _run(Task.SUMMARIZE, file, None, as_json, verbose, no_cache=no_cache)


@app.command()
def sentiment(file: FileArg, as_json: JsonOpt = False, verbose: VerboseOpt = False,
              no_cache: NoCacheOpt = False) -> None:
    """The speaker's mood and tone, with the evidence heard for it."""
    _run(Task.SENTIMENT, file, None, as_json, verbose, no_cache=no_cache)


@app.command()
def events(file: FileArg, as_json: JsonOpt = False, verbose: VerboseOpt = False,
           no_cache: NoCacheOpt = False) -> None:
    """Sounds, music and speech in the audio, with mm:ss timestamps."""
    _run(Task.EVENTS, file, None, as_json, verbose, no_cache=no_cache)


@app.command()
def ask(file: FileArg,
        question: Annotated[str | None, typer.Argument(help="What to ask about the audio.", show_default=False)] = None,
        speak: Annotated[Path | None, typer.Option("--speak", metavar="OUT.ogg",
                                                   help="Also write the answer spoken, as OGG/Opus, to "
                                                   "this file (models that speak: Qwen-Omni).",
                                                   show_default=False)] = None,
        voice: Annotated[str | None, typer.Option("--voice", metavar="NAME", help="Voice of the spoken answer (default "
                                                  "EARSHOT_VOICE, Cherry).", show_default=False)] = None,
        as_json: JsonOpt = False, verbose: VerboseOpt = False, no_cache: NoCacheOpt = False) -> None:
    """Answer a question about the audio (citing mm:ss); with no question, reply to it as a voice chat."""
    _run(Task.ASK if question else Task.CHAT, file, question, as_json, verbose, speak=speak, voice=voice,
         no_cache=no_cache)


@app.command()
def translate(file: FileArg,
              to: Annotated[str, typer.Option("--to", metavar="LANG",
                                              help="Target language, e.g. English, 中文, Deutsch.",
                                              show_default=False)],
              as_json: JsonOpt = False, verbose: VerboseOpt = False, no_cache: NoCacheOpt = False) -> None:
    """Translate what is said into another language."""
    _run(Task.TRANSLATE, file, to, as_json, verbose, no_cache=no_cache)


@app.command()
def telegram(
    webhook_url: Annotated[str | None, typer.Option(
        metavar="URL", help="Public HTTPS URL: run in webhook mode instead of long polling.")] = None,
    port: Annotated[int, typer.Option(help="Port the webhook server listens on.")] = 8443,
    listen: Annotated[str, typer.Option(metavar="ADDRESS", help="Address the webhook server binds.")] = "0.0.0.0",
) -> None:
    """Run the Telegram bot (TELEGRAM_BOT_TOKEN). Long polling unless --webhook-url is given."""
    settings = _settings()
    if settings.telegram_bot_token is None:
        _fail("set TELEGRAM_BOT_TOKEN to run the Telegram bot", EXIT_CONFIG)
    from bots.telegram import run
    _serve_bot(settings, lambda: run(settings, webhook_url=webhook_url, port=port, listen=listen))


@app.command()
def slack(port: Annotated[int, typer.Option(
        help="HTTP port for POST /slack/events (without SLACK_APP_TOKEN).")] = 3000) -> None:
    """Run the Slack app: Socket Mode when SLACK_APP_TOKEN is set, else HTTP on --port at /slack/events."""
    settings = _settings()
    if settings.slack_bot_token is None:
        _fail("set SLACK_BOT_TOKEN to run the Slack app", EXIT_CONFIG)
    if settings.slack_app_token is None and settings.slack_signing_secret is None:
        _fail("set SLACK_SIGNING_SECRET (HTTP mode) or SLACK_APP_TOKEN (Socket Mode)", EXIT_CONFIG)
    from bots.slack import run
    _serve_bot(settings, lambda: run(settings, port=port))


@app.command()
def discord() -> None:
    """Run the Discord bot (DISCORD_BOT_TOKEN) on the Gateway."""
    settings = _settings()
    if settings.discord_bot_token is None:
        _fail("set DISCORD_BOT_TOKEN to run the Discord bot", EXIT_CONFIG)
    from bots.discord import run
    _serve_bot(settings, lambda: run(settings))


@app.command()
def whatsapp(port: Annotated[int, typer.Option(
        help="HTTP port for the webhook at /whatsapp/webhook (GET verification, POST deliveries).")] = 8080) -> None:
    """Run the WhatsApp Cloud API webhook on --port at /whatsapp/webhook."""
    settings = _settings()
    from core.logs import setup_logging
    setup_logging(_log_level(settings, logging.INFO), settings.secrets(), settings.log_format)
    from bots.whatsapp import run
    _serve(lambda: run(settings, port=port))


@app.command()
def doctor(
    webhook_url: Annotated[str | None, typer.Option(
        metavar="URL", help="The URL `earshot telegram --webhook-url` runs with: check that webhook instead of "
                            "expecting none.")] = None,
) -> None:
    """Check the settings, ffmpeg, the database and every configured credential against its service (the model's
    key with a real one-token request); exit 0 only when all pass."""
    from bots.doctor import doctor as check_all
    from bots.doctor import read_settings
    from core.logs import setup_logging
    settings, invalid = read_settings()     # an invalid variable is a ✗ line; the rest is checked all the same
    setup_logging(_log_level(settings, logging.CRITICAL), settings.secrets(), settings.log_format)
    _loaded()
    if not check_all(settings, webhook_url=webhook_url, echo=typer.echo, first=invalid):
        raise typer.Exit(EXIT_CONFIG)


def _print_version(wanted: bool) -> None:
    if wanted:
        from importlib.metadata import version
        typer.echo(f"earshot {version('earshot')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print earshot's version and exit.")] = False,
) -> None:
    pass


def _serve_bot(settings: Settings, run: Callable[[], None]) -> None:
    """A long-running bot: logging at INFO (secrets masked), then `run` until it is stopped."""
    from core.logs import setup_logging
    setup_logging(_log_level(settings, logging.INFO), settings.secrets(), settings.log_format)
    _serve(run)


def _serve(run: Callable[[], None]) -> None:
    """Run a bot until it is stopped; a refused token or a port in use is one line, not a traceback."""
    _loaded()
    try:
        run()
    except KeyboardInterrupt:
        pass
    except EarshotError as exc:
        _fail(exc.operator_message, EXIT_CONFIG)
    except OSError as exc:
        _fail(f"could not start: {exc.strerror or exc}", EXIT_CONFIG)


def main() -> None:
    """Run the command line; a usage mistake is one line in earshot's own error style, exit 2."""
    import click
    try:
        code = app(standalone_mode=False)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "earshot"
        if isinstance(exc, click.exceptions.NoArgsIsHelpError):   # `earshot` alone: the help, printed already
            sys.exit(0)
        _say_usage_error(f"{exc.format_message()} (see {where} --help)", exc.exit_code)
    except click.ClickException as exc:
        _say_usage_error(exc.format_message(), exc.exit_code)
    except click.Abort:
        _say_usage_error("interrupted", 130)
    sys.exit(code if isinstance(code, int) else 0)


def _say_usage_error(message: str, code: int) -> NoReturn:
    typer.echo(f"earshot: {message}", err=True)
    sys.exit(code)


def _loaded() -> None:
    """Everything the command needs is loaded: garbage collection, which bots.launch keeps off while earshot
    loads, runs again from here on, over what is made from now on."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()
