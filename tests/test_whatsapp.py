"""`earshot whatsapp` end to end: Meta's handshake and signed deliveries in, Graph API calls out, against the
Cloud API stand-in (tests/fakes/whatsapp.py) and the model stand-in, over real HTTP on loopback."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bots.whatsapp import WhatsAppServer
from bots.whatsapp.graph import Graph
from bots.whatsapp.outbox import Outbox, WindowClosed
from bots.whatsapp.render import MESSAGE_LIMIT
from core.config import Settings
from core.words import messages
from tests.conftest import EARSHOT, MODEL_KEY, cli_env, free_port, serving, settings_for, spawn, terminate
from tests.fakes.dashscope import UNAVAILABLE, FakeDashScope
from tests.fakes.server import Threaded
from tests.fakes.speech import ASR_MARK
from tests.fakes.whatsapp import VERSION, FakeWhatsApp, ForeignHost, signature
from tests.test_telegram import clip
from tests.test_voice_replies import plays_as_opus
from tests.waiting import job_rows, settled, until, until_sync

SECRET = "app-secret-for-tests-5e1"
VERIFY = "verify-token-for-tests-9a"
ALICE = "15551234567"
BOB = "447700900123"


@dataclass
class Phone:
    """A running `earshot whatsapp` (in this process) and its stand-ins."""

    wa: FakeWhatsApp
    model: FakeDashScope
    server: WhatsAppServer
    http: httpx.AsyncClient
    settings: Settings

    async def deliver(self, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        return await self.http.post("/whatsapp/webhook", content=body,
                                    headers=self.wa.signed(SECRET, body) if headers is None else headers)

    async def send(self, wa_id: str, kind: str = "text", **fields: Any) -> str:
        """`wa_id` sends a message; the webhook answers 200 (the job is stored by then); its wamid."""
        body, wamid = self.wa.message(wa_id, kind, **fields)
        r = await self.deliver(body)
        assert r.status_code == 200, r.text
        return wamid

    async def voice_note(self, wa_id: str, hz: int = 440, **fields: Any) -> str:
        return await self.send(wa_id, "audio", audio=self.wa.add_media(clip(hz), "audio/ogg; codecs=opus"), **fields)

    async def said(self, wa_id: str, containing: str, n: int = 1, within: float = 30) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]]:
            got = [m for m in self.wa.said(wa_id) if containing in str(m)]
            return got if len(got) >= n else []
        return await until(found, within, f"{n} message(s) with {containing!r}; sent {self.wa.texts(wa_id)}")

    async def of_type(self, wa_id: str, kind: str, n: int = 1, within: float = 30) -> list[dict[str, Any]]:
        """The messages of one type (text, interactive, audio, document) sent to `wa_id`, once there are `n`."""
        def found() -> list[dict[str, Any]]:
            got = [m for m in self.wa.said(wa_id) if m["type"] == kind]
            return got if len(got) >= n else []
        return await until(found, within, f"{n} {kind} message(s); sent {self.wa.texts(wa_id)}")

    async def idle(self, within: float = 30) -> None:
        await until(lambda: settled(self.settings.db_path), within, "the jobs to be done")


def whatsapp_settings(wa: FakeWhatsApp) -> dict[str, Any]:
    return {"whatsapp_access_token": wa.token, "whatsapp_phone_number_id": wa.phone_number_id,
            "whatsapp_app_secret": SECRET, "whatsapp_verify_token": VERIFY,
            "whatsapp_api_url": f"{wa.url}/{VERSION}"}


@contextlib.asynccontextmanager
async def whatsapp_running(tmp_path: Path, *, wa: FakeWhatsApp | None = None, **kw: Any) -> AsyncIterator[Phone]:
    async with serving(wa or FakeWhatsApp()) as wa, serving(FakeDashScope(api_key=MODEL_KEY)) as model:
        settings = settings_for(model, tmp_path, **(whatsapp_settings(wa) | kw))
        server = WhatsAppServer(settings, host="127.0.0.1", port=0)
        port = await server.start()
        phone = Phone(wa, model, server, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10), settings)
        try:
            yield phone
        finally:
            await phone.http.aclose()
            await server.stop()


@pytest.fixture
async def phone(tmp_path: Path) -> AsyncIterator[Phone]:
    async with whatsapp_running(tmp_path) as p:
        yield p


def quoted(message: dict[str, Any]) -> str | None:
    return (message.get("context") or {}).get("message_id")


# --- the webhook's door ------------------------------------------------------------------------------

async def test_verification_echoes_the_challenge_only_for_the_verify_token(phone: Phone) -> None:
    ok = await phone.http.get("/whatsapp/webhook", params={"hub.mode": "subscribe", "hub.verify_token": VERIFY,
                                                            "hub.challenge": "1158201444"})
    assert ok.status_code == 200 and ok.text == "1158201444"
    for params in ({"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1"},
                   {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY, "hub.challenge": "1"},
                   {"hub.challenge": "1"}):
        r = await phone.http.get("/whatsapp/webhook", params=params)
        assert r.status_code == 403 and "1" not in r.text


async def test_a_bad_or_missing_signature_is_refused_and_nothing_is_done(phone: Phone) -> None:
    body, _ = phone.wa.message(ALICE, "audio", audio=phone.wa.add_media(clip(440), "audio/ogg"))
    for headers in ({"X-Hub-Signature-256": signature("not-the-secret", body)}, {},
                    {"X-Hub-Signature-256": "sha256=" + hashlib.sha256(body).hexdigest()},
                    {"X-Hub-Signature-256": signature(SECRET, body + b" ")}):
        r = await phone.deliver(body, headers)
        assert r.status_code == 401
    big = b'{"object":"whatsapp_business_account","pad":"' + b"x" * 300_000 + b'"}'
    assert (await phone.deliver(big)).status_code == 413
    assert [c["kind"] for c in phone.wa.calls] == ["phone"]       # the token checked at start, nothing since
    assert not job_rows(phone.settings.db_path) and not phone.model.calls
    # Meta signs the bytes it sends, non-ASCII escaped: those bytes verify as they are
    assert b"Zo\\u00eb" in body and (await phone.deliver(body)).status_code == 200


async def test_status_updates_are_answered_and_failed_ones_logged(phone: Phone, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="bots.whatsapp"):
        for status in ("sent", "delivered", "read", "failed"):
            errors = [{"code": 131026, "title": "Message undeliverable"}] if status == "failed" else None
            assert (await phone.deliver(phone.wa.status_body("wamid.out1", ALICE, status, errors))).status_code == 200
    assert [c["kind"] for c in phone.wa.calls] == ["phone"]        # the token checked at start, nothing since
    [logged] = [r for r in caplog.records if "could not deliver" in r.getMessage()]
    assert "131026" in logged.getMessage() and "wamid.out1" in logged.getMessage()


# --- answers -----------------------------------------------------------------------------------------

async def test_a_voice_note_is_answered_in_reply_after_a_read_receipt(phone: Phone) -> None:
    wamid = await phone.voice_note(ALICE, 440)
    [answer] = await phone.said(ALICE, "440Hz")
    assert answer["type"] == "text" and quoted(answer) == wamid
    [read] = phone.wa.reads
    assert read["message_id"] == wamid and read["typing_indicator"] == {"type": "text"}
    kinds = [c["kind"] for c in phone.wa.calls]
    assert kinds.index("read") < kinds.index("send") and kinds.index("media") < kinds.index("download")
    # the token went with the download, which came from the API's own origin
    [download] = phone.wa.of_kind("download")
    assert download["headers"]["Authorization"] == f"Bearer {phone.wa.token}"


async def test_videos_and_audio_sent_as_documents_are_answered_too(phone: Phone) -> None:
    video = await phone.send(ALICE, "video", video=phone.wa.add_media(clip(660, "webm"), "video/webm"))
    memo = phone.wa.add_media(clip(880, "mp3"), "application/octet-stream", "memo.mp3")   # known by its name
    document = await phone.send(ALICE, "document", document=memo)
    for wamid, tone in ((video, "660Hz"), (document, "880Hz")):
        [answer] = await until(lambda w=wamid: [m for m in phone.wa.said(ALICE) if quoted(m) == w])
        assert tone in answer["text"]["body"]


async def test_a_redelivered_message_is_answered_once(phone: Phone) -> None:
    media = phone.wa.add_media(clip(440), "audio/ogg; codecs=opus")
    body, wamid = phone.wa.message(ALICE, "audio", audio=media)
    for _ in range(3):
        assert (await phone.deliver(body)).status_code == 200
    await phone.said(ALICE, "440Hz")
    await phone.idle()
    assert len([m for m in phone.wa.said(ALICE) if "440Hz" in str(m)]) == 1
    assert len(job_rows(phone.settings.db_path)) == 1 and len(phone.wa.of_kind("download")) == 1


async def test_a_long_answer_is_split_under_4096_characters_and_only_the_first_piece_quotes(phone: Phone) -> None:
    phone.model.reply = lambda call: " ".join(f"Sentence {i} of a long answer about the tone." for i in range(400))
    wamid = await phone.voice_note(ALICE, 440)
    await phone.of_type(ALICE, "interactive")                  # the buttons come after the whole answer
    pieces = [m for m in phone.wa.said(ALICE) if m["type"] == "text"]
    assert len(pieces) >= 2 and all(len(m["text"]["body"]) <= MESSAGE_LIMIT for m in pieces)
    assert quoted(pieces[0]) == wamid and not any(quoted(m) for m in pieces[1:])
    assert "Sentence 0 " in pieces[0]["text"]["body"]


async def test_buttons_under_an_answer_ask_the_same_audio_something_else(phone: Phone) -> None:
    await phone.voice_note(ALICE, 440)
    [menu] = await phone.of_type(ALICE, "interactive")
    titles = [b["reply"]["title"] for b in menu["interactive"]["action"]["buttons"]]
    assert titles == ["Transcript", "Summary", "Translate"] and all(len(t) <= 20 for t in titles)
    assert menu["interactive"]["body"]["text"] == messages.WHATSAPP_MORE

    body, tap = phone.wa.tap_body(ALICE, menu, 1)                      # Summary
    assert (await phone.deliver(body)).status_code == 200
    [summary] = await until(lambda: [m for m in phone.wa.said(ALICE) if quoted(m) == tap])
    assert "440Hz" in summary["text"]["body"]
    assert len(phone.wa.of_kind("download")) == 2                      # the same audio, fetched again by its id

    body, _ = phone.wa.tap_body(ALICE, menu, 2)                        # Translate: which language?
    assert (await phone.deliver(body)).status_code == 200
    # the Summary answer's own buttons may come before or after it: wait for the list itself
    [languages] = await until(lambda: [m for m in phone.wa.said(ALICE)
                                       if m.get("type") == "interactive" and m["interactive"]["type"] == "list"])
    rows = languages["interactive"]["action"]["sections"][0]["rows"]
    assert [r["title"] for r in rows][:2] == ["English", "Spanish"] and len(rows) <= 10
    calls = len(phone.model.calls)
    body, tap = phone.wa.tap_body(ALICE, languages, 1)
    assert (await phone.deliver(body)).status_code == 200
    await until(lambda: [m for m in phone.wa.said(ALICE) if quoted(m) == tap])
    assert len(phone.model.calls) > calls and "Spanish" in " ".join(phone.model.calls[-1].texts)


async def test_the_buttons_speak_the_chats_language(phone: Phone) -> None:
    wamid = await phone.send(ALICE, text="lang de")
    await until(lambda: [m for m in phone.wa.said(ALICE) if quoted(m) == wamid])
    await phone.voice_note(ALICE, 440)
    [menu] = await phone.of_type(ALICE, "interactive")
    titles = [b["reply"]["title"] for b in menu["interactive"]["action"]["buttons"]]
    assert titles == ["Transkript", "Zusammenfassung", "Übersetzen"]
    assert menu["interactive"]["body"]["text"] == messages.text(messages.WHATSAPP_MORE, "de")
    body, _ = phone.wa.tap_body(ALICE, menu, 2)                        # Übersetzen: which language?
    assert (await phone.deliver(body)).status_code == 200
    [languages] = await until(lambda: [m for m in phone.wa.said(ALICE)
                                       if m.get("type") == "interactive" and m["interactive"]["type"] == "list"])
    rows = languages["interactive"]["action"]["sections"][0]["rows"]
    assert [r["title"] for r in rows][:2] == ["Englisch", "Spanisch"]
    assert languages["interactive"]["action"]["button"] == "Sprachen"
    body, tap = phone.wa.tap_body(ALICE, languages, 1)                 # the row still asks for Spanish
    assert (await phone.deliver(body)).status_code == 200
    await until(lambda: [m for m in phone.wa.said(ALICE) if quoted(m) == tap])
    assert "Spanish" in " ".join(phone.model.calls[-1].texts)


async def test_text_commands_work_with_or_without_a_slash(phone: Phone) -> None:
    for text in ("help", "/help"):
        wamid = await phone.send(ALICE, text=text)
        [helped] = await until(lambda w=wamid: [m for m in phone.wa.said(ALICE) if quoted(m) == w])
        assert "transcribe" in helped["text"]["body"]
    wamid = await phone.send(ALICE, text="transcribe")
    [none_yet] = await until(lambda: [m for m in phone.wa.said(ALICE) if quoted(m) == wamid])
    assert none_yet["text"]["body"] == messages.NO_AUDIO_YET
    await phone.voice_note(ALICE, 660)
    await phone.said(ALICE, "660Hz")
    for text in ("/summarize", "sentiment"):
        wamid = await phone.send(ALICE, text=text)
        await until(lambda w=wamid: [m for m in phone.wa.said(ALICE) if quoted(m) == w and "660Hz" in str(m)])
    wamid = await phone.send(ALICE, text="lang de")
    [lang] = await until(lambda: [m for m in phone.wa.said(ALICE) if quoted(m) == wamid])
    assert "Deutsch" in lang["text"]["body"]
    wamid = await phone.send(ALICE, text="/usage")
    [usage] = await until(lambda: [m for m in phone.wa.said(ALICE) if quoted(m) == wamid])
    assert "Token" in usage["text"]["body"]                              # in German now
    wamid = await phone.send(ALICE, text="what did the tone sound like?")   # no command: a follow-up
    [follow] = await until(lambda: [m for m in phone.wa.said(ALICE) if quoted(m) == wamid])
    assert "660Hz" in follow["text"]["body"]


async def test_spoken_pins_the_language_of_transcripts_and_auto_lets_it_be_detected(tmp_path: Path) -> None:
    async with whatsapp_running(tmp_path, asr_model="qwen3-asr-flash") as phone:
        async def told(text: str) -> str:
            wamid = await phone.send(ALICE, text=text)
            [said] = await until(lambda: [m for m in phone.wa.said(ALICE) if quoted(m) == wamid])
            return str(said["text"]["body"])

        assert await told("spoken de") == messages.text(messages.SPOKEN_SET, None, language="de", prefix="/")
        await phone.voice_note(ALICE, 440)
        await phone.of_type(ALICE, "interactive")                      # the voice note's answer, then its buttons
        assert (await told("transcribe")).startswith(ASR_MARK)          # the recognizer's transcript
        assert [c.language for c in phone.model.calls if c.task == "asr"] == ["de"]
        assert await told("/spoken auto") == messages.text(messages.SPOKEN_AUTO, None)
        await told("transcribe")
        assert [c.language for c in phone.model.calls if c.task == "asr"][-1] is None
        assert "spoken auto" in await told("help")


async def test_other_kinds_of_message_get_one_polite_line_and_no_model_call(phone: Phone) -> None:
    image = phone.wa.add_media(b"\x89PNG fake", "image/png")
    wamid = await phone.send(ALICE, "image", image=image)
    location = await phone.send(ALICE, "location", location={"latitude": 52.5, "longitude": 13.4})
    pdf = await phone.send(ALICE, "document", document=phone.wa.add_media(b"%PDF-1.4", "application/pdf", "a.pdf"))
    await phone.send(ALICE, "reaction", reaction={"message_id": wamid, "emoji": "👍"})
    for w in (wamid, location, pdf):
        [line] = await until(lambda w=w: [m for m in phone.wa.said(ALICE) if quoted(m) == w])
        assert line["text"]["body"] == messages.WHATSAPP_NOT_AUDIO
    assert len(phone.wa.sent) == 3 and not phone.model.calls and not phone.wa.of_kind("download")


async def test_long_transcripts_also_come_as_txt_and_srt_documents(phone: Phone) -> None:
    phone.model.reply = lambda call: "[00:00] " + "the tone goes on and on " * 400
    await phone.voice_note(ALICE, 440)
    await phone.said(ALICE, "the tone goes on")
    wamid = await phone.send(ALICE, text="transcribe")
    docs = await phone.of_type(ALICE, "document", n=2)
    names = sorted(d["document"]["filename"] for d in docs)
    assert [Path(n).suffix for n in names] == [".srt", ".txt"]
    assert {u["type"] for u in phone.wa.uploads} == {"text/plain"}
    assert any(quoted(m) == wamid for m in phone.wa.said(ALICE))


async def test_a_spoken_answer_is_uploaded_and_sent_as_a_voice_note(tmp_path: Path) -> None:
    async with whatsapp_running(tmp_path, model="qwen3-omni-flash") as phone:
        wamid = await phone.send(ALICE, text="voice on")
        [on] = await until(lambda: [m for m in phone.wa.said(ALICE) if quoted(m) == wamid])
        assert "spoken" in on["text"]["body"]
        await phone.voice_note(ALICE, 440)
        [voice] = await phone.of_type(ALICE, "audio")
        [upload] = phone.wa.uploads
        assert upload["type"] == "audio/ogg" and plays_as_opus(upload["data"])
        assert voice["audio"] == {"id": upload["id"]}
        await phone.said(ALICE, "440Hz")                                  # the words too


@pytest.mark.slow
async def test_a_model_outage_is_said_once_then_the_answer_follows(tmp_path: Path) -> None:
    async with whatsapp_running(tmp_path, retry_budget=0.2) as phone:
        phone.model.fail(*[UNAVAILABLE] * 3)
        wamid = await phone.voice_note(ALICE, 440)
        [waiting] = await phone.said(ALICE, messages.MODEL_WAITING)
        assert quoted(waiting) == wamid
        [answer] = await phone.said(ALICE, "440Hz", within=60)
        assert quoted(answer) == wamid
        await phone.idle()
        assert phone.wa.texts(ALICE).count(messages.MODEL_WAITING) == 1


# --- access and the token ------------------------------------------------------------------------------

async def test_a_stranger_is_told_once_and_their_media_is_never_downloaded(tmp_path: Path) -> None:
    async with whatsapp_running(tmp_path, allowed_users=f"+{BOB}") as phone:
        first = await phone.voice_note(ALICE, 440)
        [told] = await until(lambda: [m for m in phone.wa.said(ALICE) if quoted(m) == first])
        assert ALICE in told["text"]["body"] and "WhatsApp" in told["text"]["body"]
        await phone.voice_note(ALICE, 660)
        await phone.send(ALICE, text="transcribe")
        await phone.voice_note(BOB, 440)                       # +E.164 in the list lets Bob's wa_id in
        await phone.said(BOB, "440Hz")
        await phone.idle()
        assert len(phone.wa.said(ALICE)) == 1
        media_asked = [c for c in phone.wa.calls if c["kind"] in ("media", "download")]
        assert len(media_asked) == 2 and not phone.wa.reads[1:]          # Bob's note: info, then bytes


async def test_a_media_url_off_metas_hosts_is_never_given_the_token(phone: Phone) -> None:
    async with serving(ForeignHost(clip(440))) as foreign:
        phone.wa.media_base = foreign.url
        wamid = await phone.voice_note(ALICE, 440)
        [said] = await until(lambda: [m for m in phone.wa.said(ALICE) if quoted(m) == wamid])
        assert said["text"]["body"] == messages.WHATSAPP_MEDIA_UNAVAILABLE
        assert not foreign.hits and not phone.model.calls


# --- Graph errors ------------------------------------------------------------------------------------

async def test_throughput_limits_are_retried_and_the_answer_arrives_once(phone: Phone) -> None:
    phone.wa.fail_next(130429)
    phone.wa.fail_next(4, on="send", status=429)
    phone.wa.fail_next(131000, on="download")
    await phone.voice_note(ALICE, 440)
    await phone.said(ALICE, "440Hz")
    await phone.idle()
    assert len([m for m in phone.wa.said(ALICE) if "440Hz" in str(m)]) == 1
    codes = [c.get("code") for c in phone.wa.of_kind("send")]
    assert codes[:3] == [130429, 4, None]


async def test_the_24_hour_window_error_is_logged_and_not_retried(phone: Phone, caplog) -> None:
    phone.wa.fail_next(131047, times=5)
    with caplog.at_level(logging.WARNING):
        await phone.voice_note(ALICE, 440)
        await phone.idle()
    assert len(phone.wa.attempts(ALICE)) == 1 and not phone.wa.sent
    assert any("24 hours" in r.getMessage() for r in caplog.records)
    [job] = job_rows(phone.settings.db_path)
    assert job["delivered"] is None and job["delivery_attempts"] >= 3      # given up on: final


async def test_a_refused_token_is_an_operator_error_naming_the_setting(phone: Phone, caplog) -> None:
    phone.wa.fail_next(190, times=10)
    with caplog.at_level(logging.ERROR):
        await phone.voice_note(ALICE, 440)
        await phone.idle()
    assert len(phone.wa.attempts(ALICE)) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("WHATSAPP_ACCESS_TOKEN" in e for e in errors) and not any(phone.wa.token in e for e in errors)


async def test_nothing_is_sent_outside_the_24_hour_window(phone: Phone) -> None:
    async with httpx.AsyncClient() as http:
        late = Outbox(Graph(phone.settings, http), clock=lambda: time.time() + 25 * 3600)
        late.heard(ALICE, time.time())
        with pytest.raises(WindowClosed):
            await late.say(ALICE, "a late answer")
        on_time = Outbox(Graph(phone.settings, http))
        on_time.heard(ALICE, time.time())
        await on_time.say(ALICE, "in time")
    assert phone.wa.texts(ALICE) == ["in time"]


# --- the command line ------------------------------------------------------------------------------

def test_earshot_whatsapp_runs_the_webhook_end_to_end(tmp_path: Path) -> None:
    wa, model = FakeWhatsApp(), FakeDashScope(api_key="sk-cli-test")
    with Threaded(wa.app) as wa_served, Threaded(model.app) as model_served:
        wa.url, model.url = wa_served.url, model_served.url
        port = free_port()
        env = cli_env(model, tmp_path, WHATSAPP_ACCESS_TOKEN=wa.token, WHATSAPP_PHONE_NUMBER_ID=wa.phone_number_id,
                      WHATSAPP_APP_SECRET=SECRET, WHATSAPP_VERIFY_TOKEN=VERIFY, EARSHOT_METRICS_PORT="0",
                      WHATSAPP_API_URL=f"{wa.url}/{VERSION}")
        proc = spawn([EARSHOT, "whatsapp", "--port", str(port)], tmp_path / "bot.log", env)
        url = f"http://127.0.0.1:{port}/whatsapp/webhook"
        try:
            def handshake() -> httpx.Response | None:
                try:
                    return httpx.get(url, params={"hub.mode": "subscribe", "hub.verify_token": VERIFY,
                                                  "hub.challenge": "42"}, timeout=2)
                except httpx.HTTPError:
                    return None if proc.poll() is None else httpx.Response(599)
            r = until_sync(handshake, 30, "the webhook to answer")
            assert r.status_code == 200 and r.text == "42", (tmp_path / "bot.log").read_text()
            media = wa_served.call(wa.add_media, clip(440), "audio/ogg; codecs=opus")
            body, wamid = wa_served.call(wa.message, ALICE, "audio", audio=media)
            assert httpx.post(url, content=body, headers=wa.signed(SECRET, body), timeout=10).status_code == 200
            [answer] = until_sync(lambda: [m for m in wa.said(ALICE) if "440Hz" in str(m)], 30,
                                  "the answer")
            assert quoted(answer) == wamid
        finally:
            import asyncio
            asyncio.run(terminate(proc))
        assert proc.returncode == 0, (tmp_path / "bot.log").read_text()
        assert wa.token not in (tmp_path / "bot.log").read_text()


def test_a_refused_token_stops_earshot_whatsapp_with_one_line(tmp_path: Path) -> None:
    wa = FakeWhatsApp()
    with Threaded(wa.app) as served:
        env = cli_env(FakeDashScope(api_key="sk-x"), tmp_path, WHATSAPP_ACCESS_TOKEN="EAAwrong-token",
                      WHATSAPP_PHONE_NUMBER_ID=wa.phone_number_id, WHATSAPP_APP_SECRET=SECRET,
                      WHATSAPP_VERIFY_TOKEN=VERIFY, WHATSAPP_API_URL=f"{served.url}/{VERSION}",
                      EARSHOT_METRICS_PORT="0")
        p = subprocess.run([EARSHOT, "whatsapp", "--port", str(free_port())], env=env, capture_output=True,
                           text=True, timeout=60)
    assert p.returncode == 4 and "Traceback" not in p.stderr
    assert "WHATSAPP_ACCESS_TOKEN" in p.stderr.splitlines()[-1] and "EAAwrong-token" not in p.stderr


def test_earshot_whatsapp_names_every_missing_setting(tmp_path: Path) -> None:
    env = cli_env(FakeDashScope(api_key="sk-x"), tmp_path, WHATSAPP_ACCESS_TOKEN="EAAx")
    p = subprocess.run([EARSHOT, "whatsapp"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 4 and "Traceback" not in p.stderr
    assert all(name in p.stderr for name in ("WHATSAPP_PHONE_NUMBER_ID", "WHATSAPP_APP_SECRET",
                                              "WHATSAPP_VERIFY_TOKEN"))
    assert "WHATSAPP_ACCESS_TOKEN" not in p.stderr
