"""Start-up failures an operator can cause: one clear line on stderr, exit code 4, no traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.server import Threaded
from tests.fakes.telegram import FakeTelegram

EARSHOT = str(Path(sys.executable).with_name("earshot"))


def _bad_databases(tmp_path: Path) -> dict[str, Path]:
    directory = tmp_path / "a-directory.db"
    directory.mkdir()
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not SQLite, just words " * 200)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    return {"directory": directory, "corrupt": corrupt, "unwritable": blocker / "earshot.db"}


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EARSHOT, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


def _assert_one_clear_line(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 4, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("earshot: ") and all(w in last for w in words), proc.stderr[-2000:]


@pytest.mark.parametrize("kind", ["directory", "corrupt", "unwritable"])
def test_telegram_bot_with_an_unusable_database(tmp_path: Path, kind: str) -> None:
    db = _bad_databases(tmp_path)[kind]
    tg = FakeTelegram()
    with Threaded(tg.app) as tgs:
        proc = _run(["telegram"], EARSHOT_DB=str(db), TELEGRAM_BOT_TOKEN=tg.token, TELEGRAM_API_BASE_URL=tgs.url,
                    DASHSCOPE_API_KEY="sk-test")
    _assert_one_clear_line(proc, "database", str(db), "EARSHOT_DB")


def test_unwritable_directory_for_a_one_shot_command(tmp_path: Path) -> None:
    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"RIFF")
    proc = _run(["transcribe", str(clip)], EARSHOT_DB=str(_bad_databases(tmp_path)["unwritable"]),
                DASHSCOPE_API_KEY="sk-test")
    _assert_one_clear_line(proc, "database", "EARSHOT_DB")


def test_telegram_unreachable_at_start(tmp_path: Path) -> None:
    proc = _run(["telegram"], EARSHOT_DB=str(tmp_path / "ok.db"), TELEGRAM_BOT_TOKEN="123:abc",
                TELEGRAM_API_BASE_URL="http://127.0.0.1:9", DASHSCOPE_API_KEY="sk-test")
    _assert_one_clear_line(proc, "Telegram", "TELEGRAM_API_BASE_URL")
