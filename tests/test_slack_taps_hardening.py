"""The Slack reaction, the Home tab and message shortcuts under the allowed lists and in the user's language, and
the Web API arguments they send: each test failed before its fix (issue 21)."""
from __future__ import annotations

from pathlib import Path

from core.words import messages
from tests.conftest import CHANNEL, DM, MODEL_KEY, World, dm_clip, slack_running
from tests.fakes.dashscope import FakeDashScope
from tests.fakes.slack import TEAM_ID


def clip_message(world: World, clip: bytes) -> dict:
    record = world.slack.add_file(clip)
    return world.slack.add_message(CHANNEL, {"user": "U0CAROL", "text": "listen", "files": [record]})


def transcripts(world: World, ts: str) -> list[dict]:
    return [p for p in world.slack.posts if p.get("thread_ts") == ts and "440Hz" in str(p)]


async def test_a_refused_reactor_leaves_the_reaction_working_for_the_next_person(tmp_path: Path, clip: bytes):
    async with slack_running(tmp_path, allowed_users=("U0BOB",)) as world:
        message = clip_message(world, clip)
        await world.event(world.slack.react(CHANNEL, message["ts"], user="U0ALICE"))     # a stranger
        await world.idle()
        assert [e["user"] for e in world.slack.ephemerals] == ["U0ALICE"] and not transcripts(world, message["ts"])
        await world.event(world.slack.react(CHANNEL, message["ts"], user="U0BOB"))       # allowed
        await world.idle()
        assert len(transcripts(world, message["ts"])) == 1 and len(world.model.calls) == 1
        await world.event(world.slack.react(CHANNEL, message["ts"], user="U0BOB"))       # and once only
        await world.idle()
        assert len(transcripts(world, message["ts"])) == 1


async def test_a_rate_limited_reactor_leaves_the_reaction_working_for_the_next_person(tmp_path: Path,
                                                                                      clip: bytes):
    async with slack_running(tmp_path, user_requests_per_minute=1) as world:
        first, second = clip_message(world, clip), clip_message(world, clip)
        await world.event(world.slack.react(CHANNEL, first["ts"], user="U0ALICE"))
        await world.event(world.slack.react(CHANNEL, second["ts"], user="U0ALICE"))     # over her limit
        await world.idle()
        assert len(transcripts(world, first["ts"])) == 1 and not transcripts(world, second["ts"])
        await world.event(world.slack.react(CHANNEL, second["ts"], user="U0BOB"))
        await world.idle()
        assert len(transcripts(world, second["ts"])) == 1


async def test_an_allowed_workspace_covers_the_reaction(tmp_path: Path, clip: bytes):
    async with slack_running(tmp_path, allowed_chats=(TEAM_ID,)) as world:
        message = clip_message(world, clip)
        await world.event(world.slack.react(CHANNEL, message["ts"], user="U0ALICE"))
        await world.idle()
        assert not world.slack.ephemerals and len(transcripts(world, message["ts"])) == 1


async def test_an_allowed_workspace_covers_the_home_tab(tmp_path: Path):
    async with slack_running(tmp_path, allowed_chats=(TEAM_ID,)) as world:
        await world.event(world.slack.home_opened("U0ALICE"))
        assert "Your usage today" in str(world.slack.home_views["U0ALICE"]["blocks"])


async def test_opening_the_home_tab_keeps_a_strangers_one_refusal_for_when_they_ask(tmp_path: Path, clip: bytes):
    async with slack_running(tmp_path, allowed_users=("U0BOB",)) as world:
        await world.event(world.slack.home_opened("U0ALICE"))
        assert "Your usage today" not in str(world.slack.home_views["U0ALICE"]["blocks"])
        await world.event(dm_clip(world.slack, world.slack.add_file(clip)))
        said = [p["text"] for p in world.slack.said(DM)]
        assert said == [messages.text(messages.NOT_ALLOWED, None, platform="Slack", user_id="U0ALICE")], said
        assert not world.model.calls


async def test_the_shortcut_on_a_message_without_a_clip_answers_in_the_users_language(world: World):
    world.slack.add_user("U0LEA", "Léa", locale="fr-FR")
    message = world.slack.add_message(CHANNEL, {"user": "U0BOB", "text": "just words"})
    await world.post(world.slack.shortcut("earshot_summarize", CHANNEL, message["ts"], user="U0LEA"))
    french = messages.text(messages.NOT_AUDIO, "fr")
    assert french != messages.NOT_AUDIO
    assert [e["text"] for e in world.slack.ephemerals] == [french]


async def test_reactions_get_is_asked_for_the_full_list_as_a_boolean(world: World, clip: bytes):
    message = clip_message(world, clip)
    await world.event(world.slack.react(CHANNEL, message["ts"]))
    await world.idle()
    [call] = world.slack.calls_to("reactions.get")
    assert call.params["full"] == "true"
    assert len(transcripts(world, message["ts"])) == 1



async def test_a_long_answer_and_its_transcript_files_resume_after_what_was_posted(tmp_path: Path, clip: bytes):
    """The record of pieces delivered is the Telegram side's too (core.store.jobs.Deliveries)."""
    model = FakeDashScope(api_key=MODEL_KEY)
    long = "\n\n".join(f"Paragraph {i}: " + "words and more words, " * 60 for i in range(6))
    model.reply = lambda call: long
    async with slack_running(tmp_path, ds=model) as world:
        world.slack.fail("chat.postMessage", after=1)                      # the answer's second message, once
        world.slack.fail("files.completeUploadExternal", after=0)          # and the transcript files, once
        await world.event(dm_clip(world.slack, world.slack.add_file(clip), "transcribe"))
        await world.idle(within=60)
        posted = [p["text"] for p in world.slack.said(DM) if "words and more" in (p["text"] or "")]
        assert len(posted) >= 2 and len(posted) == len(set(posted))
        assert sorted(u["name"] for u in world.slack.uploads) == ["clip.srt", "clip.txt"]
