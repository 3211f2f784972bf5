"""A stand-in for the Slack Web API, file hosting, response_urls and Socket Mode, plus request signing.

The app under test points its AsyncWebClient at `<url>/api/`. Tests shape the workspace (files, channel
history, failures), post signed events and slash commands to the app's own HTTP endpoint, then read
what the app posted:

    slack = FakeSlack()
    async with Served(slack.app) as s:
        slack.url = s.url
        f = slack.add_file(webm_bytes, name="clip.webm", subtype="slack_audio")
        body = event_body({"type": "message", ...}); headers = signed_headers(SECRET, body)
        ...
        slack.posts          # chat.postMessage calls (updated in place by chat.update)
        slack.responses      # bodies posted to response_urls
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
import urllib.parse
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TEAM_ID = "T0EARSHOT"
BOT_USER_ID = "U0EARSHOT"
BOT_ID = "B0EARSHOT"
APP_ID = "A0EARSHOT"
# the bot scopes an app installed from deploy/slack-manifest.yml holds
BOT_SCOPES = ("app_mentions:read", "channels:history", "chat:write", "commands", "files:read", "files:write",
              "groups:history", "im:history", "mpim:history", "reactions:read", "users:read")
LOGIN_PAGE = ("<!DOCTYPE html>\n<html lang=\"en\"><head><title>Slack</title></head>"
              "<body>Sign in to your workspace</body></html>")


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """Slack's v0 signature: HMAC-SHA256 over "v0:<timestamp>:<body>" with the signing secret."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, *, timestamp: int | None = None, json_body: bool | None = None,
                   retry: int | None = None) -> dict[str, str]:
    """The headers Slack sends with a request body; json_body None guesses the content type from the body."""
    ts = int(time.time()) if timestamp is None else timestamp
    is_json = body.lstrip().startswith(b"{") if json_body is None else json_body
    headers = {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": sign(secret, body, ts),
               "Content-Type": "application/json" if is_json else "application/x-www-form-urlencoded"}
    if retry is not None:
        headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
    return headers


_event_ids = itertools.count(1)


def event_body(event: dict[str, Any], *, event_id: str | None = None) -> bytes:
    """An Events API callback wrapping `event`, as Slack posts it to the request URL."""
    return json.dumps({
        "token": "verification-token-unused", "team_id": TEAM_ID, "api_app_id": APP_ID,
        "type": "event_callback", "event": event, "event_context": "4-context",
        "event_id": event_id or f"Ev{int(time.time())}{next(_event_ids):05d}", "event_time": int(time.time()),
        "authorizations": [{"team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": True}],
    }).encode()


def slash_body(text: str, *, channel: str = "C0GENERAL", user: str = "U0ALICE", response_url: str = "",
               command: str = "/earshot") -> bytes:
    """A slash command invocation, form-encoded as Slack posts it."""
    return urllib.parse.urlencode({
        "token": "verification-token-unused", "team_id": TEAM_ID, "team_domain": "earshot-test",
        "channel_id": channel, "channel_name": "general", "user_id": user, "user_name": "alice",
        "command": command, "text": text, "api_app_id": APP_ID, "is_enterprise_install": "false",
        "response_url": response_url, "trigger_id": f"{next(_event_ids)}.trigger",
    }).encode()


# ---- interactivity: payloads Slack posts to the app's request URL, and the Block Kit limits it checks ----------

HOME_BLOCK_LIMIT = 100
ID_LIMIT = 255                    # block_id, action_id
_ELEMENT_TEXT_LIMIT = 75          # a button's or an option's label
_OPTION_VALUE_LIMIT = 150
_BUTTON_VALUE_LIMIT = 2000


def interactive_body(payload: dict[str, Any]) -> bytes:
    """An interaction as Slack posts it: form-encoded, the JSON in one `payload` field."""
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


def _user(user: str) -> dict[str, Any]:
    return {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM_ID}


def shortcut_payload(callback_id: str, message: dict[str, Any], *, channel: str, user: str = "U0ALICE",
                     response_url: str = "") -> dict[str, Any]:
    """A message shortcut (`message_action`) used on `message` (the full message, files and all)."""
    return {"type": "message_action", "token": "verification-token-unused", "action_ts": f"{time.time():.6f}",
            "team": {"id": TEAM_ID, "domain": "earshot-test"}, "user": _user(user),
            "channel": {"id": channel, "name": "general"}, "is_enterprise_install": False, "enterprise": None,
            "callback_id": callback_id, "trigger_id": f"{next(_event_ids)}.trigger", "response_url": response_url,
            "message_ts": message["ts"], "message": message}


def _element_action(block: dict[str, Any], element: dict[str, Any], value: str | None) -> dict[str, Any]:
    """The entry of `actions` Slack sends for an element used: a button's value, a menu's chosen option."""
    action: dict[str, Any] = {"type": element["type"], "action_id": element["action_id"],
                              "block_id": block["block_id"], "action_ts": f"{time.time():.6f}"}
    if element["type"] == "button":
        action |= {"text": element["text"], **({"value": element["value"]} if "value" in element else {})}
        return action
    options = element.get("options") or []
    chosen = next((o for o in options if o["value"] == value), None)
    if chosen is None:
        raise AssertionError(f"no option {value!r} in {element['action_id']}")
    action["selected_option"] = chosen
    if "placeholder" in element:
        action["placeholder"] = element["placeholder"]
    return action


def _find_element(blocks: list[dict[str, Any]], action_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    for block in blocks:
        for element in [*(block.get("elements") or []), *([block["accessory"]] if "accessory" in block else [])]:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                if "block_id" not in block:       # Slack fills in a block_id the app left out
                    block["block_id"] = uuid.uuid4().hex[:5]
                return block, element
    raise AssertionError(f"no element {action_id!r} in these blocks")


def block_problems(blocks: list[dict[str, Any]]) -> list[str]:
    """What Slack says is wrong with blocks (ids, labels, values, options), each with its json-pointer."""
    problems: list[str] = []
    block_ids: set[str] = set()
    for n, block in enumerate(blocks):
        where = f"/blocks/{n}"
        block_id = block.get("block_id")
        if block_id is not None:
            if not isinstance(block_id, str) or not 0 < len(block_id) <= ID_LIMIT:
                problems.append(f"must be at most 255 characters [json-pointer:{where}/block_id]")
            elif block_id in block_ids:
                problems.append(f"duplicate block_id [json-pointer:{where}/block_id]")
            block_ids.add(str(block_id))
        if block.get("type") == "header" and len((block.get("text") or {}).get("text", "")) > 150:
            problems.append(f"must be less than 151 characters [json-pointer:{where}/text/text]")
        elements = [*(block.get("elements") or []), *([block["accessory"]] if "accessory" in block else [])]
        if block.get("type") == "actions" and not 0 < len(elements) <= 25:
            problems.append(f"must have 1 to 25 elements [json-pointer:{where}/elements]")
        action_ids: set[str] = set()
        for e, element in enumerate(elements):
            if not isinstance(element, dict) or "action_id" not in element:
                continue
            at = f"{where}/elements/{e}"
            action_id = element["action_id"]
            if not isinstance(action_id, str) or not 0 < len(action_id) <= ID_LIMIT:
                problems.append(f"must be at most 255 characters [json-pointer:{at}/action_id]")
            elif action_id in action_ids:
                problems.append(f"duplicate action_id [json-pointer:{at}/action_id]")
            action_ids.add(str(action_id))
            if element.get("type") == "button":
                label = (element.get("text") or {}).get("text", "")
                if not 0 < len(label) <= _ELEMENT_TEXT_LIMIT:
                    problems.append(f"must be 1 to 75 characters [json-pointer:{at}/text/text]")
                if len(str(element.get("value", ""))) > _BUTTON_VALUE_LIMIT:
                    problems.append(f"must be at most 2000 characters [json-pointer:{at}/value]")
            options = element.get("options")
            if options is not None:
                if not 0 < len(options) <= 100:
                    problems.append(f"must have 1 to 100 options [json-pointer:{at}/options]")
                for o, option in enumerate(options):
                    if not 0 < len((option.get("text") or {}).get("text", "")) <= _ELEMENT_TEXT_LIMIT \
                            or not 0 < len(str(option.get("value", ""))) <= _OPTION_VALUE_LIMIT:
                        problems.append(f"invalid option [json-pointer:{at}/options/{o}]")
                initial = element.get("initial_option")
                if initial is not None and initial not in options:
                    problems.append(f"initial_option must be one of the options [json-pointer:{at}/initial_option]")
    return problems


@dataclass
class ApiCall:
    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class FakeSlack:
    """The workspace as the app sees it through the Web API. Mutate it from the test's loop."""

    def __init__(self, token: str = "xoxb-earshot-test", app_token: str = "xapp-1-earshot-test") -> None:
        self.token = token
        self.app_token = app_token                      # Socket Mode: apps.connections.open takes this one
        self.url = ""                                   # set once served
        self.files_scope = True                         # False: downloads get the sign-in page
        self.failures: dict[str, str] = {}              # method -> Slack error code it answers with
        self._scripted: dict[str, list[Any]] = {}      # method -> [calls to let through, times to fail, code]
        self.calls: list[ApiCall] = []
        self.posts: list[dict[str, Any]] = []           # chat.postMessage, edited in place by chat.update
        self.updates: list[dict[str, Any]] = []         # every chat.update, in order
        self.responses: list[dict[str, Any]] = []       # bodies posted to response_urls
        self.downloads: list[str] = []                  # file ids served
        self.files: dict[str, dict[str, Any]] = {}
        self.uploads: list[dict[str, Any]] = []         # files shared by the app: channel, thread_ts, data…
        self._pending: dict[str, dict[str, Any]] = {}   # upload URLs handed out, not yet completed
        self.users: dict[str, dict[str, Any]] = {}      # users.info records; unknown ids are plain members
        # what the bot token was granted; Slack names them in the x-oauth-scopes header of every answer
        self.scopes: list[str] = list(BOT_SCOPES)
        self._blobs: dict[str, bytes] = {}
        # channel -> messages, oldest first
        self._history: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._ids = itertools.count(1)
        self._clock = itertools.count(1)
        self.app = web.Application(client_max_size=32 * 1024 * 1024)
        # POST only: Slack takes GET too, but the app sends every call as POST so it works behind
        # proxies and stand-ins that refuse GET; a GET here fails the test that made it.
        self.app.router.add_post("/api/{method}", self._api)
        self.app.router.add_get("/files-pri/{team_file}/{name}", self._download)
        self.app.router.add_post("/commands/{rid}", self._response_url)
        self.app.router.add_post("/upload/{file_id}", self._upload)
        self.app.router.add_get("/socket", self._socket)
        self._serve_uploads()
        self.home_views: dict[str, dict[str, Any]] = {}    # user -> the Home tab view published for them
        self.ephemerals: list[dict[str, Any]] = []          # chat.postEphemeral calls that were shown
        self.sockets: list[web.WebSocketResponse] = []
        self.socket_acks: dict[str, dict[str, Any]] = {}    # envelope_id -> the app's ack message
        self._acked: dict[str, asyncio.Event] = {}

    # ---- what tests set up -----------------------------------------------------------------------------
    def ts(self) -> str:
        """A fresh message timestamp, increasing."""
        return f"{int(time.time())}.{next(self._clock):06d}"

    def add_file(self, data: bytes, *, name: str = "clip.webm", mimetype: str = "audio/webm",
                 filetype: str = "webm", subtype: str | None = "slack_audio", url: str | None = None,
                 **extra: Any) -> dict[str, Any]:
        """Host a file; returns its full files.info record. url: where its URLs point instead (a remote
        file's, or another host's); extra: more fields (mode, is_external…)."""
        fid = f"F{next(self._ids):09d}"
        self._blobs[fid] = data
        url = url or f"{self.url}/files-pri/{TEAM_ID}-{fid}/{urllib.parse.quote(name)}"
        record = {"id": fid, "name": name, "title": name, "mimetype": mimetype, "filetype": filetype,
                  "size": len(data), "url_private": url, "url_private_download": url + "?download=1",
                  "created": int(time.time()), "user": "U0ALICE", "mode": "hosted", "is_external": False,
                  **extra}
        if subtype:
            record["subtype"] = subtype
        self.files[fid] = record
        return record

    @staticmethod
    def event_file(record: dict[str, Any]) -> dict[str, Any]:
        """The slim file entry events often carry: no URLs, so the app must ask files.info."""
        return {k: record[k] for k in ("id", "name", "mimetype")}

    @staticmethod
    def connect_stub(record: dict[str, Any]) -> dict[str, Any]:
        """What a Slack Connect (shared) channel's event carries for a file: its id alone; files.info
        describes it to an app allowed to see it."""
        return {"id": record["id"], "mode": "file_access", "file_access": "check_file_info"}

    def add_message(self, channel: str, message: dict[str, Any]) -> dict[str, Any]:
        """Put a message in a channel's history (a thread reply if it has thread_ts)."""
        message = {"type": "message", "ts": self.ts(), **message}
        self._history[channel].append(message)
        return message

    def fail(self, method: str, code: str = "internal_error", *, times: int = 1, after: int = 0) -> None:
        """After `after` more calls of `method` succeed, the next `times` answer with this error code."""
        self._scripted[method] = [after, times, code]

    def response_url(self) -> str:
        return f"{self.url}/commands/{next(self._ids)}"

    def said(self, channel: str | None = None) -> list[dict[str, Any]]:
        """What the app posted (messages and response_url answers), optionally in one channel."""
        return [p for p in self.posts if channel is None or p["channel"] == channel]

    def texts(self) -> list[str]:
        """Every visible text the app produced: block texts where present, else the message text."""
        out = []
        for p in [*self.posts, *self.responses]:
            blocks = p.get("blocks") or []
            shown = "\n".join(b.get("text", {}).get("text", "") for b in blocks)
            out.append(shown if blocks else p.get("text") or "")
        return out

    def calls_to(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method]

    # ---- what the app calls ----------------------------------------------------------------------------
    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            raw = await request.text()
            params |= json.loads(raw) if raw.strip() else {}
        else:
            params |= dict(await request.post())
        return params

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        token = params.pop("token", None) or request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.calls.append(ApiCall(method, params))
        if not token:
            return self._error("not_authed")
        if method == "apps.connections.open":
            if token != self.app_token:
                return self._error("invalid_auth")
            return self._ok(url=self.url.replace("http://", "ws://") + "/socket")
        if token != self.token:
            return self._error("invalid_auth")
        scripted = self._scripted.get(method)
        if scripted and scripted[0] > 0:
            scripted[0] -= 1
        elif scripted and scripted[1] > 0:
            scripted[1] -= 1
            response = self._error(scripted[2])
            response.headers["x-oauth-scopes"] = ",".join(self.scopes)
            return response
        if method in self.failures:
            response = self._error(self.failures[method])
        else:
            handler = getattr(self, "_" + method.replace(".", "_"), None)
            response = self._error("unknown_method") if handler is None else handler(params)
        response.headers["x-oauth-scopes"] = ",".join(self.scopes)
        return response

    @staticmethod
    def _ok(**body: Any) -> web.Response:
        return web.json_response({"ok": True, **body})

    @staticmethod
    def _error(code: str, **extra: Any) -> web.Response:
        return web.json_response({"ok": False, "error": code, **extra})

    def _auth_test(self, _: dict[str, Any]) -> web.Response:
        return self._ok(url="https://earshot-test.slack.com/", team="Earshot Test", user="earshot",
                        team_id=TEAM_ID, user_id=BOT_USER_ID, bot_id=BOT_ID, is_enterprise_install=False)

    def _check_message(self, params: dict[str, Any]
                       ) -> tuple[str, list[dict[str, Any]] | None, web.Response | None]:
        """Slack's own limits: some text or blocks; at most 50 blocks; a section's text at most 3,000."""
        text = params.get("text") or ""
        blocks = params.get("blocks")
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        if not params.get("channel"):
            return text, blocks, self._error("channel_not_found")
        if not text and not blocks:
            return text, blocks, self._error("no_text")
        if len(text) > 40_000:
            return text, blocks, self._error("msg_too_long")
        for n, b in enumerate(blocks or []):
            if b.get("type") == "section" and len((b.get("text") or {}).get("text", "")) > 3000:
                where = f"[json-pointer:/blocks/{n}/text/text]"
                return text, blocks, self._error("invalid_blocks",
                                                 errors=[f"must be less than 3001 characters {where}"])
        if blocks is not None and len(blocks) > 50:
            return text, blocks, self._error("invalid_blocks")
        if blocks and (problems := block_problems(blocks)):
            return text, blocks, self._error("invalid_blocks", errors=problems)
        return text, blocks, None

    def _chat_postMessage(self, params: dict[str, Any]) -> web.Response:
        text, blocks, refused = self._check_message(params)
        if refused:
            return refused
        ts = self.ts()
        post = {"channel": params["channel"], "text": text, "blocks": blocks,
                "thread_ts": params.get("thread_ts"), "ts": ts, "edits": 0}
        self.posts.append(post)
        self._history[params["channel"]].append({"type": "message", "ts": ts, "text": text, "bot_id": BOT_ID,
                                                 "user": BOT_USER_ID, **({"thread_ts": post["thread_ts"]}
                                                                         if post["thread_ts"] else {}),
                                                 **({"blocks": blocks} if blocks else {})})
        return self._ok(channel=params["channel"], ts=ts, message={"text": text, "ts": ts, "bot_id": BOT_ID})

    def _chat_update(self, params: dict[str, Any]) -> web.Response:
        text, blocks, refused = self._check_message(params)
        if refused:
            return refused
        for post in self.posts:
            if post["ts"] == params.get("ts") and post["channel"] == params["channel"]:
                post.update(text=text, blocks=blocks, edits=post["edits"] + 1)
                self.updates.append({"channel": post["channel"], "ts": post["ts"], "text": text,
                                     "blocks": blocks, "at": time.monotonic()})
                return self._ok(channel=post["channel"], ts=post["ts"], text=text)
        return self._error("message_not_found")

    # ---- files_upload_v2: an upload URL, the bytes posted to it, then completion shares the file -------------
    def _files_getUploadURLExternal(self, params: dict[str, Any]) -> web.Response:
        try:
            length = int(params.get("length") or 0)
        except ValueError:
            length = 0
        if not params.get("filename") or length <= 0:
            return self._error("invalid_arguments")
        fid = f"F{next(self._ids):09d}"
        self._pending[fid] = {"filename": params["filename"], "length": length, "data": None}
        return self._ok(upload_url=f"{self.url}/upload/{fid}", file_id=fid)

    async def _upload(self, request: web.Request) -> web.Response:
        """The upload URL is pre-signed: no token; the body is the file, as long as announced."""
        pending = self._pending.get(request.match_info["file_id"])
        data = await request.read()
        if pending is None:
            return web.Response(status=404, text="not found")
        if len(data) != pending["length"]:
            return web.Response(status=400, text="length mismatch")
        pending["data"] = data
        return web.Response(status=200, text="OK - " + str(len(data)))

    def _files_completeUploadExternal(self, params: dict[str, Any]) -> web.Response:
        try:
            files = json.loads(params.get("files") or "[]")
        except ValueError:
            return self._error("invalid_arguments")
        if not files or any(f.get("id") not in self._pending or self._pending[f["id"]]["data"] is None
                            for f in files):
            return self._error("file_not_found")
        done = []
        for f in files:
            pending = self._pending.pop(f["id"])
            upload = {"id": f["id"], "title": f.get("title"), "filename": pending["filename"],
                      "data": pending["data"], "channel": params.get("channel_id"),
                      "thread_ts": params.get("thread_ts"), "initial_comment": params.get("initial_comment")}
            self.uploads.append(upload)
            done.append({"id": f["id"], "name": pending["filename"], "title": f.get("title"),
                         "size": len(pending["data"])})
        return self._ok(files=done)

    def add_user(self, user_id: str, name: str, *, admin: bool = False, owner: bool = False,
                 locale: str = "en-US") -> None:
        """A workspace member with a display name; admin/owner as users.info reports them; locale: the
        language their Slack is in (users.info tells it only with include_locale=true)."""
        self.users[user_id] = {"id": user_id, "team_id": TEAM_ID, "name": name.lower(), "real_name": name,
                               "is_admin": admin, "is_owner": owner, "is_primary_owner": False,
                               "is_bot": False, "profile": {"display_name": name, "real_name": name},
                               "locale": locale}

    def _users_info(self, params: dict[str, Any]) -> web.Response:
        user_id = params.get("user", "")
        if not user_id.startswith(("U", "W")):
            return self._error("user_not_found")
        if user_id not in self.users:
            self.add_user(user_id, user_id.lower())
        user = dict(self.users[user_id])
        if str(params.get("include_locale", "")).lower() not in ("true", "1"):
            user.pop("locale", None)
        return self._ok(user=user)

    def _files_info(self, params: dict[str, Any]) -> web.Response:
        record = self.files.get(params.get("file", ""))
        if not record:
            return self._error("file_not_found")
        return self._ok(file=record, comments=[], response_metadata={"next_cursor": ""})

    def _conversations_history(self, params: dict[str, Any]) -> web.Response:
        history = self._history.get(params.get("channel", ""), [])
        top = self._history_window([m for m in history if m.get("thread_ts", m["ts"]) == m["ts"]], params)
        limit = int(params.get("limit") or 100)
        return self._ok(messages=list(reversed(top))[:limit], has_more=len(top) > limit)   # newest first

    def _conversations_replies(self, params: dict[str, Any]) -> web.Response:
        root = params.get("ts")
        history = self._history.get(params.get("channel", ""), [])
        thread = [m for m in history if m.get("thread_ts", m["ts"]) == root]
        if not thread:
            return self._error("thread_not_found")
        return self._ok(messages=thread, has_more=False)                                 # oldest first

    async def _download(self, request: web.Request) -> web.Response:
        # Slack answers a file fetch it won't authorise with its sign-in page and status 200.
        if request.headers.get("Authorization") != f"Bearer {self.token}" or not self.files_scope:
            return web.Response(text=LOGIN_PAGE, content_type="text/html")
        fid = request.match_info["team_file"].rsplit("-", 1)[-1]
        if fid not in self._blobs:
            return web.Response(status=404, text="not found")
        self.downloads.append(fid)
        return web.Response(body=self._blobs[fid], content_type=self.files[fid]["mimetype"])

    async def _response_url(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.responses.append({"rid": request.match_info["rid"], **body})
        return web.Response(text="ok")

    # ---- Socket Mode -------------------------------------------------------------------------------------
    # ---- file uploads (files_upload_v2): transcripts as files -------------------------------------------
    def _serve_uploads(self) -> None:
        self.uploads: list[dict[str, Any]] = []          # files shared by files.completeUploadExternal, in order
        self._pending_uploads: dict[str, dict[str, Any]] = {}   # file id -> announced, maybe uploaded
        self.app.router.add_post("/upload/v1/{upload_id}", self._upload_bytes)

    def _files_getUploadURLExternal(self, params: dict[str, Any]) -> web.Response:
        filename, length = params.get("filename"), params.get("length")
        if not filename or length in (None, ""):
            return self._error("invalid_arguments")
        if not str(length).isdigit() or int(length) < 1:
            return self._error("invalid_length")
        fid = f"F{next(self._ids):09d}"
        upload_id = uuid.uuid4().hex
        self._pending_uploads[fid] = {"file_id": fid, "filename": filename, "length": int(length),
                                      "upload_id": upload_id, "data": None}
        return self._ok(upload_url=f"{self.url}/upload/v1/{upload_id}", file_id=fid)

    async def _upload_bytes(self, request: web.Request) -> web.Response:
        upload_id = request.match_info["upload_id"]
        pending = next((p for p in self._pending_uploads.values() if p["upload_id"] == upload_id), None)
        if pending is None:
            return web.Response(status=404, text="unknown upload")
        data = await request.read()
        if len(data) != pending["length"]:      # Slack checks the bytes against the announced length
            return web.Response(status=400, text="length mismatch")
        pending["data"] = data
        return web.Response(status=200, text=f"OK - {len(data)}")

    def _files_completeUploadExternal(self, params: dict[str, Any]) -> web.Response:
        try:
            files = json.loads(params["files"]) if isinstance(params.get("files"), str) else params.get("files")
        except (KeyError, json.JSONDecodeError):
            return self._error("invalid_arguments")
        if not files:
            return self._error("invalid_arguments")
        channel = params.get("channel_id") or None
        thread_ts = params.get("thread_ts") or None
        if thread_ts and not channel:
            return self._error("invalid_arguments")
        shared = []
        for f in files:
            pending = self._pending_uploads.get(f.get("id"))
            if pending is None or pending["data"] is None:
                return self._error("file_not_found")
            record = {"id": pending["file_id"], "name": pending["filename"], "title": f.get("title") or
                      pending["filename"], "size": pending["length"]}
            self.uploads.append({**record, "data": pending["data"], "channel": channel, "thread_ts": thread_ts,
                                 "initial_comment": params.get("initial_comment")})
            del self._pending_uploads[pending["file_id"]]
            shared.append(record)
        return self._ok(files=shared)

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1, "connection_info": {"app_id": APP_ID},
                            "debug_info": {"host": "fake", "approximate_connection_time": 3600}})
        async for msg in ws:
            if msg.type.name == "TEXT":
                ack = json.loads(msg.data)
                envelope = ack.get("envelope_id", "")
                self.socket_acks[envelope] = ack
                if envelope in self._acked:
                    self._acked[envelope].set()
        self.sockets.remove(ws)
        return ws

    async def send_envelope(self, kind: str, payload: dict[str, Any], *,
                            within: float = 5.0) -> dict[str, Any]:
        """Deliver an events_api / slash_commands envelope over the open socket; returns the app's ack."""
        envelope = f"env-{next(self._ids)}"
        self._acked[envelope] = asyncio.Event()
        await self.sockets[-1].send_json({"envelope_id": envelope, "type": kind, "payload": payload,
                                          "accepts_response_payload": kind != "events_api",
                                          "retry_attempt": 0, "retry_reason": ""})
        await asyncio.wait_for(self._acked[envelope].wait(), within)
        return self.socket_acks[envelope]

    # ---- interactivity: shortcuts, buttons, reactions, the Home tab --------------------------------------------
    def message(self, channel: str, ts: str) -> dict[str, Any]:
        """A message as Slack includes it in payloads (blocks, files, reactions and all)."""
        found = next((m for m in self._history.get(channel, []) if m["ts"] == ts), None)
        if found is None:
            raise AssertionError(f"no message {ts} in {channel}")
        return found

    def shortcut(self, callback_id: str, channel: str, ts: str, *, user: str = "U0ALICE") -> bytes:
        """The body Slack posts when `user` picks a message shortcut on the message at `ts`."""
        payload = shortcut_payload(callback_id, self.message(channel, ts), channel=channel, user=user,
                                   response_url=self.response_url())
        return interactive_body(payload)

    def press(self, channel: str, ts: str, action_id: str, *, value: str | None = None,
              user: str = "U0ALICE") -> bytes:
        """The `block_actions` body Slack posts when `user` uses an element of the app's message at `ts`
        (value: the option a menu is set to). Only elements the message has can be used."""
        message = self.message(channel, ts)
        block, element = _find_element(message.get("blocks") or [], action_id)
        container = {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": False}
        if message.get("thread_ts"):
            container["thread_ts"] = message["thread_ts"]
        payload = {"type": "block_actions", "user": _user(user), "api_app_id": APP_ID,
                   "token": "verification-token-unused", "container": container,
                   "trigger_id": f"{next(_event_ids)}.trigger", "team": {"id": TEAM_ID, "domain": "earshot-test"},
                   "enterprise": None, "is_enterprise_install": False, "channel": {"id": channel, "name": "general"},
                   "message": message, "state": {"values": {}}, "response_url": self.response_url(),
                   "actions": [_element_action(block, element, value)]}
        return interactive_body(payload)

    def press_home(self, user: str, action_id: str, *, value: str | None = None) -> bytes:
        """The `block_actions` body Slack posts when `user` uses an element of their Home tab."""
        view = self.home_views.get(user)
        if view is None:
            raise AssertionError(f"no Home tab published for {user}")
        block, element = _find_element(view["blocks"], action_id)
        state = {block["block_id"]: {action_id: {"type": element["type"],
                                                 "selected_option": element.get("initial_option")}}}
        payload = {"type": "block_actions", "user": _user(user), "api_app_id": APP_ID,
                   "token": "verification-token-unused",
                   "container": {"type": "view", "view_id": view["id"]}, "trigger_id": f"{next(_event_ids)}.trigger",
                   "team": {"id": TEAM_ID, "domain": "earshot-test"}, "enterprise": None,
                   "is_enterprise_install": False, "view": {**view, "state": {"values": state}},
                   "actions": [_element_action(block, element, value)]}
        return interactive_body(payload)

    def react(self, channel: str, ts: str, name: str = "memo", *, user: str = "U0ALICE") -> dict[str, Any]:
        """`user` adds a reaction to a message: recorded on it (reactions.get shows it); returns the
        `reaction_added` event to wrap with event_body."""
        message = self.message(channel, ts)
        reactions = message.setdefault("reactions", [])
        entry = next((r for r in reactions if r["name"] == name), None)
        if entry is None:
            entry = {"name": name, "users": [], "count": 0}
            reactions.append(entry)
        if user not in entry["users"]:
            entry["users"].append(user)
            entry["count"] += 1
        event = {"type": "reaction_added", "user": user, "reaction": name,
                 "item": {"type": "message", "channel": channel, "ts": ts}, "event_ts": self.ts()}
        if message.get("user"):
            event["item_user"] = message["user"]
        return event

    def home_opened(self, user: str, *, tab: str = "home") -> dict[str, Any]:
        """The `app_home_opened` event when `user` opens the app: with the view, once one was published."""
        event: dict[str, Any] = {"type": "app_home_opened", "user": user, "channel": f"D0{user[1:]}", "tab": tab,
                                 "event_ts": self.ts()}
        if tab == "home" and user in self.home_views:
            event["view"] = self.home_views[user]
        return event

    @staticmethod
    def _history_window(messages: list[dict[str, Any]], params: dict[str, Any]) -> list[dict[str, Any]]:
        """conversations.history's latest / oldest / inclusive: how an app fetches one message by its ts."""
        inclusive = str(params.get("inclusive", "")).lower() in ("1", "true")
        latest, oldest = params.get("latest"), params.get("oldest")
        out = []
        for m in messages:
            ts = float(m["ts"])
            if latest and (ts > float(latest) or (ts == float(latest) and not inclusive)):
                continue
            if oldest and (ts < float(oldest) or (ts == float(oldest) and not inclusive)):
                continue
            out.append(m)
        return out

    def _lacks(self, scope: str) -> web.Response | None:
        if scope in self.scopes:
            return None
        return self._error("missing_scope", needed=scope, provided=",".join(self.scopes))

    def _reactions_get(self, params: dict[str, Any]) -> web.Response:
        if refused := self._lacks("reactions:read"):
            return refused
        channel, ts = params.get("channel", ""), params.get("timestamp", "")
        if not channel or not ts:
            return self._error("invalid_arguments")
        if "full" in params and str(params["full"]) not in ("true", "false", "1", "0"):
            # a boolean argument, written true or false in a form body as Slack's method pages show it
            return self._error("invalid_arguments", response_metadata={
                "messages": [f"[ERROR] full: expected a boolean, got {params['full']!r}"]})
        message = next((m for m in self._history.get(channel, []) if m["ts"] == ts), None)
        if message is None:
            return self._error("message_not_found")
        return self._ok(type="message", channel=channel, message=message)

    def _chat_postEphemeral(self, params: dict[str, Any]) -> web.Response:
        text, blocks, refused = self._check_message(params)
        if refused:
            return refused
        user = params.get("user", "")
        if not user.startswith(("U", "W")):
            return self._error("user_not_found")
        self.ephemerals.append({"channel": params["channel"], "user": user, "text": text, "blocks": blocks,
                                "thread_ts": params.get("thread_ts")})
        return self._ok(message_ts=self.ts())

    def _views_publish(self, params: dict[str, Any]) -> web.Response:
        user = params.get("user_id", "")
        view = params.get("view")
        if isinstance(view, str):
            try:
                view = json.loads(view)
            except json.JSONDecodeError:
                return self._error("invalid_arguments", response_metadata={"messages": ["[ERROR] invalid json"]})
        if not user.startswith(("U", "W")):
            return self._error("user_not_found")
        if not isinstance(view, dict) or view.get("type") != "home" or not isinstance(view.get("blocks"), list):
            return self._error("invalid_arguments", response_metadata={
                "messages": ["[ERROR] a view published to the Home tab must have type home and blocks "
                             "[json-pointer:/view]"]})
        problems = [] if len(view["blocks"]) <= HOME_BLOCK_LIMIT else [
            "[ERROR] must be at most 100 items [json-pointer:/view/blocks]"]
        problems += [f"[ERROR] {p.replace('json-pointer:', 'json-pointer:/view')}"
                     for p in block_problems(view["blocks"])]
        if len(str(view.get("private_metadata", ""))) > 3000 or len(str(view.get("callback_id", ""))) > 255:
            problems.append("[ERROR] too long [json-pointer:/view]")
        if problems:
            return self._error("invalid_arguments", response_metadata={"messages": problems})
        current = self.home_views.get(user)
        if params.get("hash") and current is not None and params["hash"] != current["hash"]:
            return self._error("hash_conflict")
        published = {"id": current["id"] if current else f"V{next(self._ids):09d}", "team_id": TEAM_ID,
                     "type": "home", "blocks": view["blocks"], "private_metadata": view.get("private_metadata", ""),
                     "callback_id": view.get("callback_id", ""), "state": {"values": {}},
                     "hash": f"{time.time():.6f}.{uuid.uuid4().hex[:8]}", "clear_on_close": False,
                     "notify_on_close": False, "root_view_id": None, "app_id": APP_ID,
                     "external_id": view.get("external_id", ""), "app_installed_team_id": TEAM_ID, "bot_id": BOT_ID}
        published["root_view_id"] = published["id"]
        self.home_views[user] = published
        return self._ok(view=published)
