"""WhatsApp webhook payloads, converted once at the door: each message a user sent becomes one
core.values.Incoming (its audio a CarriedAudio), and the statuses of what earshot sent plain Status values. Nothing
past this module reads Meta's JSON shapes.

A payload is `{"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages", "value":
{"metadata", "contacts", "messages" | "statuses"}}]}]}`; entries and changes are lists, and all of them are walked.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

from core.audio.links import split_link
from core.flow.commands import is_audio_name, parse_command
from core.values import CarriedAudio, ChatKey, Incoming, Sender

PLATFORM = "whatsapp"
MEDIA_KINDS = ("audio", "video", "document")     # what may carry something to listen to


@dataclass(frozen=True, slots=True)
class Media:
    """A user's media as the webhook names it; the job stores it (`dumps`) and fetches it again by id."""

    id: str
    kind: str                       # audio, video or document
    mime_type: str | None = None
    filename: str | None = None
    voice: bool = False             # a recorded voice note (audio with voice: true)
    sha256: str | None = None       # of the content (base64): the same audio forwarded keeps it

    def dumps(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v not in (None, False)})

    @property
    def audio_id(self) -> str | None:
        """A stable id of the content, for the answer cache: a forwarded voice note is answered without a download."""
        return f"sha256:{self.sha256}" if self.sha256 else None


def media_ref(file_ref: str) -> Media | None:
    """A stored file_ref back into Media; None for a link (core.audio.links fetches those)."""
    data = json.loads(file_ref)
    if "id" not in data:
        return None
    return Media(**{k: data[k] for k in ("id", "kind", "mime_type", "filename", "voice", "sha256") if k in data})


def link_ref(url: str, name: str | None) -> str:
    """The file_ref of an audio link a user sent (fetched with the SSRF guards, never with the token)."""
    return json.dumps({"link": url, "name": name})


@dataclass(frozen=True, slots=True)
class Status:
    """What became of a message earshot sent: sent, delivered, read, or failed (with Meta's errors)."""

    wamid: str
    status: str
    wa_id: str
    errors: tuple[str, ...] = ()


def chat_key(wa_id: str) -> ChatKey:
    return ChatKey(PLATFORM, wa_id)


IGNORED = {"reaction", "system", "request_welcome"}    # not a message to answer


def _values(payload: Any, phone_number_id: str | None) -> Iterator[dict[str, Any]]:
    """Each change's value meant for this business number."""
    if not isinstance(payload, dict):
        return
    for entry in payload.get("entry") or ():
        for change in (entry.get("changes") or ()) if isinstance(entry, dict) else ():
            value = change.get("value") if isinstance(change, dict) else None
            if not isinstance(value, dict):
                continue
            number = (value.get("metadata") or {}).get("phone_number_id")
            if phone_number_id and number and str(number) != phone_number_id:
                continue                       # another number of the same Meta app
            yield value


def messages_in(payload: Any, phone_number_id: str | None = None) -> Iterator[Incoming]:
    """The users' messages in a webhook payload, in order; reactions and system notices left out."""
    for value in _values(payload, phone_number_id):
        for msg in value.get("messages") or ():
            if isinstance(msg, dict) and (came := incoming(msg)) is not None:
                yield came


def statuses_in(payload: Any, phone_number_id: str | None = None) -> Iterator[Status]:
    for value in _values(payload, phone_number_id):
        for s in value.get("statuses") or ():
            if isinstance(s, dict):
                errors = tuple(f"{e.get('code')}: {e.get('title') or e.get('message') or ''}".strip()
                               for e in s.get("errors") or () if isinstance(e, dict))
                yield Status(str(s.get("id") or ""), str(s.get("status") or ""), str(s.get("recipient_id") or ""),
                             errors)


def carried(media: Media) -> CarriedAudio:
    """A user's media as the core sees it: its stored form (a job's file_ref, read back by `media_ref`), and the
    content's sha256 as the answer cache's key."""
    return CarriedAudio(media.dumps(), "voice" if media.voice else media.kind, media.filename, media.mime_type,
                        unique_id=media.audio_id)


def incoming(msg: dict[str, Any]) -> Incoming | None:
    """The door for one message of a payload's `messages`: a one-to-one chat with the sender, always spoken to
    earshot. Text is a command (`/` optional: a slashed word is always one, a bare one only when it reads as one,
    core.flow.commands), an audio link (its audio, the words after it as `words`), or a question; a tap on a reply
    button or list row carries the button's id as `tap`; an image, a sticker, a location… is `other_file`.
    `sent` is when the user wrote, what opens WhatsApp's 24-hour window. None for what is not a message to answer."""
    wamid, wa_id, kind = str(msg.get("id") or ""), str(msg.get("from") or ""), str(msg.get("type") or "")
    if not wamid or not wa_id.isdigit() or kind in IGNORED:
        return None
    try:
        sent = float(msg.get("timestamp") or time.time())
    except (TypeError, ValueError):
        sent = time.time()
    found = msg.get(kind)
    body: dict[str, Any] = found if isinstance(found, dict) else {}
    came = Incoming(chat=chat_key(wa_id), sender=Sender(wa_id), message_id=wamid, addressed=True, private=True,
                    sent=sent)
    if kind in ("text", "button"):     # a text's body; a template's quick-reply button: its words
        return _words(came, str(body.get("body" if kind == "text" else "text") or ""))
    if kind == "interactive":
        reply = body.get(str(body.get("type") or ""))     # button_reply or list_reply
        tap = str(reply.get("id") or "") if isinstance(reply, dict) else ""
        return replace(came, tap=tap or None)
    caption = str(body.get("caption") or "").strip()
    if kind in MEDIA_KINDS and body.get("id"):
        mime, name = body.get("mime_type"), body.get("filename")
        if kind != "document" or is_audio_name(name, mime):
            return replace(came, words=caption, audio=(carried(Media(
                str(body["id"]), kind, str(mime) if mime else None, str(name) if name else None,
                bool(body.get("voice")), str(body["sha256"]) if body.get("sha256") else None)),))
    return replace(came, words=caption, other_file=True)


def _words(came: Incoming, text: str) -> Incoming:
    text = text.strip()
    if (link := split_link(text)) is not None:        # a link to an audio file: handled like one sent
        return replace(came, words=link.rest,
                       audio=(CarriedAudio(link_ref(link.url, link.name), "link", link.name),))
    slashed = text.startswith("/")
    cmd = parse_command(text[1:] if slashed else text, strict=not slashed)
    return replace(came, words=text, command=(cmd.word, cmd.arg) if cmd else None)
