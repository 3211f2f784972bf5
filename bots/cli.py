"""The `earshot` command: ask Qwen-Audio about a file from the terminal, or run the chat bots.

Imports are paid per command: pydantic, httpx, SQLite and the model client load only when a command
runs, the chat libraries (python-telegram-bot, slack-bolt, aiohttp) only for `earshot telegram` and
`earshot slack`, so `earshot --help` and a one-shot transcript don't wait on them.
"""
from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from core import messages
from core.errors import EarshotError, InputError, ModelError, VoiceUnavailable
from core.models import Audio, ChatKey, Progress, Reply, Request, Task

if TYPE_CHECKING:
    from core.config import Settings

app = typer.Typer(
    name="earshot",
    help="Talk to Qwen-Audio about voice notes and audio files: transcripts, summaries, mood, sounds, answers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

FileArg = Annotated[str, typer.Argument(help="Audio or video file (ogg, opus, mp3, m4a, wav, flac, amr, 3gp, webm, "
                                             "mp4…), or an http(s) link to one.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the answer, per-part offsets and token usage as JSON.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log what earshot is doing on stderr.")]

# exit codes: what a script can tell apart
EXIT_INPUT, EXIT_SERVICE, EXIT_CONFIG = 1, 3, 4


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"earshot: {message}", err=True)
    raise typer.Exit(code)


def _settings(**overrides: Any) -> Settings:
    from pydantic import ValidationError

    from core.config import Settings
    try:
        settings = Settings()
    except ValidationError as exc:
        bad = ", ".join(str(e["loc"][0]) for e in exc.errors())
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
        from core.links import fetcher_for, find_link
        url = find_link(file) or file
        return _until_done(fetcher_for(settings).fetch(url))
    path = Path(file)
    if not path.is_file():
        _fail(messages.FILE_NOT_FOUND.format(path=path), EXIT_INPUT)
    size = path.stat().st_size
    if size > settings.max_file_bytes:  # refuse before reading a huge file into memory
        _fail(messages.TOO_BIG.format(size_mb=size / 2**20, limit_mb=settings.max_file_mb), EXIT_INPUT)
    return Audio(path.read_bytes(), filename=path.name)


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

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


async def _ask(settings: Settings, request: Request) -> Reply:
    from core.app import Earshot
    bar = _ProgressBar()
    try:
        async with Earshot.build(settings) as app:     # the composition root, as the bots use it
            _loaded()
            return await app.assistant.handle(request, progress=bar)
    finally:
        bar.close()


def _run(task: Task, file: str, text: str | None, as_json: bool, verbose: bool, fmt: str | None = None,
         speak: Path | None = None, voice: str | None = None, spoken: str | None = None) -> None:
    # one-shot commands stand alone: no chat history is sent with them
    from core.logs import setup_logging
    settings = _settings(history_turns=0)
    setup_logging(_log_level(settings, logging.INFO if verbose else logging.CRITICAL), settings.secrets(),
                  settings.log_format)
    chosen = _voice(settings, voice) if speak is not None else None
    request = Request(ChatKey("cli", "terminal"), task, audio=_read(file, settings), text=text, voice=chosen,
                      spoken=spoken)
    reply = _until_done(_ask(settings, request))
    if speak is not None:
        if reply.speech is None:
            _fail(messages.NO_SPEECH.format(model=settings.model), EXIT_SERVICE)
        try:
            speak.write_bytes(reply.speech.ogg)
        except OSError as exc:
            _fail(f"could not write {speak}: {exc.strerror or exc}", EXIT_INPUT)
    if fmt in ("srt", "vtt"):
        from core import subtitles
        typer.echo(subtitles.render(reply, fmt), nl=False)
    elif as_json or fmt == "json":
        import json

        from core import subtitles
        data = _as_json(reply, settings.model)
        if task is Task.TRANSCRIBE:
            data["cues"] = subtitles.cue_dicts(reply)
        typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        typer.echo(reply.text)


def _voice(settings: Settings, voice: str | None) -> str:
    """The voice for --speak, checked before any audio is read or sent: a model that can't speak is a
    configuration problem (exit 4); a voice it lacks, a bad option (exit 1)."""
    from core.service import choose_voice
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
    except EarshotError as exc:
        code = EXIT_CONFIG if exc.operator else EXIT_INPUT if isinstance(exc, InputError) else EXIT_SERVICE
        # the terminal user is the operator: say what to fix
        _fail(exc.operator_message if exc.operator or isinstance(exc, ModelError) else exc.user_message, code)


def _as_json(reply: Reply, model: str) -> dict[str, Any]:
    from dataclasses import asdict

    from core.timestamps import mmss
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
def transcribe(file: FileArg, as_json: JsonOpt = False, verbose: VerboseOpt = False,
               fmt: Annotated[str | None, typer.Option(
                   "--format", help="text (default), srt or vtt (subtitles with true offsets), or json (cues).",
                   show_default=False)] = None,
               spoken: Annotated[str | None, typer.Option(
                   "--spoken", help="The language spoken in the audio (de, en, zh…), for the recognizer "
                                    "(EARSHOT_ASR_MODEL); default: it detects the language.",
                   show_default=False)] = None) -> None:
    """Verbatim transcript. Long audio is heard in parts and stitched, each part marked with its mm:ss start."""
    from core.catalog import SPOKEN_LANGUAGES
    from core.subtitles import FORMATS
    if fmt is not None and fmt not in FORMATS:
        _fail(f"--format must be one of {', '.join(FORMATS)}", 2)
    if spoken is not None and spoken.strip().lower() not in SPOKEN_LANGUAGES:
        _fail(f"--spoken must be one of {', '.join(SPOKEN_LANGUAGES)}", 2)
    _run(Task.TRANSCRIBE, file, None, as_json, verbose, fmt, spoken=spoken.strip().lower() if spoken else None)


@app.command()
def summarize(file: FileArg, as_json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """A short summary of what is said."""
    _run(Task.SUMMARIZE, file, None, as_json, verbose)


@app.command()
def sentiment(file: FileArg, as_json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """The speaker's mood and tone, with the evidence heard for it."""
    _run(Task.SENTIMENT, file, None, as_json, verbose)


@app.command()
def events(file: FileArg, as_json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Sounds, music and speech in the audio, with mm:ss timestamps."""
    _run(Task.EVENTS, file, None, as_json, verbose)


@app.command()
def ask(file: FileArg,
        question: Annotated[str | None, typer.Argument(help="What to ask about the audio.", show_default=False)] = None,
        speak: Annotated[Path | None, typer.Option("--speak", help="Also write the answer spoken, as OGG/Opus, to "
                                                   "this file (models that speak: Qwen-Omni).",
                                                   show_default=False)] = None,
        voice: Annotated[str | None, typer.Option("--voice", help="Voice of the spoken answer (default "
                                                  "EARSHOT_VOICE, Cherry).", show_default=False)] = None,
        as_json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Answer a question about the audio (citing mm:ss); with no question, reply to it as a voice chat."""
    _run(Task.ASK if question else Task.CHAT, file, question, as_json, verbose, speak=speak, voice=voice)


@app.command()
def translate(file: FileArg,
              to: Annotated[str, typer.Option("--to", help="Target language, e.g. English, 中文, Deutsch.",
                                              show_default=False)],
              as_json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Translate what is said into another language."""
    _run(Task.TRANSLATE, file, to, as_json, verbose)


@app.command()
def telegram(
    webhook_url: Annotated[str | None, typer.Option(
        help="Public HTTPS URL: run in webhook mode instead of long polling.")] = None,
    port: Annotated[int, typer.Option(help="Port the webhook server listens on.")] = 8443,
    listen: Annotated[str, typer.Option(help="Address the webhook server binds.")] = "0.0.0.0",
) -> None:
    """Run the Telegram bot (TELEGRAM_BOT_TOKEN). Long polling unless --webhook-url is given."""
    settings = _settings()
    if settings.telegram_bot_token is None:
        _fail("set TELEGRAM_BOT_TOKEN to run the Telegram bot", EXIT_CONFIG)
    from core.logs import setup_logging
    setup_logging(_log_level(settings, logging.INFO), settings.secrets(), settings.log_format)
    from bots.telegram import run
    _serve(lambda: run(settings, webhook_url=webhook_url, port=port, listen=listen))


@app.command()
def slack(port: Annotated[int, typer.Option(
        help="HTTP port for POST /slack/events (without SLACK_APP_TOKEN).")] = 3000) -> None:
    """Run the Slack app: Socket Mode when SLACK_APP_TOKEN is set, else HTTP on --port at /slack/events."""
    settings = _settings()
    if settings.slack_bot_token is None:
        _fail("set SLACK_BOT_TOKEN to run the Slack app", EXIT_CONFIG)
    if settings.slack_app_token is None and settings.slack_signing_secret is None:
        _fail("set SLACK_SIGNING_SECRET (HTTP mode) or SLACK_APP_TOKEN (Socket Mode)", EXIT_CONFIG)
    from core.logs import setup_logging
    setup_logging(_log_level(settings, logging.INFO), settings.secrets(), settings.log_format)
    from bots.slack import run
    _serve(lambda: run(settings, port=port))


@app.command()
def doctor(
    webhook_url: Annotated[str | None, typer.Option(
        help="The URL `earshot telegram --webhook-url` runs with: check that webhook instead of expecting "
             "none.")] = None,
) -> None:
    """Check ffmpeg, the database and every configured credential against its service; exit 0 only when all pass."""
    settings = _settings()
    from core.logs import setup_logging
    setup_logging(_log_level(settings, logging.CRITICAL), settings.secrets(), settings.log_format)
    from bots.doctor import doctor as check_all
    _loaded()
    if not check_all(settings, webhook_url=webhook_url, echo=typer.echo):
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
    app()


def _loaded() -> None:
    """Everything the command needs is loaded: garbage collection, which bots.launch keeps off while earshot
    loads, runs again from here on, over what is made from now on."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()
