"""Real Telegram payloads that fooled the first version: GIFs, anonymous admins, bad time zones, the rate
limit at the door."""
from __future__ import annotations

from core.words import messages
from tests.conftest import Harness, bot_running
from tests.test_telegram import clip

GROUP_A, GROUP_B = -1001111, -1002222


async def test_gif_is_ignored_and_does_not_replace_the_latest_voice_note(bot: Harness) -> None:
    chat = 5151
    bot.tg.push(chat, kind="animation", data=b"\x00\x00\x00\x18ftypmp42 not audio at all")
    await bot.idle()
    assert bot.tg.texts(chat) == [] and not bot.tg.called("getFile"), "a GIF in a private chat gets no answer"
    bot.tg.push(GROUP_A, chat_type="supergroup", kind="voice", data=clip(440))
    bot.tg.push(GROUP_A, chat_type="supergroup", kind="animation", data=b"gif bytes")
    bot.tg.push(GROUP_A, chat_type="supergroup", text="/transcribe")
    [answer] = await bot.said(GROUP_A)
    assert "440Hz" in answer["text"], answer["text"]


async def test_anonymous_admins_of_different_groups_are_different_senders(tmp_path) -> None:
    async with bot_running(tmp_path, user_requests_per_minute=1) as h:
        for group in (GROUP_A, GROUP_B):
            h.tg.push(group, chat_type="supergroup", kind="voice", data=clip(440), caption="/transcribe",
                      anonymous_admin=True)
            [answer] = await h.said(group)
            assert "440Hz" in answer["text"], answer["text"]
        # within the minute, the same group's anonymous admin is the same sender: one request a minute
        h.tg.push(GROUP_A, chat_type="supergroup", kind="voice", data=clip(550), caption="/transcribe",
                  anonymous_admin=True)
        said = await h.said(GROUP_A, 2)
        assert "Slow down" in said[-1]["text"]


async def test_bad_time_zone_is_answered_with_an_example(bot: Harness) -> None:
    for n, zone in enumerate(("Europe", "x" * 300, "../../etc/passwd"), 1):
        bot.tg.push(GROUP_A, chat_type="supergroup", text=f"/digest daily 09:00 {zone}", anonymous_admin=True)
        said = await bot.said(GROUP_A, n)
        assert said[-1]["text"].startswith("Unknown time zone"), said[-1]["text"]
        assert "Europe/Berlin" in said[-1]["text"] and len(said[-1]["text"]) < 250
    assert messages.INTERNAL not in bot.tg.texts(GROUP_A)


async def test_rate_limited_notes_are_not_downloaded_and_the_sender_is_told_once(tmp_path) -> None:
    async with bot_running(tmp_path, user_requests_per_minute=2) as h:
        chat = 777
        for hz in (440, 550, 660, 770, 880, 990):
            h.tg.push(chat, kind="voice", data=clip(hz))
        await h.said(chat, 3)
        await h.idle()
        texts = h.tg.texts(chat)
        assert len(h.tg.called("getFile")) == 2, "only the notes within the limit are downloaded"
        assert sum("Slow down" in t for t in texts) == 1, texts
        assert sum("Hz@" in t for t in texts) == 2, texts


async def test_an_existing_database_file_is_made_private(tmp_path) -> None:
    db = tmp_path / "earshot.db"
    db.touch(mode=0o644)
    db.chmod(0o644)
    async with bot_running(tmp_path) as h:
        h.tg.push(31, text="/usage")
        await h.said(31)
        assert db.stat().st_mode & 0o777 == 0o600
        assert all(p.stat().st_mode & 0o077 == 0 for p in tmp_path.glob("earshot.db*"))


async def test_admin_usage_detail_only_in_private_chats(tmp_path) -> None:
    async with bot_running(tmp_path, admin_users="@boss") as h:
        h.tg.push(701, kind="voice", data=clip(440))
        await h.said(701)
        h.tg.push(GROUP_A, chat_type="supergroup", user_id=9, username="boss", text="/usage")
        [public] = await h.said(GROUP_A)
        assert "Top users" not in public["text"] and "701" not in public["text"], public["text"]
        h.tg.push(9, username="boss", text="/usage")
        [private] = await h.said(9)
        assert "Top users today:" in private["text"] and "701" in private["text"]
