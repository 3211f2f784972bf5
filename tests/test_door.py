"""The doors: a platform's own update or event, as it arrives, becomes one core.values.Incoming
(bots/<platform>/convert.py), so nothing past the door reads the platform's objects again."""
from __future__ import annotations

import json
from typing import Any

from telegram import Bot, Update

from bots.slack import convert as slack
from bots.telegram import convert as telegram
from bots.whatsapp import convert as whatsapp
from core.flow.commands import Command, command_in
from core.values import CarriedAudio, ChatKey, Incoming, Sender, Task

BOT_ID, BOT_NAME = 777, "earshot_bot"


def _message(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "message_id": 41, "date": 1764936000,
        "chat": {"id": -1001234, "type": "supergroup", "title": "Team", "username": "teamchat", "is_forum": True},
        "from": {"id": 501, "is_bot": False, "first_name": "Alice", "last_name": "Liddell", "username": "alice",
                 "language_code": "de"},
    }
    return {**base, **fields}


def _telegram(message: dict[str, Any]) -> Incoming:
    update = Update.de_json({"update_id": 9, "message": message}, Bot("1:fake"))
    assert update is not None and update.message is not None
    return telegram.incoming(update.message, BOT_ID, BOT_NAME)


VOICE = {"file_id": "AwACAgI", "file_unique_id": "AgADvoice", "duration": 4, "mime_type": "audio/ogg",
         "file_size": 12345}


def test_a_voice_note_with_a_captioned_command_in_a_forum_topic() -> None:
    came = _telegram(_message(voice=VOICE, caption="/Transcribe@Earshot_Bot  please", message_thread_id=7,
                              is_topic_message=True,
                              caption_entities=[{"type": "bot_command", "offset": 0, "length": 23}]))
    assert came.chat == ChatKey("telegram", "-1001234", "7")
    assert came.sender == Sender("501", "alice", chat_name="teamchat")
    assert (came.message_id, came.thread_id) == ("41", "7")
    assert came.command == ("transcribe", "please")
    assert came.addressed and came.group and not came.private
    assert (came.user_lang, came.sender_name, came.sent) == ("de", "Alice Liddell", 1764936000.0)
    [audio] = came.audio
    assert audio == came.last_audio
    assert (audio.kind, audio.name, audio.mime_type, audio.size, audio.unique_id) == (
        "voice", "voice.ogg", "audio/ogg", 12345, "AgADvoice")
    # the ref is the adapter's own: its fetch reads it back
    assert telegram.MediaRef.loads(audio.ref).file_id == "AwACAgI"


def test_a_mention_in_reply_to_a_voice_note_asks_about_it() -> None:
    came = _telegram(_message(text="@earshot_bot what is said here?",
                              entities=[{"type": "mention", "offset": 0, "length": 12}],
                              reply_to_message=_message(message_id=40, voice=VOICE)))
    assert came.words == "what is said here?"
    assert came.command is None and came.addressed and came.audio == ()
    assert came.replied_audio is not None and came.replied_audio.unique_id == "AgADvoice"
    assert came.thread_id is None and came.chat.thread_id is None     # a reply is not a topic
    assert not came.replies_to_bot
    to_bot = _telegram(_message(text="and the second half?", reply_to_message=_message(
        message_id=40, text="the first half", **{"from": {"id": BOT_ID, "is_bot": True, "first_name": "earshot"}})))
    assert to_bot.addressed and to_bot.replies_to_bot and to_bot.replied_audio is None


def test_a_group_message_not_spoken_to_the_bot_is_not_addressed() -> None:
    came = _telegram(_message(text="lunch?"))
    assert not came.addressed and came.words == "lunch?" and came.command is None


def test_an_anonymous_admin_is_the_group_itself() -> None:
    came = _telegram(_message(text="/digest on", sender_chat={"id": -1001234, "type": "supergroup", "title": "Team"},
                              **{"from": {"id": 1087968824, "is_bot": True, "first_name": "Group",
                                          "username": "GroupAnonymousBot"}},
                              entities=[{"type": "bot_command", "offset": 0, "length": 7}]))
    assert came.sender == Sender("-1001234", None, chat_name="teamchat")
    assert came.sender_name == "Team" and came.command == ("digest", "on")


def test_a_private_document_that_is_not_audio_and_a_gif() -> None:
    private = {"id": 501, "type": "private", "first_name": "Alice"}
    pdf = _telegram(_message(chat=private, document={"file_id": "d", "file_unique_id": "u", "file_name": "a.pdf",
                                                     "mime_type": "application/pdf"}))
    assert pdf.private and pdf.addressed and not pdf.group
    assert pdf.audio == () and pdf.other_file
    gif = _telegram(_message(chat=private, animation={"file_id": "g", "file_unique_id": "g1", "width": 1,
                                                      "height": 1, "duration": 1},
                             document={"file_id": "g", "file_unique_id": "g1", "file_name": "a.mp4",
                                       "mime_type": "video/mp4"}))
    assert gif.audio == () and not gif.other_file       # nothing to hear, nothing to refuse


def test_a_tap_on_a_button_under_an_answer_in_a_topic() -> None:
    answer = _message(message_id=42, text="the transcript", message_thread_id=7, is_topic_message=True,
                      **{"from": {"id": BOT_ID, "is_bot": True, "first_name": "earshot", "username": BOT_NAME}})
    update = Update.de_json({"update_id": 10, "callback_query": {
        "id": "cbq1", "chat_instance": "ci", "data": "t:summarize:tok",
        "from": {"id": 502, "is_bot": False, "first_name": "Bob", "username": "bob", "language_code": "fr"},
        "message": answer}}, Bot("1:fake"))
    assert update is not None and update.callback_query is not None
    came = telegram.incoming_tap(update.callback_query)
    assert came is not None
    assert came.chat == ChatKey("telegram", "-1001234", "7") and came.thread_id == "7"
    assert came.sender == Sender("502", "bob", chat_name="teamchat") and came.user_lang == "fr"
    assert (came.message_id, came.words, came.group) == ("42", "t:summarize:tok", True)
    too_old = {"chat": answer["chat"], "message_id": 42, "date": 0}     # an InaccessibleMessage: no topic known
    update = Update.de_json({"update_id": 11, "callback_query": {
        "id": "cbq2", "chat_instance": "ci", "data": "x", "from": {"id": 502, "is_bot": False, "first_name": "Bob"},
        "message": too_old}}, Bot("1:fake"))
    assert update is not None and update.callback_query is not None
    old = telegram.incoming_tap(update.callback_query)
    assert old is not None and old.chat == ChatKey("telegram", "-1001234") and old.message_id == "42"


def test_carried_audio_is_plain_data() -> None:
    audio = CarriedAudio(json.dumps({"id": "F1"}), "clip", "a.webm", "audio/webm", 10, "F1")
    assert Incoming(ChatKey("x", "1"), Sender("u"), "m", audio=(audio,)).last_audio == audio


# --- Slack ----------------------------------------------------------------------------------------------------
ENVELOPE = {"token": "x", "team_id": "T0HOME", "api_app_id": "A1", "type": "event_callback", "event_id": "Ev1",
            "event_time": 1764936000}
CLIP = {"id": "F0CLIP", "created": 1764936000, "name": "audio_message.webm", "title": "Audio clip",
        "mimetype": "audio/webm", "filetype": "webm", "pretty_type": "WebM", "user": "U0ALICE", "size": 4567,
        "mode": "hosted", "is_external": False, "subtype": "slack_audio",
        "url_private": "https://files.slack.com/files-pri/T0HOME-F0CLIP/audio_message.webm",
        "url_private_download": "https://files.slack.com/files-pri/T0HOME-F0CLIP/download/audio_message.webm"}


def test_a_mention_with_a_clip_in_a_thread_of_a_shared_channel() -> None:
    event = {"type": "app_mention", "user": "U0ALICE", "user_team": "T0OTHER", "team": "T0OTHER",
             "text": "<@U0EARSHOT> summarize please", "ts": "1764936001.000200", "thread_ts": "1764935000.000100",
             "channel": "C0TEAM", "event_ts": "1764936001.000200", "files": [CLIP, {"id": "F0PDF", "name": "a.pdf",
                                                                                    "mimetype": "application/pdf"}]}
    came = slack.incoming_event(event, {**ENVELOPE, "event": event})
    assert came.chat == ChatKey("slack", "C0TEAM", "1764935000.000100")     # one history per thread
    assert came.sender == Sender("U0ALICE", team_id="T0OTHER")               # the user's own workspace
    assert (came.message_id, came.thread_id) == ("1764936001.000200", "1764935000.000100")
    assert came.words == "summarize please" and came.command == ("summarize", "please")
    assert came.addressed and came.group and not came.private and not came.other_file
    assert came.sent == 1764936001.0002
    [clip] = came.audio
    assert (clip.kind, clip.name, clip.mime_type, clip.size, clip.unique_id) == (
        "slack_audio", "audio_message.webm", "audio/webm", 4567, "F0CLIP")
    assert json.loads(clip.ref)["url_private_download"] == CLIP["url_private_download"]


def test_a_dm_keeps_one_history_and_a_plain_question_is_no_command() -> None:
    event = {"type": "message", "channel_type": "im", "user": "U0ALICE", "text": "help me with this",
             "ts": "1764936002.000300", "channel": "D0ALICE"}
    came = slack.incoming_event(event, {**ENVELOPE, "event": event})
    assert came.chat == ChatKey("slack", "D0ALICE") and came.private and came.addressed
    assert came.sender == Sender("U0ALICE", team_id="T0HOME")                # the envelope's workspace
    assert came.command is None and came.words == "help me with this" and came.thread_id is None
    assert command_in(came) is None


def test_a_channel_message_is_heard_not_addressed_and_a_non_audio_file_is_said_to_be_one() -> None:
    event = {"type": "message", "subtype": "file_share", "channel_type": "channel", "user": "U0BOB",
             "text": "", "ts": "1764936003.000400", "channel": "C0TEAM",
             "files": [{"id": "F0PDF", "name": "a.pdf", "mimetype": "application/pdf"}]}
    came = slack.incoming_event(event, {**ENVELOPE, "event": event})
    assert not came.addressed and came.group and came.audio == () and came.other_file


def test_a_slash_command() -> None:
    payload = {"token": "x", "team_id": "T0HOME", "team_domain": "home", "channel_id": "C0TEAM",
               "channel_name": "team", "user_id": "U0ALICE", "user_name": "alice", "command": "/earshot",
               "text": "Translate  German", "api_app_id": "A1", "is_enterprise_install": "false",
               "response_url": "https://hooks.slack.com/commands/T0HOME/1/abc", "trigger_id": "13345.98.ab"}
    came = slack.incoming_command(payload)
    assert came.chat == ChatKey("slack", "C0TEAM") and came.group and not came.private
    assert came.sender == Sender("U0ALICE", "alice", team_id="T0HOME")
    assert came.command == ("translate", "German") and came.message_id == "13345.98.ab"
    assert came.respond_to == payload["response_url"]
    assert command_in(came) == slack.Command("translate", "German", slack.Task.TRANSLATE)


def test_a_link_is_audio_to_fetch() -> None:
    found = slack.link_audio("https://example.com/talk.mp3 what is it about?")
    assert found is not None
    audio, rest = found
    assert (audio.kind, audio.name, rest) == ("link", "talk.mp3", "what is it about?")
    assert json.loads(audio.ref) == {"link": "https://example.com/talk.mp3", "name": "talk.mp3"}


# --- WhatsApp: a Cloud API webhook payload (Meta's shapes: entry[].changes[].value.messages[]) ---------------------
NUMBER_ID, ALICE_WA = "106540352242922", "16505551234"


def _webhook(*messages: dict[str, Any], number: str = NUMBER_ID) -> dict[str, Any]:
    return {"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": number},
            "contacts": [{"profile": {"name": "Alice"}, "wa_id": ALICE_WA}],
            "messages": list(messages)}}]}]}


def _wa(kind: str, n: int = 1, **fields: Any) -> dict[str, Any]:
    return {"from": ALICE_WA, "id": f"wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQz{n}", "timestamp": "1749416383",
            "type": kind, **fields}


def _came(*messages: dict[str, Any]) -> list[Incoming]:
    return list(whatsapp.messages_in(_webhook(*messages), NUMBER_ID))


def test_a_whatsapp_voice_note_is_audio_in_a_private_chat_always_addressed() -> None:
    [came] = _came(_wa("audio", audio={"mime_type": "audio/ogg; codecs=opus", "sha256": "n2QmV0x8+Xw=",
                                       "id": "1234567890123456", "voice": True}))
    assert came.chat == ChatKey("whatsapp", ALICE_WA) and came.sender == Sender(ALICE_WA)
    assert came.message_id == "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQz1"
    assert came.private and came.addressed and not came.group and came.user_lang is None
    assert came.sent == 1749416383.0                # what opens the 24-hour window
    assert (came.words, came.command, came.tap, came.other_file) == ("", None, None, False)
    [audio] = came.audio
    assert (audio.kind, audio.mime_type, audio.unique_id) == ("voice", "audio/ogg; codecs=opus", "sha256:n2QmV0x8+Xw=")
    # the ref is the adapter's own, naming the media id: its fetch reads it back
    media = whatsapp.media_ref(audio.ref)
    assert media is not None and (media.id, media.kind, media.voice) == ("1234567890123456", "audio", True)


def test_an_audio_document_with_a_caption_and_a_document_that_is_not_audio() -> None:
    song, pdf = _came(
        _wa("document", 1, document={"caption": "summarize", "filename": "talk.m4a", "mime_type": "audio/mp4",
                                     "sha256": "abc=", "id": "555"}),
        _wa("document", 2, document={"filename": "a.pdf", "mime_type": "application/pdf", "sha256": "x=",
                                     "id": "556"}))
    assert song.words == "summarize" and [(a.kind, a.name) for a in song.audio] == [("document", "talk.m4a")]
    assert pdf.audio == () and pdf.other_file


def test_whatsapp_text_commands_with_or_without_a_slash_and_a_plain_question() -> None:
    slashed, bare, question, unknown = _came(
        _wa("text", 1, text={"body": " /lang de "}), _wa("text", 2, text={"body": "translate German"}),
        _wa("text", 3, text={"body": "help me with this"}), _wa("text", 4, text={"body": "/frobnicate now"}))
    assert slashed.command == ("lang", "de") and slashed.words == "/lang de"
    assert command_in(bare) == Command("translate", "German", Task.TRANSLATE)
    assert question.command is None and question.words == "help me with this"
    assert unknown.command == ("frobnicate", "now")         # a slashed word is always a command (help answers it)


def test_a_whatsapp_audio_link_is_audio_to_fetch_and_the_words_after_it() -> None:
    [came] = _came(_wa("text", text={"body": "https://example.com/talk.mp3 what is it about?"}))
    [audio] = came.audio
    assert (audio.kind, audio.name, came.words, came.command) == ("link", "talk.mp3", "what is it about?", None)
    assert whatsapp.media_ref(audio.ref) is None and json.loads(audio.ref)["link"] == "https://example.com/talk.mp3"


def test_a_tap_on_a_reply_button_or_list_row_carries_its_id() -> None:
    context = {"from": "15550783881", "id": "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI5"}
    button, row = _came(
        _wa("interactive", 1, context=context, interactive={
            "type": "button_reply", "button_reply": {"id": "t:abc:summarize", "title": "Summary"}}),
        _wa("interactive", 2, context=context, interactive={
            "type": "list_reply", "list_reply": {"id": "t:abc:translate:de", "title": "Deutsch"}}))
    assert (button.tap, row.tap) == ("t:abc:summarize", "t:abc:translate:de")
    assert button.audio == () and button.command is None and not button.other_file


def test_an_image_is_not_audio_and_reactions_other_numbers_and_strangers_are_left_out() -> None:
    image, template = _came(
        _wa("image", 1, image={"caption": "look", "mime_type": "image/jpeg", "sha256": "i=", "id": "77"}),
        _wa("reaction", 2, reaction={"message_id": "wamid.x", "emoji": "\U0001f44d"}),
        _wa("button", 3, button={"payload": "p", "text": "usage"}),
        {**_wa("text", 4, text={"body": "hi"}), "from": "not-a-number"})
    assert image.other_file and image.audio == () and image.words == "look"
    assert template.command == ("usage", "")                 # a template's quick-reply button: its words
    assert list(whatsapp.messages_in(_webhook(_wa("text", text={"body": "hi"}), number="999"), NUMBER_ID)) == []
