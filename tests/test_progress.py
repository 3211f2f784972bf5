"""The status line both bots edit while a long answer is worked on (core.flow.progress)."""
from __future__ import annotations

from core.flow.progress import STREAM_TAIL, StatusLine, Throttle, status_text
from core.values import Progress


def test_the_status_says_which_part_then_that_the_answer_is_being_written() -> None:
    assert status_text(Progress(1, 3), 4096) == "Listening… part 2 of 3"
    assert status_text(Progress(3, 3), 4096) == "Listening… all 3 parts heard, writing the answer"
    preview = status_text(Progress(1, 1, partial="word " * 50), 40)
    assert preview.endswith(STREAM_TAIL) and len(preview) <= 40


def test_edits_are_throttled_per_chat_and_a_quick_answer_shows_no_preview() -> None:
    throttle = Throttle(interval=60)
    line = StatusLine(throttle, "chat", 4096)
    assert line.next(Progress(0, 1, partial="Hel"), showing=False) is None, "a quick answer arrives whole"
    assert line.next(Progress(0, 3), showing=False) == "Listening… part 1 of 3"
    assert line.next(Progress(1, 3), showing=True) is None, "one edit per interval"
    assert StatusLine(throttle, "other chat", 4096).next(Progress(1, 3), showing=False) is not None
    throttle.back_off("chat", 0)
    line.shown = "Listening… part 2 of 3"
    assert line.next(Progress(1, 3), showing=True) is None, "nothing new to show"
    assert line.next(Progress(2, 3), showing=True) == "Listening… part 3 of 3"
