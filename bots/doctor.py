"""`earshot doctor`: check ffmpeg, the database and every configured credential against its service.

One line per check, ✓ or ✗; a ✗ line says what to change (the variable, the setting, the webhook to
delete). Telegram, Slack, WhatsApp and Discord are asked over plain HTTP (httpx), the way the bots' libraries
ask, so the command stays quick and needs neither library. Secrets are never printed: every line is masked with the
same filter as the logs before it is written.
"""
from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from core.audio import ffmpeg
from core.config import Settings
from core.errors import EarshotError
from core.logs import RedactingFilter

TIMEOUT = 15.0
# the bot scopes the Slack app uses, and no others: deploy/slack-manifest.yml asks for exactly these, and doctor
# checks exactly these (tests/test_deploy.py derives them from the Web API methods and events the code uses)
SLACK_SCOPES = ("app_mentions:read", "channels:history", "chat:write", "commands", "files:read", "files:write",
                "groups:history", "im:history", "mpim:history", "reactions:read", "users:read")
# ffmpeg encoders earshot uses: MP3 for what the model hears, Opus for spoken answers sent as voice notes
ENCODERS = {"mp3": "libmp3lame", "opus": "libopus"}


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool | None           # None: not configured, skipped
    detail: str               # what was found, or (✗) what to change

    def line(self) -> str:
        mark = "–" if self.ok is None else "✓" if self.ok else "✗"
        return f"{mark} {self.name}: {self.detail}"


def _where(url: str) -> str:
    """A URL's scheme and host only: paths and queries can carry secrets."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"


# --- ffmpeg ----------------------------------------------------------------------------------------
def check_ffmpeg(settings: Settings) -> Check:
    ffmpeg.choose(settings.ffmpeg)
    try:
        exe = ffmpeg.executable()
        version = subprocess.run([exe, "-hide_banner", "-version"], capture_output=True, text=True,
                                 timeout=TIMEOUT, env=ffmpeg.child_env())
        encoders = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True,
                                  timeout=TIMEOUT, env=ffmpeg.child_env())
    except (OSError, subprocess.SubprocessError) as exc:
        return Check("ffmpeg", False, f"cannot run {settings.ffmpeg!r} ({type(exc).__name__}): set EARSHOT_FFMPEG "
                                      "to system (install ffmpeg), bundled, or the path of an ffmpeg")
    name = " ".join(version.stdout.split()[:3]) or "ffmpeg"
    missing = [kind for kind, encoder in ENCODERS.items() if encoder not in encoders.stdout]
    if version.returncode != 0 or missing:
        return Check("ffmpeg", False, f"{exe} ({name}) lacks the {' and '.join(missing) or 'expected'} encoder: "
                                      "install a full ffmpeg build, or set EARSHOT_FFMPEG=bundled")
    return Check("ffmpeg", True, f"{exe} ({name}); encodes {', '.join(ENCODERS)}")


# --- the database ----------------------------------------------------------------------------------
async def check_database(settings: Settings) -> Check:
    from core.store.history import HistoryStore
    from core.store.schema import migrations

    where = settings.db_path
    store = HistoryStore(where)
    if store.engine == "postgresql":
        return await _check_postgres(store)

    def probe(db: object) -> int:
        conn = db.conn  # type: ignore[attr-defined]
        conn.execute("BEGIN IMMEDIATE")      # takes the write lock: fails on a read-only file or directory
        try:
            conn.execute("CREATE TABLE earshot_doctor_probe (x)")
        finally:
            conn.execute("ROLLBACK")
        return len(migrations.pending(db))  # type: ignore[arg-type]

    try:
        await store.open()                   # creates the file and applies migrations, as the bots do
        pending = await store.read(probe)
    except Exception as exc:
        return Check("database", False, f"{where} is not usable ({type(exc).__name__}: {str(exc)[:150]}): "
                                        "set EARSHOT_DB to a file in a writable directory")
    finally:
        await store.close()
    if pending:
        return Check("database", False, f"{where}: {pending} migration(s) not applied: run a bot once, or check "
                                        "that this earshot is not older than the database")
    return Check("database", True, f"{where} (writable, schema up to date)")


async def _check_postgres(store: object) -> Check:
    """Reachable, writable, and migrated (opening applies what is missing, as the bots do)."""
    from core.store.history import HistoryStore
    assert isinstance(store, HistoryStore)
    where = store.where                      # without the password
    try:
        await store.open()
        async with store.transaction() as tx:  # a write that is rolled back: fails on a read-only role
            await tx.execute("CREATE TEMPORARY TABLE earshot_doctor_probe (x INTEGER) ON COMMIT DROP")
        pending = await store.pending_migrations()
    except Exception as exc:
        reason = str(exc).splitlines()[0][:150] if str(exc) else type(exc).__name__
        return Check("database", False, f"{where} is not usable ({reason}): check EARSHOT_DB, that the server "
                                        "is running and that the role may create tables")
    finally:
        await store.close()
    if pending:
        return Check("database", False, f"{where}: {len(pending)} migration(s) not applied: run a bot once, or "
                                        "check that this earshot is not older than the database")
    return Check("database", True, f"{where} (PostgreSQL, writable, schema up to date)")


# --- the model -------------------------------------------------------------------------------------
async def check_model(settings: Settings) -> Check:
    from core.model.catalog import Backend
    from core.model.dashscope import text_item
    from core.model.model_client import has_key, make_client

    name = f"model {settings.model}"
    # the key is checked with a real request (a one-token answer), not only its shape
    if not has_key(settings):
        return Check(name, False, "DASHSCOPE_API_KEY is not set: create a key in the Model Studio console "
                                  "(Beijing or Singapore, matching DASHSCOPE_REGION)")
    backend = settings.model_info.backend
    base = {Backend.NATIVE: settings.native_base_url, Backend.COMPAT: settings.compat_base_url}.get(
        backend, settings.openai_base_url or "")
    client = make_client(settings.model_copy(update={"request_timeout": TIMEOUT, "retry_budget": 5}))
    client.max_attempts = 2        # a health check, not a request worth waiting a minute for
    try:
        answer = await client.generate([{"role": "user", "content": [text_item("Say OK.")]}], max_tokens=1)
    except EarshotError as exc:
        return Check(name, False, f"{exc.operator_message} (asked {_where(base)})")
    finally:
        await client.aclose()
    return Check(name, True, f"answers at {_where(base)}: the key works (checked with a real one-token request, "
                             f"{answer.usage.total} tokens)")


def check_catalog(settings: Settings) -> Iterator[Check]:
    """What each configured model resolves to (core.model.catalog): the chat models, the recognizer, the voice.
    A model resolved by a guess fails: declare it in EARSHOT_MODEL_SPECS."""
    from core.model.catalog import Job
    named = [(m, "chat model", Job.CHAT) for m in settings.models]
    if settings.recognizer:
        named.append((settings.recognizer, "recognizer", Job.ASR))
    if settings.speaker:
        named.append((settings.speaker, "voice", Job.TTS))
    for name, role, job in named:
        info = settings.model_info if name == settings.model else settings.info_of(name)
        if info.job is not job:
            yield Check(f"{role} {name}", False, f"resolves to a model that {info.describe()}: name a "
                                                 f"{job.value} model, or declare it in EARSHOT_MODEL_SPECS")
        elif info.resolved == "guess":
            yield Check(f"{role} {name}", False, f"unknown to earshot, assumed: {info.describe()}; declare its "
                                                 "backend, seconds and voices in EARSHOT_MODEL_SPECS")
        else:
            yield Check(f"{role} {name}", True, info.describe())


# --- Telegram --------------------------------------------------------------------------------------
def check_telegram(settings: Settings, http: httpx.Client, webhook_url: str | None) -> Iterator[Check]:
    if settings.telegram_bot_token is None or not settings.telegram_bot_token.get_secret_value():
        yield Check("Telegram", None, "TELEGRAM_BOT_TOKEN not set, skipped")
        return
    root = settings.telegram_api_base_url.rstrip("/")
    api = f"{root}/bot{settings.telegram_bot_token.get_secret_value()}"

    def call(method: str) -> tuple[dict | None, str | None]:
        try:
            resp = http.post(f"{api}/{method}")
            body = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            return None, f"no answer from {_where(root)} ({type(exc).__name__}): check TELEGRAM_API_BASE_URL " \
                         "and the network"
        if resp.status_code in (401, 404):
            return None, f"TELEGRAM_BOT_TOKEN was refused ({resp.status_code} {body.get('description', '')}): " \
                         "copy the token again from @BotFather (/token)"
        if not body.get("ok"):
            return None, f"{method} failed ({resp.status_code} {body.get('description', '')})"
        return body.get("result") or {}, None

    me, problem = call("getMe")
    if me is None:
        yield Check("Telegram getMe", False, problem or "")
        return
    yield Check("Telegram getMe", True, f"signed in as @{me.get('username')}")
    info, problem = call("getWebhookInfo")
    if info is None:
        yield Check("Telegram webhook", False, problem or "")
        return
    current = str(info.get("url") or "")
    if webhook_url is None:
        if current:
            yield Check("Telegram webhook", False,
                        f"a webhook is set (to {_where(current)}/…) while `earshot telegram` polls: Telegram "
                        "delivers nothing to a poller then. Delete it (curl -X POST "
                        f"{root}/bot$TELEGRAM_BOT_TOKEN/deleteWebhook), or run `earshot telegram --webhook-url`")
        else:
            yield Check("Telegram webhook", True, "none set: long polling will receive updates")
        return
    if current != webhook_url:
        yield Check("Telegram webhook", False,
                    f"set to {_where(current) + '/…' if current else 'nothing'}, not to the --webhook-url given: "
                    "start `earshot telegram --webhook-url` with that URL and it registers it")
    elif info.get("last_error_message"):
        yield Check("Telegram webhook", False, f"Telegram's last delivery failed: {info['last_error_message']} "
                                               "(check the proxy in front of `earshot telegram` and its TLS)")
    else:
        yield Check("Telegram webhook", True, f"set to {_where(current)}/…, no delivery errors")


# --- Slack -----------------------------------------------------------------------------------------
def check_slack(settings: Settings, http: httpx.Client) -> Iterator[Check]:
    if settings.slack_bot_token is None or not settings.slack_bot_token.get_secret_value():
        yield Check("Slack", None, "SLACK_BOT_TOKEN not set, skipped")
        return
    api = settings.slack_api_url if settings.slack_api_url.endswith("/") else settings.slack_api_url + "/"

    def call(method: str, token: str) -> tuple[httpx.Response | None, dict, str | None]:
        try:
            resp = http.post(api + method, headers={"Authorization": f"Bearer {token}"})
            body = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            return None, {}, f"no answer from {_where(api)} ({type(exc).__name__}): check SLACK_API_URL and the network"
        return resp, body, None if body.get("ok") else str(body.get("error") or resp.status_code)

    resp, body, error = call("auth.test", settings.slack_bot_token.get_secret_value())
    if resp is None or error:
        fix = error if resp is None else (f"SLACK_BOT_TOKEN was refused ({error}): use the app's Bot User OAuth "
                                          "Token (xoxb-…, OAuth & Permissions)")
        yield Check("Slack auth.test", False, fix or "")
        return
    yield Check("Slack auth.test", True, f"signed in as {body.get('user')} in {body.get('team')}")
    header = resp.headers.get("x-oauth-scopes")
    if header is None:
        yield Check("Slack scopes", False,
                    "Slack did not list the token's scopes: is SLACK_BOT_TOKEN a bot token (xoxb-…)?")
    else:
        granted = {s.strip() for s in header.split(",") if s.strip()}
        missing = [s for s in SLACK_SCOPES if s not in granted]
        if missing:
            yield Check("Slack scopes", False, f"the app lacks {', '.join(missing)}: add them under OAuth & "
                                               "Permissions (or paste deploy/slack-manifest.yml) and reinstall the app")
        else:
            yield Check("Slack scopes", True, f"all {len(SLACK_SCOPES)} the app needs")
    if settings.slack_app_token is not None and settings.slack_app_token.get_secret_value():
        resp, body, error = call("apps.connections.open", settings.slack_app_token.get_secret_value())
        if resp is None or error:
            yield Check("Slack Socket Mode", False, (error or "") if resp is None else
                        f"SLACK_APP_TOKEN was refused ({error}): create an app-level token (xapp-…) with the "
                        "connections:write scope under Basic Information, and turn Socket Mode on")
        else:
            yield Check("Slack Socket Mode", True, "SLACK_APP_TOKEN opens a connection")
    elif settings.slack_signing_secret is None or not settings.slack_signing_secret.get_secret_value():
        yield Check("Slack mode", False, "set SLACK_SIGNING_SECRET (HTTP mode, from Basic Information) "
                                         "or SLACK_APP_TOKEN (Socket Mode)")
    else:
        yield Check("Slack mode", True, "HTTP: SLACK_SIGNING_SECRET is set (Slack's requests are checked with it)")


# --- Discord ---------------------------------------------------------------------------------------
# what earshot does in a channel: see it, read its history (the latest audio), send messages and voice messages,
# attach files (transcripts, spoken answers), answer in threads
DISCORD_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 15) | (1 << 16) | (1 << 38) | (1 << 46)
DISCORD_CONTENT_FLAGS = (1 << 18) | (1 << 19)     # GATEWAY_MESSAGE_CONTENT, _LIMITED: the intent is on


def check_discord(settings: Settings, http: httpx.Client) -> Iterator[Check]:
    if settings.discord_bot_token is None or not settings.discord_bot_token.get_secret_value():
        yield Check("Discord", None, "DISCORD_BOT_TOKEN not set, skipped")
        return
    api = settings.discord_api_url.rstrip("/")
    headers = {"Authorization": f"Bot {settings.discord_bot_token.get_secret_value()}"}

    def call(path: str) -> tuple[dict | None, str | None]:
        try:
            resp = http.get(api + path, headers=headers)
            body = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            return None, f"no answer from {_where(api)} ({type(exc).__name__}): check DISCORD_API_URL and the network"
        if resp.status_code == 401:
            return None, ("DISCORD_BOT_TOKEN was refused (401): copy the bot's token again from the Developer "
                          "Portal (your application → Bot → Reset Token)")
        if resp.status_code != 200:
            return None, f"GET {path} failed ({resp.status_code} {body.get('message', '')})"
        return body, None

    me, problem = call("/users/@me")
    if me is None:
        yield Check("Discord GET /users/@me", False, problem or "")
        return
    yield Check("Discord GET /users/@me", True, f"signed in as {me.get('username')}")
    app, problem = call("/applications/@me")
    if app is None:
        yield Check("Discord message content intent", False, problem or "")
        return
    if int(app.get("flags") or 0) & DISCORD_CONTENT_FLAGS:
        yield Check("Discord message content intent", True, "on: messages in servers arrive with their audio")
    else:
        yield Check("Discord message content intent", False,
                    "off: switch on MESSAGE CONTENT INTENT under Bot → Privileged Gateway Intents in the Developer "
                    "Portal (without it `earshot discord` can't connect)")
    invite = (f"https://discord.com/oauth2/authorize?client_id={app.get('id')}&scope=bot+applications.commands"
              f"&permissions={DISCORD_PERMISSIONS}")
    yield Check("Discord invite", True, f"add earshot to a server with {invite}")


# --- WhatsApp --------------------------------------------------------------------------------------
def check_whatsapp(settings: Settings, http: httpx.Client) -> Iterator[Check]:
    token = settings.whatsapp_access_token.get_secret_value() if settings.whatsapp_access_token else ""
    if not token:
        yield Check("WhatsApp", None, "WHATSAPP_ACCESS_TOKEN not set, skipped")
        return
    api = settings.whatsapp_api_url.rstrip("/")
    number = settings.whatsapp_phone_number_id
    if not number:
        yield Check("WhatsApp number", False, "set WHATSAPP_PHONE_NUMBER_ID (Meta's app dashboard: WhatsApp -> API "
                                              "Setup, the Phone number ID under the number)")
    else:
        try:
            resp = http.get(f"{api}/{number}", params={"fields": "display_phone_number,verified_name"},
                            headers={"Authorization": f"Bearer {token}"})
            body = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            yield Check("WhatsApp number", False, f"no answer from {_where(api)} ({type(exc).__name__}): check "
                                                  "WHATSAPP_API_URL and the network")
        else:
            error = body.get("error") if isinstance(body, dict) else None
            if resp.status_code == 200 and isinstance(body, dict) and not error:
                yield Check("WhatsApp number", True, f"{body.get('display_phone_number')} "
                                                     f"({body.get('verified_name')})")
            else:
                err = error if isinstance(error, dict) else {}
                code, said = err.get("code"), err.get("message") or resp.reason_phrase
                if resp.status_code == 401 or code in (0, 190):
                    fix = (f"WHATSAPP_ACCESS_TOKEN was refused (code {code}): create a permanent token for a system "
                           "user with whatsapp_business_messaging (Business settings -> System users)")
                elif code == 100:
                    fix = f"no such number ({said}): check WHATSAPP_PHONE_NUMBER_ID (the id, not the phone number)"
                else:
                    fix = f"the Graph API answered {resp.status_code} (code {code}: {said})"
                yield Check("WhatsApp number", False, fix)
    missing = [name for name, value in (("WHATSAPP_APP_SECRET", settings.whatsapp_app_secret),
                                        ("WHATSAPP_VERIFY_TOKEN", settings.whatsapp_verify_token))
               if value is None or not value.get_secret_value()]
    if missing:
        yield Check("WhatsApp webhook", False, f"set {' and '.join(missing)}: the app secret (App settings -> Basic) "
                                               "checks Meta's signatures; the verify token is the one you type in the "
                                               "webhook's settings")
    else:
        yield Check("WhatsApp webhook", True, "WHATSAPP_APP_SECRET and WHATSAPP_VERIFY_TOKEN are set (Meta's "
                                              "deliveries are checked with them)")


# --- all of it -------------------------------------------------------------------------------------
async def _async_checks(settings: Settings) -> list[Check]:
    return list(await asyncio.gather(check_database(settings), check_model(settings)))


def run_checks(settings: Settings, *, webhook_url: str | None = None) -> Iterator[Check]:
    """Every check, in order, as each finishes."""
    yield check_ffmpeg(settings)
    yield from check_catalog(settings)
    yield from asyncio.run(_async_checks(settings))
    with httpx.Client(timeout=TIMEOUT, follow_redirects=False) as http:
        yield from check_telegram(settings, http, webhook_url)
        yield from check_slack(settings, http)
        yield from check_discord(settings, http)
        yield from check_whatsapp(settings, http)


def read_settings() -> tuple[Settings, list[Check]]:
    """The settings from the environment, and a ✗ check for each variable that is invalid (named, with what it
    should be); those variables take their defaults, so every other check still runs."""
    from pydantic import ValidationError

    from core.config import invalid_settings, settings_without
    bad: list[tuple[str, str, str]] = []
    for _ in range(3):                  # an invalid value can hide another behind it; a few rounds find them all
        try:
            return settings_without([f for _, f, _ in bad]), [Check(v, False, what) for v, _, what in bad]
        except ValidationError as exc:
            found = invalid_settings(exc.errors())
            if not found or {f for _, f, _ in found} <= {f for _, f, _ in bad}:
                raise
            bad += [b for b in found if b[1] not in {f for _, f, _ in bad}]
    return settings_without([f for _, f, _ in bad]), [Check(v, False, what) for v, _, what in bad]


def doctor(settings: Settings, *, webhook_url: str | None = None,
           echo: Callable[[str], object] = print, first: list[Check] | None = None) -> bool:
    """Print one masked line per check (`first`: found before, like invalid settings); True when none failed."""
    mask = RedactingFilter(settings.secrets())
    ok = True
    for check in [*(first or ()), *run_checks(settings, webhook_url=webhook_url)]:
        ok = ok and check.ok is not False
        echo(mask.redact(check.line()))
    return ok
