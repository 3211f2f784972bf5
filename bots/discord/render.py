"""earshot's answers as Discord messages: at most 2000 characters each, mentions never pinging anyone, the
buttons under an answer about audio, and the duration and waveform a voice message carries."""
from __future__ import annotations

import base64
import warnings
from collections.abc import Sequence

import discord

from core.audio import pipeline
from core.values import Task
from core.words.text import split_text

from ..buttons import LANGUAGES, callback_data, language_labels, task_labels

with warnings.catch_warnings():      # deprecated on 3.11/3.12; audioop-lts replaces it on 3.13+ (as core.audio)
    warnings.simplefilter("ignore")
    import audioop

MESSAGE_LIMIT = 2000                      # Discord refuses longer content (50035 BASE_TYPE_MAX_LENGTH)
NO_PINGS = discord.AllowedMentions.none()   # model output may contain @everyone or <@id>: never a ping
WAVEFORM_STEP = 0.1                        # seconds per waveform sample, as Discord's clients take them
WAVEFORM_MAX = 256                         # samples at most
SAMPLE_RATE, SAMPLE_WIDTH = pipeline.SAMPLE_RATE, pipeline.SAMPLE_WIDTH    # what core.audio decodes to


def pieces(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """The text in messages that each fit (core.words.text splits at paragraph, line, sentence, word)."""
    return split_text(text.strip(), limit) or ["…"]


def answer_view(token: str, answered: Task | None = None, languages: Sequence[tuple[str, str]] = LANGUAGES, *,
                lang: str | None = None) -> discord.ui.View:
    """An action row of the other tasks for the same audio, and a language menu that asks for a translation, all
    in the chat's language `lang` (labels, the menu's placeholder, the languages' names).

    Custom ids are bots.buttons' strings (the menu's is Translate's, its values the language codes). The view
    is finished before it is sent: discord.py then neither keeps it nor dispatches it, and earshot reads every
    press itself (.handlers), whichever process sent the buttons."""
    view = discord.ui.View(timeout=None)
    labels = dict(task_labels(lang))
    for task, label in labels.items():
        if task not in (answered, Task.TRANSLATE):
            view.add_item(discord.ui.Button(label=label, custom_id=callback_data(token, task), row=0))
    if answered is not Task.TRANSLATE:
        view.add_item(discord.ui.Select(custom_id=callback_data(token, Task.TRANSLATE), row=1,
                                        placeholder=labels[Task.TRANSLATE],
                                        options=[discord.SelectOption(label=name, value=code)
                                                 for code, name in language_labels(lang, languages)]))
    view.stop()
    return view


def waveform(ogg: bytes, seconds: float, *, timeout: float = 60) -> str:
    """A voice message's waveform: the loudness of each 100 ms (at most 256 samples, the loudest kept when
    there are more), scaled to 0-255, in base64, as Discord's clients make it."""
    try:
        pcm = pipeline.decode(ogg, max_seconds=seconds + 5, timeout=timeout).segment.raw_data
    except Exception:                       # a flat line is still a valid voice message
        return base64.b64encode(bytes(8)).decode()
    step = int(SAMPLE_RATE * WAVEFORM_STEP) * SAMPLE_WIDTH
    levels = [audioop.rms(pcm[i:i + step], SAMPLE_WIDTH) for i in range(0, len(pcm), step)] or [0]
    if len(levels) > WAVEFORM_MAX:
        size = len(levels) / WAVEFORM_MAX
        levels = [max(levels[int(i * size):max(int((i + 1) * size), int(i * size) + 1)]) for i in range(WAVEFORM_MAX)]
    peak = max(levels) or 1
    return base64.b64encode(bytes(min(255, round(v / peak * 255)) for v in levels)).decode()
