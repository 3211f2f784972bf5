"""A tap on audio already in the chat — a button under an answer, a Slack message shortcut or reaction — becomes
a job the same way a typed command does: the audio behind the button's token (core.flow.audio_refs, bound to the
chat), the same door (core.flow.intake: access, rate limit, the request's checks), a durable job in the chat's
reserved place (core.flow.runner). Budgets are the Assistant's, when the job runs."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from core.flow import intake
from core.flow.access import AccessPolicy
from core.flow.runner import JobRunner, Reservation
from core.store.jobs import Job, NewJob
from core.values import ChatKey, Sender, Task

# the tasks whose answers get buttons for the other tasks on the same audio
AUDIO_TASKS = frozenset({Task.CHAT, Task.ASK, Task.TRANSCRIBE, Task.SUMMARIZE, Task.SENTIMENT, Task.EVENTS,
                         Task.TRANSLATE})



def wants_buttons(task: Task, file_ref: str | None) -> bool:
    """Whether an answer to this job is about audio, so buttons for the other tasks belong under it."""
    return file_ref is not None and task in AUDIO_TASKS


@dataclass(frozen=True, slots=True)
class Tap:
    """Someone asked `task` of audio in `chat` by a tap: `key` is unique per tap (the platform's id for it), so a
    redelivered tap is one job; `message_ref` is where the answer goes (the adapter's own format)."""

    key: str
    chat: ChatKey
    sender: Sender
    task: Task
    message_ref: str
    text: str | None = None         # Translate: the language
    lang: str | None = None         # the chat's language, for what is said


async def submit_tap(access: AccessPolicy, jobs: JobRunner, tap: Tap, file_ref: str | None, slot: Reservation, *,
                     say: Callable[[str], Awaitable[None]]) -> Job | None:
    """The job for a tap on the audio `file_ref`, or None when the door refused (said through `say`). A typed
    request goes the same way (no `file_ref`: a follow-up, or a task with no audio yet, which the door refuses)."""
    if not await intake.admitted(access, tap.chat, tap.sender, tap.task, tap.text, has_audio=file_ref is not None,
                                 say=say, lang=tap.lang):
        return None
    return await jobs.submit(NewJob(key=tap.key, chat=tap.chat, task=tap.task, message_ref=tap.message_ref,
                                    file_ref=file_ref, text=tap.text, sender=tap.sender, lang=tap.lang), slot)

