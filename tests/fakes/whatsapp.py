"""A stand-in for WhatsApp's Cloud API (Meta's Graph API) and the signed webhooks Meta sends.

The bot under test points WHATSAPP_API_URL at `<url>/v23.0`. It checks what the bot sends the way the Graph API
documents it (the bearer token on every call, `messaging_product`, a recipient, a type, text up to 4096
characters, `context: {"message_id"}`, reply buttons: 1-3, titles up to 20 and unique, list rows up to 10,
uploads by multipart with a type WhatsApp takes) and refuses in Graph's error shape. Tests:

    wa = FakeWhatsApp()
    async with serving(wa):                                  # tests/conftest.py
        media = wa.add_media(ogg_bytes, "audio/ogg; codecs=opus")
        body, wamid = wa.message("15551234567", "audio", audio=media)
        await client.post(webhook, content=body, headers=wa.signed(APP_SECRET, body))
        wa.sent, wa.texts(to), wa.reads, wa.uploads, wa.calls, wa.attempts(to)

`fail_next(code)` makes the next call of a kind fail with a Graph error code (and that code's HTTP status);
`media_base` sends media URLs to another host (a `ForeignHost` that records what it is sent).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

VERSION = "v23.0"
PHONE_NUMBER_ID = "109876543210987"
BUSINESS_NUMBER = "15550001111"           # as webhooks' metadata shows it
SHOWN_NUMBER = "+1 555-000-1111"          # as GET <phone-number-id> shows it
VERIFIED_NAME = "earshot test"
ACCEPTED_UPLOADS = {"audio/aac", "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg", "text/plain",
                    "application/pdf", "image/jpeg", "image/png", "video/mp4"}
# code -> HTTP status Meta answers it with (the reference's table)
STATUS = {4: 429, 100: 400, 190: 401, 130429: 400, 131000: 500, 131009: 400, 131016: 503, 131047: 400, 131056: 400}


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def digits(value: object) -> str:
    return re.sub(r"\D", "", str(value))


def words_of(message: dict[str, Any]) -> str:
    """What the user reads of a message the bot sent."""
    kind = message.get("type", "")
    part = message.get(kind) or {}
    if kind == "text":
        return str(part.get("body", ""))
    if kind == "interactive":
        return str((part.get("body") or {}).get("text", ""))
    return str(part.get("caption", ""))


@dataclass
class Failure:
    code: int
    kind: str
    times: int
    status: int | None = None


class GraphRefusal(Exception):
    def __init__(self, code: int, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status or STATUS.get(code, 400)


class FakeWhatsApp:
    def __init__(self, token: str = "EAAtest-token-4242", phone_number_id: str = PHONE_NUMBER_ID) -> None:
        self.token = token
        self.phone_number_id = phone_number_id
        self.url = ""
        self.media_base: str | None = None
        self.media: dict[str, dict[str, Any]] = {}
        self.calls: list[dict[str, Any]] = []        # every request: kind, path, headers, status
        self.sent: list[dict[str, Any]] = []         # messages accepted, with their "id"
        self.reads: list[dict[str, Any]] = []        # read receipts (with typing indicators)
        self.uploads: list[dict[str, Any]] = []      # media uploaded: id, type, filename, data
        self.failures: list[Failure] = []
        self._ids = itertools.count(7001)
        self.app = web.Application(client_max_size=32 * 1024 * 1024)
        self.app.router.add_post("/{version}/{node}/messages", self._messages)
        self.app.router.add_post("/{version}/{node}/media", self._upload)
        self.app.router.add_get("/{version}/{node}", self._node)
        self.app.router.add_get("/attachments/{mid}", self._download)

    # --- what tests set up and send --------------------------------------------------------------
    def add_media(self, data: bytes, mime_type: str, filename: str | None = None) -> str:
        media_id = str(next(self._ids)) + secrets.token_hex(3).translate(str.maketrans("abcdef", "123456"))
        self.media[media_id] = {"data": data, "mime_type": mime_type, "filename": filename}
        return media_id

    def fail_next(self, code: int, *, on: str = "send", times: int = 1, status: int | None = None) -> None:
        """The next `times` calls of kind `on` (send, read, upload, media, download, phone) fail with Graph `code`."""
        self.failures.append(Failure(code, on, times, status))

    def message(self, wa_id: str, kind: str = "text", *, wamid: str | None = None, context: dict | None = None,
                **fields: Any) -> tuple[bytes, str]:
        """A webhook body carrying one message from `wa_id`, and its wamid (`wamid=` repeats one). `text="…"` and
        `audio=<media id>` (video, document, image alike) are filled out as Meta does."""
        wamid = wamid or "wamid.HBgL" + base64.b64encode(secrets.token_bytes(18)).decode()
        msg: dict[str, Any] = {"from": wa_id, "id": wamid, "timestamp": str(int(time.time())), "type": kind}
        if context:
            msg["context"] = context
        for key, value in fields.items():
            if key == kind == "text" and isinstance(value, str):
                value = {"body": value}
            elif key == kind and isinstance(value, str) and value in self.media:
                value = self._media_object(kind, value)
            msg[key] = value
        return self.envelope({"contacts": [{"profile": {"name": "Zoë"}, "wa_id": wa_id}], "messages": [msg]}), wamid

    def tap_body(self, wa_id: str, sent: dict[str, Any], index: int) -> tuple[bytes, str]:
        """The user taps button (or list row) `index` of `sent`, an interactive message the bot sent."""
        interactive = sent["interactive"]
        if interactive["type"] == "list":
            row = [r for s in interactive["action"]["sections"] for r in s["rows"]][index]
            reply = {"type": "list_reply", "list_reply": {"id": row["id"], "title": row["title"]}}
        else:
            button = interactive["action"]["buttons"][index]["reply"]
            reply = {"type": "button_reply", "button_reply": {"id": button["id"], "title": button["title"]}}
        return self.message(wa_id, "interactive", interactive=reply,
                            context={"from": BUSINESS_NUMBER, "id": sent["id"]})

    def status_body(self, wamid: str, wa_id: str, status: str, errors: list[dict] | None = None) -> bytes:
        entry: dict[str, Any] = {"id": wamid, "status": status, "timestamp": str(int(time.time())),
                                 "recipient_id": wa_id}
        if errors:
            entry["errors"] = errors
        return self.envelope({"statuses": [entry]})

    def envelope(self, value: dict[str, Any]) -> bytes:
        """Compact JSON with non-ASCII escaped, as Meta sends it."""
        metadata = {"display_phone_number": BUSINESS_NUMBER, "phone_number_id": self.phone_number_id}
        return json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "100200300", "changes": [
            {"field": "messages", "value": {"messaging_product": "whatsapp", "metadata": metadata, **value}}]}]},
            separators=(",", ":")).encode()

    @staticmethod
    def signed(secret: str, body: bytes) -> dict[str, str]:
        return {"Content-Type": "application/json", "X-Hub-Signature-256": signature(secret, body)}

    # --- what tests read -------------------------------------------------------------------------
    def said(self, wa_id: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if digits(m["to"]) == digits(wa_id)]

    def texts(self, wa_id: str) -> list[str]:
        return [words_of(m) for m in self.said(wa_id)]

    def attempts(self, wa_id: str) -> list[dict[str, Any]]:
        """Every try at sending `wa_id` a message, refused ones too."""
        return [c for c in self.of_kind("send") if digits((c.get("json") or {}).get("to")) == digits(wa_id)]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["kind"] == kind]

    # --- the API ---------------------------------------------------------------------------------
    def _media_object(self, kind: str, media_id: str) -> dict[str, Any]:
        m = self.media[media_id]
        out: dict[str, Any] = {"mime_type": m["mime_type"], "id": media_id,
                               "sha256": base64.b64encode(hashlib.sha256(m["data"]).digest()).decode()}
        if kind == "audio":
            out["voice"] = m["mime_type"].startswith("audio/ogg")
        if kind == "document":
            out["filename"] = m["filename"] or "file"
        return out

    def _record(self, request: web.Request, kind: str, **extra: Any) -> dict[str, Any]:
        call = {"kind": kind, "method": request.method, "path": request.path_qs, "headers": dict(request.headers),
                "status": 200, "t": time.time(), **extra}
        self.calls.append(call)
        return call

    def _gate(self, request: web.Request, call: dict[str, Any]) -> None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            raise GraphRefusal(190, "Invalid OAuth access token - Cannot parse access token")
        if request.match_info.get("version") not in (None, VERSION):
            raise GraphRefusal(100, f"Unknown version {request.match_info.get('version')}")
        for f in self.failures:
            if f.times > 0 and f.kind == call["kind"]:
                f.times -= 1
                raise GraphRefusal(f.code, f"(#{f.code}) injected failure", f.status)

    @staticmethod
    def _error(call: dict[str, Any], err: GraphRefusal) -> web.Response:
        call["status"] = err.status
        call["code"] = err.code
        return web.json_response({"error": {"message": err.message, "type": "OAuthException", "code": err.code,
                                            "fbtrace_id": "A" + secrets.token_hex(8)}}, status=err.status)

    async def _messages(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        is_read = isinstance(body, dict) and body.get("status") == "read"
        call = self._record(request, "read" if is_read else "send", json=body)
        try:
            self._gate(request, call)
            if request.match_info["node"] != self.phone_number_id:
                raise GraphRefusal(100, "Unsupported post request: no such phone number")
            if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp":
                raise GraphRefusal(100, "(#100) The parameter messaging_product is required.")
            if is_read:
                if not body.get("message_id") or body.get("typing_indicator", {"type": "text"}) != {"type": "text"}:
                    raise GraphRefusal(100, "(#100) message_id is required; typing_indicator is {type: text}")
                self.reads.append(body)
                return web.json_response({"success": True})
            self._check(body)
        except GraphRefusal as err:
            return self._error(call, err)
        wamid = "wamid.HBgL" + base64.b64encode(secrets.token_bytes(18)).decode()
        self.sent.append({**body, "id": wamid, "t": time.time()})
        return web.json_response({"messaging_product": "whatsapp", "contacts": [
            {"input": body["to"], "wa_id": digits(body["to"])}], "messages": [{"id": wamid}]})

    def _check(self, body: dict[str, Any]) -> None:
        if not re.fullmatch(r"\+?\d{6,15}", str(body.get("to", ""))):
            raise GraphRefusal(100, "(#100) The parameter to is required (a phone number or WhatsApp id).")
        kind = body.get("type")
        part = body.get(kind) if isinstance(kind, str) else None
        if not isinstance(part, dict):
            raise GraphRefusal(100, f"(#100) The parameter {kind or 'type'} is required.")
        context = body.get("context")
        if context is not None and not (isinstance(context, dict) and set(context) == {"message_id"}):
            raise GraphRefusal(100, "(#100) context must be {message_id}")
        if kind == "text" and not 1 <= len(str(part.get("body") or "")) <= 4096:
            raise GraphRefusal(100, "(#100) text.body must be 1 to 4096 characters long.")
        if kind in ("audio", "document") and part.get("id") not in self.media:
            raise GraphRefusal(100, f"(#100) {kind}.id is not media uploaded to this number.")
        if kind == "interactive":
            self._check_interactive(part)

    @staticmethod
    def _check_interactive(part: dict[str, Any]) -> None:
        body_text = str((part.get("body") or {}).get("text") or "")
        action = part.get("action") or {}
        if part.get("type") == "button":
            buttons = [b.get("reply") or {} for b in action.get("buttons") or [] if b.get("type") == "reply"]
            titles = [str(b.get("title") or "") for b in buttons]
            ids = [str(b.get("id") or "") for b in buttons]
            if not (1 <= len(buttons) <= 3 and all(1 <= len(t) <= 20 for t in titles)
                    and len(set(titles)) == len(titles) and 1 <= len(body_text) <= 1024
                    and all(1 <= len(i) <= 256 and i == i.strip() for i in ids)):
                raise GraphRefusal(131009, "(#131009) Parameter value is not valid: reply buttons")
        elif part.get("type") == "list":
            rows = [r for s in action.get("sections") or [] for r in s.get("rows") or []]
            if not (1 <= len(rows) <= 10 and 1 <= len(str(action.get("button") or "")) <= 20
                    and all(1 <= len(str(r.get("title") or "")) <= 24 and 1 <= len(str(r.get("id") or "")) <= 200
                            for r in rows) and 1 <= len(body_text) <= 4096):
                raise GraphRefusal(131009, "(#131009) Parameter value is not valid: list")
        else:
            raise GraphRefusal(100, "(#100) interactive.type must be button or list here")

    async def _upload(self, request: web.Request) -> web.Response:
        call = self._record(request, "upload")
        try:
            self._gate(request, call)
            if not request.content_type.startswith("multipart/"):
                raise GraphRefusal(100, "(#100) The parameter file is required.")
            fields: dict[str, str] = {}
            file: dict[str, Any] | None = None
            async for part in await request.multipart():
                data = await part.read()  # type: ignore[union-attr]
                if part.name == "file":
                    file = {"filename": part.filename, "content_type": part.headers.get("Content-Type"),
                            "data": bytes(data)}
                elif part.name:
                    fields[part.name] = bytes(data).decode()
            if fields.get("messaging_product") != "whatsapp" or file is None or not file["data"]:
                raise GraphRefusal(100, "(#100) messaging_product and file are required.")
            mime = fields.get("type", "").split(";")[0].strip()
            if mime not in ACCEPTED_UPLOADS:
                raise GraphRefusal(100, f"(#100) Param file must be a file of a type WhatsApp takes, not {mime!r}.")
        except GraphRefusal as err:
            return self._error(call, err)
        media_id = self.add_media(file["data"], mime, file["filename"])
        self.uploads.append({"id": media_id, "type": mime, **file})
        return web.json_response({"id": media_id})

    async def _node(self, request: web.Request) -> web.Response:
        node = request.match_info["node"]
        kind = "phone" if node == self.phone_number_id else "media"
        call = self._record(request, kind)
        try:
            self._gate(request, call)
            if kind == "phone":
                wanted = request.query.get("fields", "display_phone_number,verified_name").split(",")
                info = {"display_phone_number": SHOWN_NUMBER, "verified_name": VERIFIED_NAME}
                return web.json_response({**{k: info[k] for k in wanted if k in info}, "id": node})
            media = self.media.get(node)
            if media is None:
                raise GraphRefusal(100, f"Object with ID '{node}' does not exist")
        except GraphRefusal as err:
            return self._error(call, err)
        base = self.media_base or self.url
        return web.json_response({
            "messaging_product": "whatsapp", "url": f"{base}/attachments/{node}?ext={int(time.time()) + 300}",
            "mime_type": media["mime_type"], "sha256": hashlib.sha256(media["data"]).hexdigest(),
            "file_size": str(len(media["data"])), "id": node})

    async def _download(self, request: web.Request) -> web.Response:
        call = self._record(request, "download")
        try:
            self._gate(request, call)
        except GraphRefusal as err:
            return self._error(call, err)
        media = self.media.get(request.match_info["mid"])
        if media is None:
            call["status"] = 404
            return web.Response(status=404)
        return web.Response(body=media["data"], content_type=media["mime_type"].split(";")[0])


class ForeignHost:
    """Somewhere that is neither the Graph API nor Meta's media hosts: it records every request it gets."""

    def __init__(self, body: bytes = b"OggS") -> None:
        self.body = body
        self.url = ""
        self.hits: list[dict[str, Any]] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._any)

    async def _any(self, request: web.Request) -> web.Response:
        self.hits.append({"path": request.path_qs, "headers": dict(request.headers)})
        return web.Response(body=self.body, content_type="audio/ogg")
