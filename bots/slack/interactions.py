"""Slack interaction payloads and events -> small typed dataclasses (pure: no I/O, no Slack client).

Message shortcuts (`message_action`), Block Kit actions (`block_actions`, from an answer's buttons or the Home
tab), `reaction_added` and `app_home_opened` events. Anything not ours, or not shaped as Slack sends it, parses
to None (or is left out), so a listener simply acknowledges and does nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from core.flow.audio_refs import looks_like_token
from core.values import CarriedAudio, Task

from .blocks import AUTO_LANGUAGE, HOME_LANGUAGE_ACTION, HOME_VOICE_ACTION, TASK_ACTION_PREFIX, TRANSLATE_ACTION
from .blocks import LANGUAGES as BLOCK_LANGUAGES
from .convert import audio_files, carried

# message shortcuts: callback_id (deploy/slack-manifest.yml) -> the task it asks for
SHORTCUTS: dict[str, Task] = {"earshot_transcribe": Task.TRANSCRIBE, "earshot_summarize": Task.SUMMARIZE}
BUTTON_TASKS = {Task.TRANSCRIBE, Task.SUMMARIZE, Task.SENTIMENT, Task.EVENTS}


def _s(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class Shortcut:
    """"Transcribe/Summarize with earshot" on a message: answer in that message's thread."""

    task: Task
    user_id: str
    team_id: str | None
    channel_id: str
    message_ts: str
    thread_ts: str               # where the answer goes: the message's thread, or a new one under it
    file_ids: tuple[str, ...]    # the message's audio and video files (empty: say there is no clip)
    response_url: str | None     # for an ephemeral answer when the app can't post in the channel
    trigger_id: str | None
    audio: tuple[CarriedAudio, ...] = ()    # those files, as a job fetches them


def parse_shortcut(payload: dict[str, Any]) -> Shortcut | None:
    if payload.get("type") != "message_action" or (task := SHORTCUTS.get(str(payload.get("callback_id")))) is None:
        return None
    message, user, channel = _d(payload.get("message")), _d(payload.get("user")), _d(payload.get("channel"))
    user_id, channel_id = _s(user.get("id")), _s(channel.get("id"))
    message_ts = _s(payload.get("message_ts")) or _s(message.get("ts"))
    if not (user_id and channel_id and message_ts):
        return None
    team = _s(user.get("team_id")) or _s(_d(payload.get("team")).get("id"))
    found = audio_files(message)
    return Shortcut(task, user_id, team, channel_id, message_ts, _s(message.get("thread_ts")) or message_ts,
                    tuple(f["id"] for f in found), _s(payload.get("response_url")), _s(payload.get("trigger_id")),
                    tuple(carried(f) for f in found))


@dataclass(frozen=True, slots=True)
class TaskButton:
    """A button (or the Translate menu) under an answer: a task on the audio behind `token`."""

    token: str
    task: Task
    language: str | None          # Translate: the language's name
    user_id: str
    team_id: str | None
    channel_id: str
    message_ts: str               # the answer carrying the button
    thread_ts: str                # where the new answer goes
    response_url: str | None


@dataclass(frozen=True, slots=True)
class HomeChange:
    """A setting changed on the Home tab."""

    setting: Literal["voice", "language"]
    value: str | None             # voice: "on" / "off"; language: a code, or None for "as spoken"
    user_id: str
    team_id: str | None
    view_id: str | None
    view_hash: str | None         # pass to views.publish so a stale tab is not overwritten


def parse_block_actions(payload: dict[str, Any],
                        languages: tuple[tuple[str, str], ...] = BLOCK_LANGUAGES) -> list[TaskButton | HomeChange]:
    """Every action of ours in a block_actions payload (usually one), in order."""
    if payload.get("type") != "block_actions":
        return []
    user = _d(payload.get("user"))
    user_id = _s(user.get("id"))
    if not user_id:
        return []
    team = _s(user.get("team_id")) or _s(_d(payload.get("team")).get("id"))
    container, message, view = _d(payload.get("container")), _d(payload.get("message")), _d(payload.get("view"))
    out: list[TaskButton | HomeChange] = []
    for action in payload.get("actions") or []:
        action = _d(action)
        action_id = str(action.get("action_id") or "")
        chosen = _s(_d(action.get("selected_option")).get("value"))
        if action_id in (HOME_VOICE_ACTION, HOME_LANGUAGE_ACTION):
            if chosen is None or (action_id == HOME_VOICE_ACTION and chosen not in ("on", "off")):
                continue
            setting: Literal["voice", "language"] = "voice" if action_id == HOME_VOICE_ACTION else "language"
            value = None if setting == "language" and chosen == AUTO_LANGUAGE else chosen
            if setting == "language" and value is not None and value not in dict(languages):
                continue
            out.append(HomeChange(setting, value, user_id, team, _s(view.get("id")) or _s(container.get("view_id")),
                                  _s(view.get("hash"))))
            continue
        channel_id = _s(container.get("channel_id")) or _s(_d(payload.get("channel")).get("id"))
        message_ts = _s(container.get("message_ts")) or _s(message.get("ts"))
        if not (channel_id and message_ts):
            continue
        thread_ts = _s(container.get("thread_ts")) or _s(message.get("thread_ts")) or message_ts
        response_url = _s(payload.get("response_url"))
        if action_id.startswith(TASK_ACTION_PREFIX):
            try:
                task = Task(action_id.removeprefix(TASK_ACTION_PREFIX))
            except ValueError:
                continue
            token = str(action.get("value") or "")
            if task in BUTTON_TASKS and looks_like_token(token):
                out.append(TaskButton(token, task, None, user_id, team, channel_id, message_ts, thread_ts,
                                      response_url))
        elif action_id == TRANSLATE_ACTION and chosen and ":" in chosen:
            token, code = chosen.rsplit(":", 1)
            if looks_like_token(token) and code in dict(languages):
                out.append(TaskButton(token, Task.TRANSLATE, dict(languages)[code], user_id, team, channel_id,
                                      message_ts, thread_ts, response_url))
    return out


@dataclass(frozen=True, slots=True)
class Reaction:
    """Someone added the transcript reaction to a message."""

    user_id: str
    channel_id: str
    message_ts: str
    item_user: str | None         # who wrote the reacted message (absent for webhook posts)
    event_ts: str | None

    @property
    def once_key(self) -> str:
        """The same for every reaction to one message: claim it (HistoryStore.claim_event) to answer only once."""
        return f"reaction:{self.channel_id}:{self.message_ts}"


def parse_reaction(event: dict[str, Any], reaction: str = "memo") -> Reaction | None:
    """A `reaction_added` event of `reaction` (skin tones ignored) on a message; else None."""
    if event.get("type") != "reaction_added":
        return None
    name = str(event.get("reaction") or "").split("::", 1)[0]
    item = _d(event.get("item"))
    user_id, channel, ts = _s(event.get("user")), _s(item.get("channel")), _s(item.get("ts"))
    if name != reaction.strip(":") or item.get("type") != "message" or not (user_id and channel and ts):
        return None
    return Reaction(user_id, channel, ts, _s(event.get("item_user")), _s(event.get("event_ts")))


@dataclass(frozen=True, slots=True)
class HomeOpened:
    """A user opened earshot's Home tab: publish it for them."""

    user_id: str
    channel_id: str | None
    view_id: str | None           # None the first time: no view published yet
    view_hash: str | None


def parse_home_opened(event: dict[str, Any]) -> HomeOpened | None:
    """An `app_home_opened` event on the Home tab (the Messages tab is not ours to draw); else None."""
    if event.get("type") != "app_home_opened" or event.get("tab", "home") != "home":
        return None
    user_id = _s(event.get("user"))
    if not user_id:
        return None
    view = _d(event.get("view"))
    return HomeOpened(user_id, _s(event.get("channel")), _s(view.get("id")), _s(view.get("hash")))
