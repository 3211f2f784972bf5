"""A stand-in for Discord: the REST API (v10), the attachment CDN and the Gateway websocket, as discord.py 2.x
talks to them.

The bot under test points discord.py at `<url>/api/v10` (`discord.http.Route.BASE`); GET /gateway/bot names
`ws://<host>/gateway`. Tests act as users — `dm`, `say` (MESSAGE_CREATE; voice messages carry IS_VOICE_MESSAGE
with duration_secs and waveform), `slash`, `message_command`, `press` (INTERACTION_CREATE) — and read what the
bot did: `said()`, `interaction()`, `calls`, `cdn_fetches`, `commands`. It refuses what Discord refuses and what
earshot must never do: content over 2000 characters or empty, malformed voice messages, a second or late
(after 3 s) interaction response, a followup before any response, unsigned CDN URLs; `limit` answers the next
calls of a route with 429s (with `Via`, so discord.py waits and retries, as it does with Discord).
The gateway speaks JSON text frames (discord.py asks for zlib-stream and reads text frames as they are).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

EPOCH_MS = 1420070400000
EPHEMERAL, LOADING, IS_VOICE_MESSAGE = 1 << 6, 1 << 7, 1 << 13
MESSAGE_CONTENT = 1 << 15
MANAGE_GUILD = 1 << 5
MEMBER_PERMS = (1 << 10) | (1 << 11) | (1 << 15) | (1 << 16) | (1 << 6)
MOD_PERMS = MEMBER_PERMS | MANAGE_GUILD
APP_FLAGS_CONTENT = 1 << 19          # GATEWAY_MESSAGE_CONTENT_LIMITED: the message content intent is on


def snowflake(n: int) -> str:
    return str(((int(time.time() * 1000) - EPOCH_MS) << 22) | (n & 0x3FFFFF))


APP_ID = BOT_ID = "1100000000000000001"
GUILD_ID = "1200000000000000001"
OWNER_ID = "1300000000000000001"
MOD_ROLE = "1200000000000000002"
GENERAL, AUTO = "1400000000000000001", "1400000000000000002"
ALICE, BOB = "1500000000000000001", "1500000000000000002"


def iso(t: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if t is None else t, UTC).isoformat()


def jr(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """JSON as Discord sends it (discord.py parses only Content-Type exactly application/json)."""
    return web.Response(body=json.dumps(data).encode(), status=status,
                        headers={"Content-Type": "application/json", "Via": "1.1 google", **(headers or {})})


def refuse(status: int, code: int, message: str) -> web.Response:
    return jr({"message": message, "code": code}, status)


def buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The interactive components (buttons and menus) under a message."""
    return [c for row in message.get("components") or [] for c in row.get("components") or []]


class FakeDiscord:
    def __init__(self, token: str = "MTEwMDAwMDAwMDAwMDAwMDAwMQ.stand-in.not-a-real-token") -> None:
        self.token = token
        self.url = ""
        self.app_flags = APP_FLAGS_CONTENT
        self.moderators: set[str] = set()
        self.bot = {"id": BOT_ID, "username": "earshot", "global_name": None, "discriminator": "0001",
                    "avatar": None, "bot": True, "public_flags": 0}
        self.calls: list[dict[str, Any]] = []
        self.cdn_fetches: list[dict[str, Any]] = []
        self.commands: list[dict[str, Any]] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self.interactions: dict[str, dict[str, Any]] = {}
        self.blobs: dict[str, bytes] = {}
        self.uploads: dict[str, dict[str, Any]] = {}
        self.limits: dict[str, list[float]] = {}
        self.identified = asyncio.Event()
        self.identifies = 0                         # IDENTIFYs accepted: one per bot process (or new session)
        self.intents = 0
        self.voice_refused = False                  # answer voice messages with 50161, as for missing metadata
        self.channels: dict[str, dict[str, Any]] = {
            cid: {"id": cid, "type": 0, "name": name, "position": i, "permission_overwrites": [], "parent_id": None,
                  "nsfw": False, "topic": None, "last_message_id": None, "flags": 0, "guild_id": GUILD_ID}
            for i, (cid, name) in enumerate(((GENERAL, "general"), (AUTO, "auto")))}
        self._n = itertools.count(1)
        self._secret = secrets.token_bytes(16)
        self._ws: web.WebSocketResponse | None = None
        self._seq = 0
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_route("*", "/api/v10/{path:.*}", self.api)
        self.app.router.add_get("/gateway", self.gateway)
        self.app.router.add_get("/gateway/", self.gateway)
        self.app.router.add_get("/attachments/{owner}/{aid}/{name}", self.cdn)

    # ---- the world ------------------------------------------------------------------------------------------
    def _id(self) -> str:
        return snowflake(next(self._n))

    @staticmethod
    def user(uid: str) -> dict[str, Any]:
        return {"id": uid, "username": f"user{uid[-4:]}", "global_name": f"User {uid[-4:]}", "discriminator": "0",
                "avatar": None, "public_flags": 0}

    def _member(self, uid: str) -> dict[str, Any]:
        return {"roles": [MOD_ROLE] if uid in self.moderators else [], "flags": 0, "joined_at": iso(1.7e9),
                "deaf": False, "mute": False, "pending": False, "premium_since": None, "nick": None, "avatar": None,
                "communication_disabled_until": None}

    def _perms(self, uid: str) -> int:
        return MOD_PERMS if uid in self.moderators else MEMBER_PERMS

    def dm_channel(self, uid: str) -> str:
        for cid, ch in self.channels.items():
            if ch["type"] == 1 and ch["recipients"][0]["id"] == uid:
                return cid
        cid = self._id()
        self.channels[cid] = {"id": cid, "type": 1, "last_message_id": None, "flags": 0,
                              "recipients": [self.user(uid)]}
        return cid

    def _guild(self) -> dict[str, Any]:
        def role(rid: str, name: str, perms: int, pos: int) -> dict[str, Any]:
            return {"id": rid, "name": name, "permissions": str(perms), "position": pos, "color": 0, "hoist": False,
                    "managed": False, "mentionable": False, "icon": None, "unicode_emoji": None, "flags": 0}
        return {"id": GUILD_ID, "name": "earshot test server", "icon": None, "splash": None, "banner": None,
                "owner_id": OWNER_ID, "afk_channel_id": None, "afk_timeout": 300, "verification_level": 0,
                "default_message_notifications": 0, "explicit_content_filter": 0, "mfa_level": 0, "nsfw_level": 0,
                "roles": [role(GUILD_ID, "@everyone", MEMBER_PERMS, 0), role(MOD_ROLE, "Moderator", MOD_PERMS, 1)],
                "emojis": [], "stickers": [], "features": [], "application_id": None, "description": None,
                "system_channel_id": GENERAL, "system_channel_flags": 0, "premium_tier": 0,
                "preferred_locale": "en-US", "joined_at": iso(1.7e9), "large": False, "unavailable": False,
                "member_count": 3, "members": [{**self._member(BOT_ID), "user": self.bot}], "presences": [],
                "voice_states": [], "threads": [], "stage_instances": [], "guild_scheduled_events": [],
                "channels": [{k: v for k, v in ch.items() if k != "guild_id"} for ch in self.channels.values()
                             if ch["type"] == 0]}

    def attachment(self, data: bytes, filename: str, content_type: str, **extra: Any) -> dict[str, Any]:
        """Bytes on the CDN, and the attachment object with a signed URL as Discord gives it."""
        aid, issued = self._id(), int(time.time())
        ex = f"{issued + 86400:x}"
        sig = hmac.new(self._secret, f"{aid}:{ex}".encode(), hashlib.sha256).hexdigest()
        self.blobs[aid] = data
        url = f"{self.url}/attachments/{GUILD_ID}/{aid}/{filename}?ex={ex}&is={issued:x}&hm={sig}&"
        return {"id": aid, "filename": filename, "size": len(data), "url": url, "proxy_url": url,
                "content_type": content_type, **extra}

    def _store(self, channel_id: str, author: dict[str, Any], content: str = "", *, flags: int = 0,
               attachments: list[dict[str, Any]] | None = None, components: list[dict[str, Any]] | None = None,
               reference: str | None = None, mentions: list[dict[str, Any]] | None = None,
               **extra: Any) -> dict[str, Any]:
        mid = self._id()
        m: dict[str, Any] = {"id": mid, "channel_id": channel_id, "author": author, "content": content,
                             "timestamp": iso(), "edited_timestamp": None, "tts": False, "mention_everyone": False,
                             "mentions": mentions or [], "mention_roles": [], "attachments": attachments or [],
                             "embeds": [], "pinned": False, "type": 19 if reference else 0, "flags": flags,
                             "components": components or [], **extra}
        if self.channels[channel_id]["type"] == 0:
            m["guild_id"] = GUILD_ID
        if reference is not None and reference in self.messages:
            target = self.messages[reference]
            m["message_reference"] = {"type": 0, "message_id": reference, "channel_id": target["channel_id"]}
            m["referenced_message"] = dict(target)
        self.messages[mid] = m
        self.channels[channel_id]["last_message_id"] = mid
        return m

    def _visible(self, m: dict[str, Any]) -> dict[str, Any]:
        """Without the message content intent a server message that doesn't mention the bot arrives empty."""
        if (self.intents & MESSAGE_CONTENT or "guild_id" not in m or m["author"]["id"] == BOT_ID
                or any(u["id"] == BOT_ID for u in m.get("mentions", []))):
            return m
        return {**m, "content": "", "attachments": [], "components": [], "embeds": []}

    def _emit(self, m: dict[str, Any]) -> None:
        if m["flags"] & EPHEMERAL:
            return
        extra: dict[str, Any] = {"channel_type": self.channels[m["channel_id"]]["type"]}
        if "guild_id" in m:
            extra["member"] = self._member(m["author"]["id"])
        self._dispatch("MESSAGE_CREATE", {**self._visible(m), **extra})

    def _dispatch(self, event: str, data: dict[str, Any]) -> None:
        if self._ws is None:
            raise RuntimeError("no bot is connected to the gateway")
        self._seq += 1
        payload = {"op": 0, "t": event, "s": self._seq, "d": data}
        asyncio.get_running_loop().create_task(self._ws.send_str(json.dumps(payload)))

    # ---- what users do -----------------------------------------------------------------------------------------
    def say(self, channel_id: str, user_id: str, content: str = "", *, audio: bytes | None = None,
            filename: str = "clip.mp3", content_type: str = "audio/mpeg", voice: bool = False,
            mention: bool = False, reply_to: str | None = None) -> str:
        """A user's message (a voice message when `voice`: no text, one audio/ogg attachment with duration_secs
        and waveform); a reply pings the replied-to author, as Discord's client does. Its id."""
        attachments, mentions = [], []
        if audio is not None:
            if voice:
                attachments.append(self.attachment(audio, "voice-message.ogg", "audio/ogg", duration_secs=1.5,
                                                   waveform="AAAgQP8gAA=="))
            else:
                attachments.append(self.attachment(audio, filename, content_type))
        if mention:
            content = f"<@{BOT_ID}> {content}".strip()
            mentions.append(self.bot)
        if reply_to is not None and self.messages[reply_to]["author"]["id"] != user_id:
            mentions.append(self.messages[reply_to]["author"])
        m = self._store(channel_id, self.user(user_id), content, flags=IS_VOICE_MESSAGE if voice else 0,
                        attachments=attachments, reference=reply_to, mentions=mentions)
        self._emit(m)
        return str(m["id"])

    def replay(self, message_id: str) -> None:
        """The MESSAGE_CREATE of a user's message dispatched once more, same message id: what a bot sees when
        Discord replays events on a RESUME it had already received, or a new session is sent an event again."""
        self._emit(self.messages[message_id])

    def dm(self, user_id: str, content: str = "", **kw: Any) -> str:
        return self.say(self.dm_channel(user_id), user_id, content, **kw)

    def upload(self, data: bytes, filename: str, content_type: str) -> dict[str, Any]:
        """A file a user picks for a command's attachment option."""
        att = self.attachment(data, filename, content_type, ephemeral=True)
        self.uploads[att["id"]] = att
        return att

    def command(self, name: str, ctype: int = 1) -> dict[str, Any]:
        found = [c for c in self.commands if c["name"] == name and c["type"] == ctype]
        if not found:
            raise LookupError(f"no command {name!r} of type {ctype} is registered")
        return found[0]

    def slash(self, channel_id: str, user_id: str, sub: str, options: list[dict[str, Any]] | None = None,
              locale: str = "en-US") -> str:
        """/earshot <sub> with its options (attachments: ids from `upload`). The interaction's id."""
        cmd = self.command("earshot")
        if sub not in [o["name"] for o in cmd.get("options") or []]:
            raise LookupError(f"/earshot has no subcommand {sub!r}")
        data: dict[str, Any] = {"id": cmd["id"], "name": "earshot", "type": 1,
                                "options": [{"type": 1, "name": sub, "options": options or []}]}
        ids = [o["value"] for o in options or [] if o["type"] == 11]
        if ids:
            data["resolved"] = {"attachments": {i: self.uploads[i] for i in ids}}
        return self._interact(2, channel_id, user_id, data, locale=locale)

    def message_command(self, channel_id: str, user_id: str, target: str, name: str) -> str:
        cmd = self.command(name, 3)
        data = {"id": cmd["id"], "name": name, "type": 3, "target_id": target,
                "resolved": {"messages": {target: self.messages[target]}}}
        return self._interact(2, channel_id, user_id, data, target=target)

    def press(self, channel_id: str, user_id: str, message_id: str, custom_id: str,
              values: list[str] | None = None) -> str:
        """A click on a button (or a pick in a menu) under one of the bot's messages."""
        m = self.messages[message_id]
        found = [c for c in buttons(m) if c.get("custom_id") == custom_id]
        if not found:
            raise LookupError(f"message {message_id} has no component {custom_id!r}")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": found[0]["type"]}
        if values is not None:
            data["values"] = values
        return self._interact(3, channel_id, user_id, data, message=m)

    def _interact(self, itype: int, channel_id: str, user_id: str, data: dict[str, Any], *,
                  message: dict[str, Any] | None = None, target: str | None = None, locale: str = "en-US") -> str:
        ch, iid = self.channels[channel_id], self._id()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(60)
        p: dict[str, Any] = {"id": iid, "application_id": APP_ID, "type": itype, "data": data, "token": token,
                             "version": 1, "channel_id": channel_id,
                             "channel": {k: v for k, v in ch.items() if k != "permission_overwrites"},
                             "app_permissions": str(MEMBER_PERMS), "locale": locale, "entitlements": [],
                             "authorizing_integration_owners": {}, "context": 0 if ch["type"] == 0 else 1,
                             "attachment_size_limit": 10 * 1024 * 1024}
        if ch["type"] == 0:
            p.update(guild_id=GUILD_ID, guild_locale="en-US", guild={"id": GUILD_ID, "locale": "en-US",
                                                                     "features": []},
                     member={**self._member(user_id), "user": self.user(user_id),
                             "permissions": str(self._perms(user_id))})
        else:
            p["user"] = self.user(user_id)
        if message is not None:
            p["message"] = message
        self.interactions[iid] = {"id": iid, "token": token, "t": time.monotonic(), "channel_id": channel_id,
                                  "type": itype, "message": message["id"] if message is not None else None,
                                  "acks": [], "original": None, "followups": [], "target": target, "user_id": user_id,
                                  "deferred": False}
        self._dispatch("INTERACTION_CREATE", p)
        return iid

    def limit(self, route: str, times: int = 1, retry_after: float = 0.3) -> None:
        """Answer the next `times` calls of `route` ("POST /channels/{channel_id}/messages") with a 429."""
        self.limits.setdefault(route, []).extend([retry_after] * times)

    def said(self, channel_id: str | None = None) -> list[dict[str, Any]]:
        """The bot's messages (its posts, interaction responses and followups), oldest first."""
        return [m for m in self.messages.values() if m["author"]["id"] == BOT_ID and not m.get("_deleted")
                and channel_id in (None, m["channel_id"])]

    def interaction(self, iid: str) -> dict[str, Any]:
        """An interaction's record: acks [{type, after, ephemeral}], and its messages (the original first)."""
        it = dict(self.interactions[iid])
        ids = ([it["original"]] if it["original"] else []) + it["followups"]
        it["messages"] = [self.messages[i] for i in ids if not self.messages[i].get("_deleted")]
        return it

    # ---- REST ------------------------------------------------------------------------------------------------
    ROUTES = [
        ("GET", "/users/@me", "get_me", True), ("GET", "/gateway/bot", "get_gateway", True),
        ("GET", "/applications/@me", "get_app", True), ("GET", "/oauth2/applications/@me", "get_app", True),
        ("PUT", "/applications/{app}/commands", "put_commands", True),
        ("POST", "/channels/{channel_id}/messages", "create_message", True),
        ("GET", "/channels/{channel_id}/messages", "list_messages", True),
        ("POST", "/channels/{channel_id}/typing", "typing", True),
        ("POST", "/interactions/{iid}/{token}/callback", "callback", False),
        ("POST", "/webhooks/{app}/{token}", "followup", False),
        ("PATCH", "/webhooks/{app}/{token}/messages/{mid}", "edit_webhook_message", False),
        ("DELETE", "/webhooks/{app}/{token}/messages/{mid}", "edit_webhook_message", False),
    ]

    def _match(self, method: str, path: str) -> tuple[str, str, bool, dict[str, str]] | None:
        parts = path.strip("/").split("/")
        for m, template, handler, auth in self.ROUTES:
            tparts = template.strip("/").split("/")
            if m != method or len(tparts) != len(parts):
                continue
            params: dict[str, str] = {}
            for t, p in zip(tparts, parts, strict=True):
                if t.startswith("{"):
                    params[t[1:-1]] = p
                elif t != p:
                    break
            else:
                return template, handler, auth, params
        return None

    async def api(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        auth = request.headers.get("Authorization")
        call: dict[str, Any] = {"t": time.monotonic(), "method": request.method, "path": path, "route": "",
                                "auth": "missing" if not auth else "ok" if auth == f"Bot {self.token}" else "wrong",
                                "json": None, "files": []}
        self.calls.append(call)
        hit = self._match(request.method, path)
        if hit is None:
            call["status"] = 404
            return refuse(404, 0, "404: Not Found")
        template, handler, needs_auth, params = hit
        call["route"] = f"{request.method} {template}"
        body, files = await _body(request)
        call["json"], call["files"] = body, [{k: v for k, v in f.items() if k != "data"} for f in files]
        if needs_auth and call["auth"] != "ok":
            call["status"] = 401
            return refuse(401, 0, "401: Unauthorized")
        if self.limits.get(call["route"]):
            retry = self.limits[call["route"]].pop(0)
            call["status"] = 429
            return jr({"message": "You are being rate limited.", "retry_after": retry, "global": False}, 429,
                      {"Retry-After": str(max(1, round(retry))), "X-RateLimit-Scope": "user",
                       "X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0",
                       "X-RateLimit-Reset-After": f"{retry:.3f}", "X-RateLimit-Bucket": "stand-in"})
        resp: web.Response = await getattr(self, handler)(request, params, body, files)
        call["status"] = resp.status
        return resp

    async def get_me(self, *_: Any) -> web.Response:
        return jr({**self.bot, "flags": 0, "mfa_enabled": False, "verified": True, "locale": "en-US"})

    async def get_gateway(self, request: web.Request, *_: Any) -> web.Response:
        return jr({"url": f"ws://{request.host}/gateway", "shards": 1,
                   "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 86400000,
                                           "max_concurrency": 1}})

    async def get_app(self, *_: Any) -> web.Response:
        return jr({"id": APP_ID, "name": "earshot", "icon": None, "description": "", "bot_public": True,
                   "bot_require_code_grant": False, "owner": self.user(OWNER_ID), "team": None,
                   "verify_key": "00", "flags": self.app_flags, "bot": self.bot})

    async def put_commands(self, request: web.Request, params: dict[str, str], body: Any, _: Any) -> web.Response:
        """Bulk overwrite: the list replaces every global command."""
        if params["app"] != APP_ID or not isinstance(body, list):
            return refuse(403, 50001, "Missing Access")
        for c in body:
            if int(c.get("type", 1)) == 1 and (not c.get("description") or len(c["name"]) > 32
                                               or c["name"] != c["name"].lower()):
                return refuse(400, 50035, "Invalid Form Body")
        self.commands = [{"id": self._id(), "application_id": APP_ID, "version": self._id(),
                          "type": int(c.get("type", 1)), "name": c["name"], "description": c.get("description") or "",
                          "options": c.get("options") or [],
                          "default_member_permissions": c.get("default_member_permissions"),
                          "dm_permission": c.get("dm_permission", True), "contexts": c.get("contexts"),
                          "integration_types": c.get("integration_types") or [0], "nsfw": bool(c.get("nsfw"))}
                         for c in body]
        return jr(self.commands)

    def _check(self, body: dict[str, Any], files: list[dict[str, Any]]) -> web.Response | None:
        content = body.get("content") or ""
        if len(content) > 2000:
            return refuse(400, 50035, "Invalid Form Body: content BASE_TYPE_MAX_LENGTH")
        if int(body.get("flags") or 0) & IS_VOICE_MESSAGE:
            if self.voice_refused:
                return refuse(400, 50161, "Voice messages must have supporting metadata")
            if content:
                return refuse(400, 50159, "Voice messages cannot have additional content")
            meta = body.get("attachments") or []
            if len(files) != 1 or len(meta) != 1 or not files[0]["content_type"].startswith("audio/"):
                return refuse(400, 50160, "Voice messages must have a single audio attachment")
            if "duration_secs" not in meta[0] or "waveform" not in meta[0]:
                return refuse(400, 50161, "Voice messages must have supporting metadata")
        if not (content or files or body.get("components") or body.get("embeds")):
            return refuse(400, 50006, "Cannot send an empty message")
        for c in buttons(body):
            if len(c.get("custom_id") or "") > 100:
                return refuse(400, 50035, "Invalid Form Body: custom_id")
        return None

    def _attachments(self, files: list[dict[str, Any]], meta: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for i, f in enumerate(files):
            extra = next((m for m in meta if str(m.get("id")) == str(i)), {})
            kind = "audio/ogg" if f["filename"].endswith(".ogg") else f["content_type"]
            out.append(self.attachment(f["data"], f["filename"], kind,
                                       **{k: extra[k] for k in ("duration_secs", "waveform") if k in extra}))
        return out

    async def create_message(self, request: web.Request, params: dict[str, str], body: Any,
                             files: list[dict[str, Any]]) -> web.Response:
        cid, body = params["channel_id"], body or {}
        if cid not in self.channels:
            return refuse(404, 10003, "Unknown Channel")
        if (bad := self._check(body, files)) is not None:
            return bad
        ref = (body.get("message_reference") or {}).get("message_id")
        m = self._store(cid, self.bot, body.get("content") or "", flags=int(body.get("flags") or 0),
                        attachments=self._attachments(files, body.get("attachments") or []),
                        components=body.get("components"), reference=str(ref) if ref else None)
        self._emit(m)
        return jr(m)

    async def list_messages(self, request: web.Request, params: dict[str, str], *_: Any) -> web.Response:
        cid = params["channel_id"]
        found = sorted((m for m in self.messages.values() if m["channel_id"] == cid), key=lambda m: -int(m["id"]))
        return jr([self._visible(m) for m in found[:int(request.query.get("limit", 50))]])

    async def typing(self, *_: Any) -> web.Response:
        return web.Response(status=204, headers={"Via": "1.1 google"})

    async def callback(self, request: web.Request, params: dict[str, str], body: Any,
                       files: list[dict[str, Any]]) -> web.Response:
        it = self.interactions.get(params["iid"])
        if it is None or not hmac.compare_digest(it["token"], params["token"]):
            return refuse(404, 10062, "Unknown interaction")
        after = time.monotonic() - it["t"]
        if after > 3.0:
            return refuse(404, 10062, "Unknown interaction")
        if it["acks"]:
            return refuse(400, 40060, "Interaction has already been acknowledged.")
        kind, data = int(body["type"]), body.get("data") or {}
        flags = int(data.get("flags") or 0)
        it["acks"].append({"type": kind, "after": after, "ephemeral": bool(flags & EPHEMERAL)})
        message = None
        if kind in (4, 5):
            if kind == 4 and (bad := self._check(data, files)) is not None:
                it["acks"].pop()
                return bad
            message = self._store(it["channel_id"], self.bot, data.get("content") or "",
                                  flags=flags | (LOADING if kind == 5 else 0), components=data.get("components"),
                                  reference=it["target"],
                                  interaction_metadata=self._metadata(it))
            it["original"], it["deferred"] = message["id"], kind == 5
            if kind == 4:
                self._emit(message)
        answer: dict[str, Any] = {"interaction": {"id": it["id"], "type": 2,
                                                  "response_message_id": message and message["id"],
                                                  "response_message_loading": kind == 5,
                                                  "response_message_ephemeral": bool(flags & EPHEMERAL)}}
        if message is not None:
            answer["resource"] = {"type": kind, "message": message}
        return jr(answer)

    def _metadata(self, it: dict[str, Any]) -> dict[str, Any]:
        """A response message's interaction_metadata; from a button or menu, with the message it was under."""
        meta: dict[str, Any] = {"id": it["id"], "type": it["type"], "user": self.user(it["user_id"]),
                                "authorizing_integration_owners": {}}
        if it["type"] == 3 and it["message"] is not None:
            meta["interacted_message_id"] = it["message"]
        return meta

    def _by_token(self, token: str) -> dict[str, Any] | None:
        return next((i for i in self.interactions.values() if hmac.compare_digest(i["token"], token)), None)

    async def followup(self, request: web.Request, params: dict[str, str], body: Any,
                       files: list[dict[str, Any]]) -> web.Response:
        """A followup; the first after a deferral fills the "thinking" original instead."""
        it, body = self._by_token(params["token"]), body or {}
        if it is None or params["app"] != APP_ID:
            return refuse(404, 10015, "Unknown Webhook")
        if not it["acks"]:
            return refuse(404, 10015, "Unknown Webhook")
        if (bad := self._check(body, files)) is not None:
            return bad
        flags = int(body.get("flags") or 0)
        attachments = self._attachments(files, body.get("attachments") or [])
        if it["deferred"]:
            m = self.messages[it["original"]]
            m.update(content=body.get("content") or "", components=body.get("components") or [],
                     attachments=attachments, flags=(m["flags"] & ~LOADING) | flags)
            it["deferred"] = False
        else:
            m = self._store(it["channel_id"], self.bot, body.get("content") or "", flags=flags,
                            attachments=attachments, components=body.get("components"))
            it["followups"].append(m["id"])
        self._emit(m)
        return jr(m)

    async def edit_webhook_message(self, request: web.Request, params: dict[str, str], body: Any,
                                   files: list[dict[str, Any]]) -> web.Response:
        it = self._by_token(params["token"])
        if it is None or not it["original"]:
            return refuse(404, 10015, "Unknown Webhook")
        mid = it["original"] if params["mid"] == "@original" else params["mid"]
        m = self.messages[mid]
        if request.method == "DELETE":
            m["_deleted"] = True
            return web.Response(status=204, headers={"Via": "1.1 google"})
        body = body or {}
        if "content" in body and len(body["content"] or "") > 2000:
            return refuse(400, 50035, "Invalid Form Body")
        m.update({k: body[k] for k in ("content", "components") if k in body})
        m["flags"] &= ~LOADING
        it["deferred"] = False
        return jr(m)

    # ---- the CDN -----------------------------------------------------------------------------------------------
    async def cdn(self, request: web.Request) -> web.Response:
        aid, q = request.match_info["aid"], request.query
        self.cdn_fetches.append({"id": aid, "authorization": request.headers.get("Authorization")})
        want = hmac.new(self._secret, f"{aid}:{q.get('ex', '')}".encode(), hashlib.sha256).hexdigest()
        if aid not in self.blobs or not hmac.compare_digest(want, q.get("hm", "")):
            return web.Response(status=404, text="This content is no longer available.")
        return web.Response(body=self.blobs[aid], content_type="application/octet-stream")

    # ---- the Gateway -------------------------------------------------------------------------------------------
    async def gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            payload = json.loads(msg.data)
            if payload["op"] == 1:
                await ws.send_str(json.dumps({"op": 11}))
            elif payload["op"] == 2:
                d = payload["d"]
                if d.get("token") != self.token:
                    await ws.close(code=4004, message=b"Authentication failed.")
                    break
                if d["intents"] & MESSAGE_CONTENT and not self.app_flags & (3 << 18):
                    await ws.close(code=4014, message=b"Disallowed intent(s).")
                    break
                self.intents, self._ws, self._seq = d["intents"], ws, 0
                self.identifies += 1
                ready = {"v": 10, "user": self.bot, "guilds": [{"id": GUILD_ID, "unavailable": True}],
                         "session_id": secrets.token_hex(16), "resume_gateway_url": f"ws://{request.host}/gateway",
                         "shard": d.get("shard") or [0, 1], "application": {"id": APP_ID, "flags": self.app_flags},
                         "private_channels": [], "relationships": [], "user_settings": {}}
                self._dispatch("READY", ready)
                self._dispatch("GUILD_CREATE", self._guild())
                self.identified.set()
        if self._ws is ws:
            self._ws = None
        return ws


async def _body(request: web.Request) -> tuple[Any, list[dict[str, Any]]]:
    """The JSON body, or a multipart form's payload_json and its files[n]."""
    if request.content_type.startswith("multipart/"):
        payload: Any = None
        files: list[dict[str, Any]] = []
        reader = await request.multipart()
        async for part in reader:
            if part.name == "payload_json":
                payload = json.loads(await part.text())  # type: ignore[union-attr]
            elif part.name and part.name.startswith("files["):
                files.append({"name": part.name, "filename": part.filename or "",   # type: ignore[union-attr]
                              "content_type": part.headers.get("Content-Type", ""),
                              "data": await part.read()})  # type: ignore[union-attr]
        return payload, files
    raw = await request.read()
    return (json.loads(raw) if raw else None), []
