"""A loopback stand-in for the part of the Telegram Bot API earshot uses, driven by the real PTB client.

Methods live at /bot<token>/<method> and files at /file/bot<token>/<path>, like api.telegram.org.
Tests push users' messages with `push(...)` (delivered by getUpdates long polling, or POSTed to the
webhook once one is set) and read what the bot said with `said(chat_id)`. It checks what Telegram
checks and earshot could get wrong: the token, HTML entities, the 4,096-character limit, the 20 MB
download cap, flood control (scripted per method with `flood(...)`).
"""
from __future__ import annotations

import asyncio
import html
import itertools
import json
import re
import time
from typing import Any

import aiohttp
from aiohttp import web

DOWNLOAD_LIMIT = 20 * 1024 * 1024
UPDATE_IDS = itertools.count(500)
ANONYMOUS_ADMIN_ID = 1087968824           # GroupAnonymousBot: the "from" of every anonymous admin's message
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
# tags Telegram's HTML parse mode accepts; anything else is "unsupported start tag"
HTML_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler", "a", "code",
             "pre", "blockquote", "tg-emoji"}
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s[^<>]*)?)>")
_ENTITY = re.compile(r"&(lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);")
# parameters PTB sends as JSON strings inside a form body
_JSON_PARAMS = {"reply_parameters", "commands", "allowed_updates", "entities", "reply_markup", "scope",
                "link_preview_options"}


def html_problem(text: str) -> str | None:
    """Telegram's complaint about HTML `text`, or None. Returns the plain text length check's input too."""
    stack: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "<":
            m = _TAG.match(text, i)
            if not m:
                return f"Bad Request: can't parse entities: Unsupported start tag at byte offset {i}"
            closing, tag = m.group(1), m.group(2).lower()
            if tag not in HTML_TAGS:
                return f'Bad Request: can\'t parse entities: Unsupported start tag "{tag}" at byte offset {i}'
            if closing:
                if not stack or stack.pop() != tag:
                    return f'Bad Request: can\'t parse entities: Unexpected end tag at byte offset {i}'
            else:
                stack.append(tag)
            i = m.end()
        elif ch == "&":
            m = _ENTITY.match(text, i)
            if not m:
                return f"Bad Request: can't parse entities: Unsupported start of an entity at byte offset {i}"
            i = m.end()
        elif ch == ">":
            return f"Bad Request: can't parse entities: Unexpected > at byte offset {i}"
        else:
            i += 1
    if stack:
        return f'Bad Request: can\'t parse entities: Can\'t find end tag corresponding to start tag "{stack[-1]}"'
    return None


def visible_length(text: str, parse_mode: str | None) -> int:
    """Length as Telegram counts it: after entity parsing, in UTF-16 code units."""
    if parse_mode and parse_mode.upper() == "HTML":
        text = html.unescape(_TAG.sub("", text))
    return len(text.encode("utf-16-le")) // 2


def _entities(text: str) -> list[dict]:
    """The entities Telegram would attach: a leading /command and every @mention."""
    out = []
    m = re.match(r"/[A-Za-z0-9_]+(@[A-Za-z0-9_]+)?", text)
    if m:
        out.append({"type": "bot_command", "offset": 0, "length": m.end()})
    for m in re.finditer(r"(?<![/\w])@[A-Za-z0-9_]{3,}", text):
        out.append({"type": "mention", "offset": m.start(), "length": m.end() - m.start()})
    return out


# methods that take an inline keyboard, checked as Telegram checks it before anything is sent
MARKUP_METHODS = {"sendmessage", "sendvoice", "senddocument", "editmessagetext", "editmessagereplymarkup"}
CALLBACK_DATA_LIMIT = 64              # bytes
ANSWER_TEXT_LIMIT = 200               # characters of an answerCallbackQuery notification
_BUTTON_ACTIONS = ("callback_data", "url", "switch_inline_query", "switch_inline_query_current_chat",
                   "callback_game", "pay", "web_app", "login_url", "copy_text", "switch_inline_query_chosen_chat")


def reply_markup_problem(markup: Any) -> str | None:
    """Telegram's complaint about an inline keyboard, or None: each button has text and exactly one action,
    and callback_data is 1-64 bytes."""
    if not markup or not isinstance(markup, dict) or "inline_keyboard" not in markup:
        return None                   # no markup, or a reply keyboard earshot doesn't send
    rows = markup["inline_keyboard"]
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        return "Bad Request: can't parse reply keyboard markup JSON object"
    for row in rows:
        for button in row:
            if not isinstance(button, dict) or not isinstance(button.get("text"), str):
                return "Bad Request: can't parse inline keyboard button: Field \"text\" must be of type String"
            if not button["text"].strip():
                return "Bad Request: BUTTON_TEXT_EMPTY"
            actions = [a for a in _BUTTON_ACTIONS if a in button]
            if not actions:
                return ("Bad Request: can't parse inline keyboard button: Text buttons are unallowed in the "
                        "inline keyboard")
            if "callback_data" in button:
                data = button["callback_data"]
                if not isinstance(data, str) or not 1 <= len(data.encode()) <= CALLBACK_DATA_LIMIT:
                    return "Bad Request: BUTTON_DATA_INVALID"
    return None


def _upload_part(part: Any, data: bytes) -> dict:
    """A file uploaded in a multipart body (InputFile): its name, type and bytes."""
    return {"filename": part.filename, "content_type": part.headers.get("Content-Type"), "data": bytes(data)}


class FakeTelegram:
    def __init__(self, token: str = "123456:TEST-earshot-token", *, username: str = "earshot_test_bot",
                 bot_id: int = 777000111) -> None:
        self.token = token
        self.bot = {"id": bot_id, "is_bot": True, "first_name": "earshot", "username": username,
                    "can_join_groups": True, "can_read_all_group_messages": False,
                    "supports_inline_queries": False}
        self.calls: list[dict] = []               # every API call: {"t", "method", "params"}
        self.messages: dict[tuple[int, int], dict] = {}
        self.deleted: list[tuple[int, int]] = []
        self.edits: list[dict] = []               # {"t", "chat_id", "message_id", "text"}
        self.voices: list[dict] = []              # voice notes sent: {"chat_id", "ogg", "caption", "message_id"}
        self.commands: list[dict] = []            # the default menu (no language_code)
        self.menus: dict[str, list[dict]] = {}     # every menu set, by language_code ("" the default)
        self.members: dict[tuple[int, int], str] = {}   # (chat, user) -> getChatMember status; default "member"
        self.webhook: dict | None = None
        self.webhook_error: str | None = None      # getWebhookInfo's last_error_message, once a delivery failed
        self.latency = 0.0                        # seconds added to each bot call
        self._files: dict[str, tuple[str, bytes]] = {}
        self._flood: dict[str, list[int]] = {}    # method -> [times left, retry_after]
        self._failures: dict[str, list[Any]] = {} # method -> [calls to let through, times left, status, description]
        self._updates: list[dict] = []
        self._ids = itertools.count(1)
        self._update_ids = UPDATE_IDS     # a bot's update ids never repeat, even across the stand-in's restarts
        self.url = ""                             # set once served
        self.pushed = 0                           # updates sent to the bot so far
        self.last_update_id = 0
        self._new = asyncio.Condition()
        self._session: aiohttp.ClientSession | None = None
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_route("*", "/bot{token}/{method}", self._api)
        self.app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        self.app.on_shutdown.append(self._wake_pollers)
        self.app.on_cleanup.append(self._close)
        self._closing = False
        self.callback_queries: dict[str, dict] = {}    # query id -> the callback_query pushed
        self.callback_answers: dict[str, dict] = {}    # query id -> answerCallbackQuery's parameters
        self.markup_edits: list[dict] = []            # editMessageReplyMarkup calls that changed a message
        # getUpdates allows one consumer: a second one polling at the same time gets 409 Conflict, as from Telegram
        self.conflicts = 0
        self.forget_confirmed = True      # False: confirmed updates stay, as when the poller died before confirming
        self._polls: dict[int, web.Request] = {}     # id -> a getUpdates request being answered

    # ---- what tests do ------------------------------------------------------------------
    def push(self, chat_id: int, *, user_id: int | None = None, text: str | None = None,
             caption: str | None = None, kind: str | None = None, data: bytes | None = None,
             mime: str | None = None, file_name: str | None = None, file_size: int | None = None,
             duration: int = 3, chat_type: str = "private", thread_id: int | None = None,
             reply_to: int | None = None, username: str | None = None, chat_username: str | None = None,
             date: float | None = None, forward_of: tuple[int, int] | None = None,
             anonymous_admin: bool = False, language_code: str | None = None) -> int:
        """A user's message arrives; returns its message_id. kind: voice, audio, video_note, video, document,
        or animation (a GIF: Telegram sends it as `animation` plus a video/mp4 `document`, same file).

        anonymous_admin: sent by a group admin posting as the group (from GroupAnonymousBot, with
        sender_chat the group itself), as Telegram does for anonymous admins.

        username / chat_username: the sender's and the (public) chat's @username, without the @.
        date: when it was sent (Unix time), if not now.
        language_code: the sender's app language (an IETF tag), as Telegram sends it when it knows it.
        forward_of: (chat_id, message_id) of a message whose media this one forwards: the same file_id and
        file_unique_id, as Telegram keeps them for a forwarded file."""
        user_id = user_id if user_id is not None else abs(chat_id)
        mid = next(self._ids)
        chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
        if chat_type == "private":
            chat["first_name"] = f"user{user_id}"
        else:
            chat["title"] = f"group {chat_id}"
            if thread_id is not None:
                chat["is_forum"] = True
        if chat_username is not None:
            chat["username"] = chat_username
        sender: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"}
        if language_code is not None:
            sender["language_code"] = language_code
        if username is not None:
            sender["username"] = username
            if chat_type == "private":
                chat["username"] = username
        if anonymous_admin:
            sender = {"id": ANONYMOUS_ADMIN_ID, "is_bot": True, "first_name": "Group",
                      "username": "GroupAnonymousBot"}
        msg: dict[str, Any] = {"message_id": mid, "date": int(time.time() if date is None else date), "chat": chat,
                               "from": sender}
        if anonymous_admin:
            msg["sender_chat"] = {k: v for k, v in chat.items() if k != "is_forum"}
        if thread_id is not None:
            msg["message_thread_id"] = thread_id
            msg["is_topic_message"] = True
        if text is not None:
            msg["text"] = text
            if ents := _entities(text):
                msg["entities"] = ents
        if caption is not None:
            msg["caption"] = caption
            if ents := _entities(caption):
                msg["caption_entities"] = ents
        if kind == "animation":
            gif = self._media("animation", mid, data or b"", mime, file_name, file_size, duration)
            msg["animation"] = gif
            msg["document"] = {k: v for k, v in gif.items() if k not in ("width", "height", "duration")}
        elif kind is not None:
            msg[kind] = self._media(kind, mid, data or b"", mime, file_name, file_size, duration)
        if forward_of is not None:
            self._forwarded(msg, self.messages[forward_of])
        if reply_to is not None:
            msg["reply_to_message"] = self.messages[(chat_id, reply_to)]
        self.messages[(chat_id, mid)] = msg
        self.deliver({"update_id": next(self._update_ids), "message": msg})
        return mid

    def set_member(self, chat_id: int, user_id: int, status: str) -> None:
        """What getChatMember says of the user in the chat: creator, administrator, member, left…"""
        self.members[(chat_id, user_id)] = status

    def flood(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """The next `times` calls of `method` get 429 Too Many Requests with parameters.retry_after."""
        self._flood[method.lower()] = [times, retry_after]

    def fail(self, method: str, code: int = 500, description: str = "Internal Server Error",
             times: int = 1, after: int = 0) -> None:
        """After `after` more calls of `method` succeed, the next `times` fail with this HTTP status and description
        (after=1: the second piece of a long answer fails, the first went out)."""
        self._failures[method.lower()] = [after, times, code, description]

    def said(self, chat_id: int) -> list[dict]:
        """The bot's messages still in the chat, oldest first (edits applied, deleted ones gone)."""
        return [m for (c, _), m in sorted(self.messages.items(), key=lambda kv: kv[0][1])
                if c == chat_id and m["from"]["id"] == self.bot["id"]]

    def texts(self, chat_id: int) -> list[str]:
        return [m["text"] for m in self.said(chat_id) if "text" in m]

    def called(self, method: str) -> list[dict]:
        return [c["params"] for c in self.calls if c["method"].lower() == method.lower()]

    def confirmed(self, update_id: int) -> bool:
        """Whether a getUpdates call has confirmed the update (asked from a later offset)."""
        return any(int(p.get("offset") or 0) > update_id for p in self.called("getUpdates"))

    @property
    def pending_updates(self) -> int:
        return len(self._updates)

    # ---- internals ----------------------------------------------------------------------
    def _media(self, kind: str, mid: int, data: bytes, mime: str | None, file_name: str | None,
               file_size: int | None, duration: int) -> dict:
        fid = f"{kind}-{mid}-fid"
        self._files[fid] = (f"{kind}s/file_{mid}", data)
        media: dict[str, Any] = {"file_id": fid, "file_unique_id": f"u{mid}",
                                 "file_size": file_size if file_size is not None else len(data)}
        if kind in ("voice", "audio", "video_note", "video"):
            media["duration"] = duration
        if kind == "voice":
            media["mime_type"] = mime or "audio/ogg"
        elif kind == "audio":
            media.update(mime_type=mime or "audio/mpeg", file_name=file_name or "track.mp3")
        elif kind == "video_note":
            media["length"] = 240
        elif kind == "video":
            media.update(width=320, height=240, mime_type=mime or "video/mp4")
        elif kind == "animation":
            media.update(width=320, height=240, duration=duration, mime_type=mime or "video/mp4",
                         file_name=file_name or "funny.gif.mp4")
        elif kind == "document":
            media.update(mime_type=mime or "application/octet-stream", file_name=file_name or "file.bin")
        return media

    @staticmethod
    def _forwarded(msg: dict, original: dict) -> None:
        for kind in ("voice", "audio", "video_note", "video", "document"):
            if kind in original:
                msg[kind] = dict(original[kind])
        msg["forward_origin"] = {"type": "user", "date": original["date"], "sender_user": original["from"]}

    def deliver(self, update: dict) -> None:
        """Hand the bot a raw update, as it is (the hostile tests send malformed ones)."""
        self.pushed += 1
        if isinstance(update, dict) and type(update.get("update_id")) is int:
            self.last_update_id = max(self.last_update_id, update["update_id"])
        if self.webhook:
            asyncio.get_running_loop().create_task(self._post_webhook(update))
            return
        self._updates.append(update)

        async def wake() -> None:
            async with self._new:
                self._new.notify_all()
        asyncio.get_running_loop().create_task(wake())

    async def _post_webhook(self, update: dict) -> None:
        assert self.webhook is not None
        if not self._allowed(update, self.webhook.get("allowed_updates")):
            return
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {}
        if self.webhook.get("secret_token"):
            headers["X-Telegram-Bot-Api-Secret-Token"] = self.webhook["secret_token"]
        for _ in range(50):  # Telegram retries deliveries the webhook did not accept
            try:
                async with self._session.post(self.webhook["url"], json=update, headers=headers) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)

    async def _wake_pollers(self, app: web.Application) -> None:
        """Shutting down: end long polls now rather than at their timeout."""
        self._closing = True
        async with self._new:
            self._new.notify_all()

    async def _close(self, app: web.Application) -> None:
        if self._session:
            await self._session.close()

    async def _params(self, request: web.Request) -> dict:
        params: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            raw = await request.text()
            params.update(json.loads(raw) if raw else {})
        elif request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                data = await part.read()
                # an uploaded file stays bytes (sendVoice, sendDocument); other fields are text
                params[part.name] = _upload_part(part, data) if part.filename else data.decode(errors="replace")
        elif request.can_read_body:
            params.update((await request.post()).items())
        for key in _JSON_PARAMS & params.keys():
            if isinstance(params[key], str):
                params[key] = json.loads(params[key])
        return params

    @staticmethod
    def _ok(result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    def _fail(code: int, description: str, **extra: Any) -> web.Response:
        return web.json_response({"ok": False, "error_code": code, "description": description, **extra},
                                 status=code)

    def _new_bot_message(self, chat_id: int, text: str, params: dict) -> dict:
        key = next((k for k in self.messages if k[0] == chat_id), None)
        chat = self.messages[key]["chat"] if key else {"id": chat_id, "type": "private", "first_name": "x"}
        msg: dict[str, Any] = {"message_id": next(self._ids), "date": int(time.time()), "chat": chat,
                               "from": self.bot, "text": text}
        if params.get("parse_mode"):
            msg["parse_mode_used"] = params["parse_mode"]
        if params.get("reply_markup"):
            msg["reply_markup"] = params["reply_markup"]
        if params.get("message_thread_id"):
            msg["message_thread_id"] = int(params["message_thread_id"])
            msg["is_topic_message"] = True
        self.messages[(chat_id, msg["message_id"])] = msg
        return msg

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        self.calls.append({"t": time.monotonic(), "method": method, "params": params})
        if request.match_info["token"] != self.token:
            return self._fail(401, "Unauthorized")
        m = method.lower()
        flood = self._flood.get(m)
        if flood and flood[0] > 0:
            flood[0] -= 1
            return self._fail(429, f"Too Many Requests: retry after {flood[1]}",
                              parameters={"retry_after": flood[1]})
        failure = self._failures.get(m)
        if failure and failure[0] > 0:
            failure[0] -= 1
        elif failure and failure[1] > 0:
            failure[1] -= 1
            return self._fail(failure[2], failure[3])
        if self.latency and m != "getupdates":
            await asyncio.sleep(self.latency)
        handler = getattr(self, f"_m_{m}", None)
        if handler is None:
            return self._fail(404, "Not Found")
        if m == "getupdates":
            return await self._one_consumer(request, handler, params)
        if m in MARKUP_METHODS and (problem := reply_markup_problem(params.get("reply_markup"))):
            return self._fail(400, problem)
        response = await handler(params)
        if m == "editmessagetext" and response.status == 200:
            self._keep_edited_markup(params)
        return response

    # ---- sendDocument: transcripts as files ----------------------------------------------------
    def documents(self, chat_id: int) -> list[dict]:
        """Documents the bot sent to the chat, oldest first: {"file_name", "data", "caption", "reply_to"}."""
        return [m["document_sent"] for (c, _), m in sorted(self.messages.items(), key=lambda kv: kv[0][1])
                if c == chat_id and "document_sent" in m]

    async def _m_senddocument(self, params: dict) -> web.Response:
        chat_id = int(params["chat_id"])
        upload = params.get("document")
        if not isinstance(upload, dict):     # earshot uploads new files; a file_id or URL string isn't one
            return self._fail(400, "Bad Request: there is no document in the request")
        if not upload["data"]:
            return self._fail(400, "Bad Request: file must be non-empty")
        if len(upload["data"]) > 50 * 1024 * 1024:
            return self._fail(413, "Request Entity Too Large")
        caption = str(params.get("caption") or "")
        if len(caption) > 1024:
            return self._fail(400, "Bad Request: message caption is too long")
        msg = self._new_bot_message(chat_id, "", params)
        del msg["text"]
        reply = (params.get("reply_parameters") or {}).get("message_id")
        msg["document"] = {"file_id": f"doc-{msg['message_id']}-fid", "file_unique_id": f"d{msg['message_id']}",
                           "file_name": upload["filename"], "file_size": len(upload["data"])}
        msg["document_sent"] = {"file_name": upload["filename"], "data": upload["data"], "caption": caption,
                                "reply_to": reply}
        if caption:
            msg["caption"] = caption
        return self._ok({k: v for k, v in msg.items() if k != "document_sent"})

    async def _m_getme(self, params: dict) -> web.Response:
        return self._ok(self.bot)

    async def _one_consumer(self, request: web.Request, handler: Any, params: dict) -> web.Response:
        # a poll whose client hung up (killed, or its request cancelled) no longer counts
        self._polls = {i: r for i, r in self._polls.items() if r.transport is not None and not r.transport.is_closing()}
        if self._polls:
            self.conflicts += 1
            return self._fail(409, "Conflict: terminated by other getUpdates request; make sure that only one "
                                   "bot instance is running")
        self._polls[id(request)] = request
        try:
            return await handler(params)
        finally:
            self._polls.pop(id(request), None)

    async def _m_getupdates(self, params: dict) -> web.Response:
        if self.webhook:
            return self._fail(409, "Conflict: can't use getUpdates method while webhook is active; "
                                   "use deleteWebhook to delete the webhook first")
        offset = int(params.get("offset") or 0)
        if offset and self.forget_confirmed:  # asking from `offset` confirms earlier updates: Telegram forgets them
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        limit = int(params.get("limit") or 100)
        deadline = time.monotonic() + float(params.get("timeout") or 0)
        async with self._new:
            while True:
                ready = [u for u in self._updates if u["update_id"] >= offset
                         and self._allowed(u, params.get("allowed_updates"))]
                left = deadline - time.monotonic()
                if ready or left <= 0 or self._closing:
                    return self._ok(ready[:limit])
                try:
                    await asyncio.wait_for(self._new.wait(), left)
                except TimeoutError:
                    pass

    async def _m_getfile(self, params: dict) -> web.Response:
        fid = params.get("file_id")
        if fid not in self._files:
            return self._fail(400, "Bad Request: invalid file_id")
        kind, mid = fid.split("-")[0], int(fid.split("-")[1])
        declared = next((m[kind].get("file_size") for m in self.messages.values()
                         if m["message_id"] == mid and kind in m), None)
        path, data = self._files[fid]
        if max(len(data), declared or 0) > DOWNLOAD_LIMIT:
            return self._fail(400, "Bad Request: file is too big")
        return self._ok({"file_id": fid, "file_unique_id": f"u{mid}", "file_size": len(data),
                         "file_path": path})

    async def _download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        path = request.match_info["path"]
        for p, data in self._files.values():
            if p == path:
                return web.Response(body=data, content_type="application/octet-stream")
        return web.Response(status=404)

    def _check_text(self, text: str, parse_mode: str | None) -> str | None:
        if not text.strip():
            return "Bad Request: message text is empty"
        if parse_mode and parse_mode.upper() == "HTML" and (problem := html_problem(text)):
            return problem
        if visible_length(text, parse_mode) > TEXT_LIMIT:
            return "Bad Request: message is too long"
        return None

    async def _m_sendmessage(self, params: dict) -> web.Response:
        chat_id = int(params["chat_id"])
        text = str(params.get("text", ""))
        if problem := self._check_text(text, params.get("parse_mode")):
            return self._fail(400, problem)
        reply = params.get("reply_parameters") or {}
        reply_id = reply.get("message_id") or params.get("reply_to_message_id")
        target = self.messages.get((chat_id, int(reply_id))) if reply_id else None
        if reply_id and target is None and not reply.get("allow_sending_without_reply"):
            return self._fail(400, "Bad Request: message to be replied not found")
        msg = self._new_bot_message(chat_id, text, params)
        if target is not None:
            msg["reply_to_message"] = target
        return self._ok(msg)

    async def _m_sendvoice(self, params: dict) -> web.Response:
        """A voice note: Telegram shows a voice bubble only for OGG/Opus; the caption holds 1,024 characters."""
        chat_id = int(params["chat_id"])
        voice = params.get("voice")
        if not isinstance(voice, dict) or not voice.get("data"):
            return self._fail(400, "Bad Request: there is no voice in the request")
        data = voice["data"]
        if data[:4] != b"OggS" or b"OpusHead" not in data[:200]:
            return self._fail(400, "Bad Request: VOICE_MESSAGE_INVALID: send OGG encoded with Opus")
        caption = str(params.get("caption") or "")
        if caption and params.get("parse_mode") and (problem := html_problem(caption)):
            return self._fail(400, problem)
        if visible_length(caption, params.get("parse_mode")) > CAPTION_LIMIT:
            return self._fail(400, "Bad Request: message caption is too long")
        reply = params.get("reply_parameters") or {}
        reply_id = reply.get("message_id")
        target = self.messages.get((chat_id, int(reply_id))) if reply_id else None
        msg = self._new_bot_message(chat_id, "", params)
        del msg["text"]
        msg["voice"] = {"file_id": f"voice-{msg['message_id']}", "file_unique_id": f"v{msg['message_id']}",
                        "duration": int(params.get("duration") or 0), "mime_type": "audio/ogg",
                        "file_size": len(data)}
        if caption:
            msg["caption"] = caption
        if target is not None:
            msg["reply_to_message"] = target
        self.voices.append({"chat_id": chat_id, "ogg": data, "caption": caption, "message_id": msg["message_id"]})
        return self._ok(msg)

    async def _m_editmessagetext(self, params: dict) -> web.Response:
        key = (int(params["chat_id"]), int(params["message_id"]))
        text = str(params.get("text", ""))
        if key not in self.messages:
            return self._fail(400, "Bad Request: message to edit not found")
        if self.messages[key].get("text") == text:
            return self._fail(400, "Bad Request: message is not modified: specified new message content "
                                   "and reply markup are exactly the same as a current content and reply "
                                   "markup of the message")
        if problem := self._check_text(text, params.get("parse_mode")):
            return self._fail(400, problem)
        self.messages[key]["text"] = text
        self.messages[key]["edit_date"] = int(time.time())
        self.edits.append({"t": time.monotonic(), "chat_id": key[0], "message_id": key[1], "text": text})
        return self._ok(self.messages[key])

    async def _m_deletemessage(self, params: dict) -> web.Response:
        key = (int(params["chat_id"]), int(params["message_id"]))
        if self.messages.pop(key, None) is None:
            return self._fail(400, "Bad Request: message to delete not found")
        self.deleted.append(key)
        return self._ok(True)

    async def _m_getchatmember(self, params: dict) -> web.Response:
        chat_id, user_id = int(params["chat_id"]), int(params["user_id"])
        status = self.members.get((chat_id, user_id), "member")
        user = self.bot if user_id == self.bot["id"] else {"id": user_id, "is_bot": False,
                                                          "first_name": f"user{user_id}"}
        member: dict[str, Any] = {"status": status, "user": user}
        if status == "creator":
            member["is_anonymous"] = False
        elif status == "administrator":
            member.update({flag: True for flag in (
                "can_be_edited", "can_manage_chat", "can_delete_messages", "can_manage_video_chats",
                "can_restrict_members", "can_promote_members", "can_change_info", "can_invite_users",
                "can_post_stories", "can_edit_stories", "can_delete_stories")}, is_anonymous=False)
        elif status == "restricted":
            return self._fail(400, "Bad Request: restricted members are not modelled here")
        return self._ok(member)

    async def _m_sendchataction(self, params: dict) -> web.Response:
        return self._ok(True)

    async def _m_setmycommands(self, params: dict) -> web.Response:
        lang = params.get("language_code") or ""
        if lang and not re.fullmatch(r"[a-z]{2}", lang):     # a two-letter ISO 639-1 code, or none
            return self._fail(400, "Bad Request: invalid language code specified")
        self.menus[lang] = params.get("commands") or []
        if not lang:
            self.commands = self.menus[lang]
        return self._ok(True)

    async def _m_deletewebhook(self, params: dict) -> web.Response:
        self.webhook = None
        if str(params.get("drop_pending_updates")).lower() == "true":
            self._updates.clear()
        return self._ok(True)

    async def _m_setwebhook(self, params: dict) -> web.Response:
        self.webhook = {"url": params["url"], "secret_token": params.get("secret_token"),
                        "allowed_updates": params.get("allowed_updates")}
        return self._ok(True)

    async def _m_getwebhookinfo(self, params: dict) -> web.Response:
        info: dict[str, Any] = {"url": (self.webhook or {}).get("url", ""), "has_custom_certificate": False,
                                "pending_update_count": len(self._updates)}
        if self.webhook:
            info |= {"max_connections": 40, "allowed_updates": self.webhook.get("allowed_updates") or []}
            if self.webhook_error:
                info |= {"last_error_date": int(time.time()), "last_error_message": self.webhook_error}
        return self._ok(info)

    # ---- inline keyboards: callback queries, answerCallbackQuery, editMessageReplyMarkup --------------------
    def push_callback(self, chat_id: int, message_id: int, data: str, *, user_id: int | None = None,
                      username: str | None = None, forged: bool = False, inaccessible: bool = False) -> str:
        """A user taps an inline button with this callback_data under the bot's message; returns the query id.
        See `callback_update` for the update delivered."""
        update = self.callback_update(chat_id, message_id, data, user_id=user_id, username=username, forged=forged,
                                      inaccessible=inaccessible)
        self.deliver(update)
        return str(update["callback_query"]["id"])

    def callback_update(self, chat_id: int, message_id: int, data: str, *, user_id: int | None = None,
                        username: str | None = None, forged: bool = False, inaccessible: bool = False) -> dict:
        """The update a tap becomes, known to answerCallbackQuery but not delivered (push_callback delivers it).

        Real shape: id, from, message (the bot's message, with its reply_markup), chat_instance, data. Telegram
        delivers only data of a button the message has, so a test can't press a button that isn't there, unless
        `forged`: what a modified client may send (any 1-64 bytes). `inaccessible`: the message is too old for
        Telegram to include (Bot API 7.0 InaccessibleMessage: only chat, message_id and date 0)."""
        message = self.messages[(chat_id, message_id)]
        buttons = [b for row in (message.get("reply_markup") or {}).get("inline_keyboard", []) for b in row]
        if not forged and data not in [b.get("callback_data") for b in buttons]:
            raise AssertionError(f"no button with callback_data {data!r} under message {message_id}")
        if not 1 <= len(data.encode()) <= CALLBACK_DATA_LIMIT:
            raise AssertionError("Telegram carries 1-64 bytes of callback_data")
        user_id = user_id if user_id is not None else abs(chat_id)
        sender: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"}
        if username is not None:
            sender["username"] = username
        query_id = str(4_000_000_000_000 + next(self._update_ids))
        shown = {"chat": message["chat"], "message_id": message_id, "date": 0} if inaccessible else message
        query = {"id": query_id, "from": sender, "message": shown,
                 "chat_instance": str(-(abs(chat_id) * 7919 % 10**12) - 1), "data": data}
        self.callback_queries[query_id] = query
        return {"update_id": next(self._update_ids), "callback_query": query}

    @staticmethod
    def _allowed(update: dict, allowed: list[str] | None) -> bool:
        """allowed_updates, as getUpdates and setWebhook take it: a bot that asked for messages only is never
        sent a callback_query (an empty or absent list: every usual kind)."""
        return not allowed or any(kind in update for kind in allowed)

    def unanswered_callbacks(self) -> list[str]:
        """Query ids no answerCallbackQuery was made for: the user still sees a spinner on the button."""
        return [q for q in self.callback_queries if q not in self.callback_answers]

    def markup_of(self, chat_id: int, message_id: int) -> dict | None:
        """The inline keyboard under a message now (None: no buttons)."""
        return self.messages[(chat_id, message_id)].get("reply_markup")

    async def _m_answercallbackquery(self, params: dict) -> web.Response:
        query_id = str(params.get("callback_query_id") or "")
        if query_id not in self.callback_queries or query_id in self.callback_answers:
            return self._fail(400, "Bad Request: query is too old and response timeout expired or query ID is "
                                   "invalid")
        if len(str(params.get("text") or "")) > ANSWER_TEXT_LIMIT:
            return self._fail(400, "Bad Request: MESSAGE_TOO_LONG")
        self.callback_answers[query_id] = {"t": time.monotonic(), **params}
        return self._ok(True)

    async def _m_editmessagereplymarkup(self, params: dict) -> web.Response:
        if params.get("inline_message_id"):
            return self._fail(400, "Bad Request: inline messages are not modelled here")
        key = (int(params["chat_id"]), int(params["message_id"]))
        message = self.messages.get(key)
        if message is None:
            return self._fail(400, "Bad Request: message to edit not found")
        if message["from"]["id"] != self.bot["id"]:
            return self._fail(400, "Bad Request: message can't be edited")
        markup = params.get("reply_markup") or None
        if markup is not None and not (markup.get("inline_keyboard") or None):
            markup = None                 # an empty keyboard removes the buttons, as no markup does
        if (message.get("reply_markup") or None) == markup:
            return self._fail(400, "Bad Request: message is not modified: specified new message content and "
                                   "reply markup are exactly the same as a current content and reply markup "
                                   "of the message")
        if markup is None:
            message.pop("reply_markup", None)
        else:
            message["reply_markup"] = markup
        message["edit_date"] = int(time.time())
        self.markup_edits.append({"t": time.monotonic(), "chat_id": key[0], "message_id": key[1], "markup": markup})
        return self._ok(message)

    def _keep_edited_markup(self, params: dict) -> None:
        """editMessageText replaces the keyboard with the one it is given, and drops it when given none."""
        message = self.messages.get((int(params["chat_id"]), int(params["message_id"])))
        if message is None:
            return
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        else:
            message.pop("reply_markup", None)
