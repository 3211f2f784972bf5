"""Database failures said plainly: a damaged table met after the model answered costs one clear line and
exit 4, with the answer still printed; a PostgreSQL password is never shown, even one holding a bare `@`."""
from __future__ import annotations

import logging
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import Settings
from core.errors import StorageError
from core.logs import RedactingFilter
from core.store.db import Database
from tests.audio_fixtures import make_clip
from tests.conftest import cli_env, earshot, one_clean_line
from tests.postgres import Cluster


def damage(db: Path, name: str) -> None:
    """Overwrite the root page of table or index `name` with garbage, as a failing disk would."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
        page = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(db, "r+b") as f:
        f.seek((root - 1) * page)
        f.write(b"\xa5" * page)


@pytest.fixture
def two_clips(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "first.ogg", tmp_path / "second.ogg"
    make_clip(first, [(440, 0.5, 1.0)], total_s=2.0, fmt="ogg")
    make_clip(second, [(660, 0.5, 1.0)], total_s=2.0, fmt="ogg")
    return first, second


@pytest.mark.parametrize("damaged", ["turns", "answer_cache", "idx_turns_created"])
def test_a_damaged_table_after_the_answer_prints_it_then_one_line_and_exit_4(
        threaded_model, tmp_path: Path, two_clips: tuple[Path, Path], damaged: str) -> None:
    env = cli_env(threaded_model, tmp_path)
    db = Path(env["EARSHOT_DB"])
    first, second = two_clips
    assert earshot(env, "transcribe", first).returncode == 0        # the file made, with its tables in use
    damage(db, damaged)
    calls = len(threaded_model.calls)
    p = earshot(env, "transcribe", second)
    line = one_clean_line(p.stderr)
    assert len(threaded_model.calls) > calls     # the model was asked (and paid): its answer is not lost
    assert re.findall(r"(\d+)Hz@", p.stdout) == ["660"], p.stdout
    assert p.returncode == 4, p.stderr
    assert str(db) in line and "backup" in line and "EARSHOT_DB" in line


# --- PostgreSQL passwords -----------------------------------------------------------------------------------

AT_URL = "postgresql://earshot:tPass@word9@127.0.0.1:1/earshot"       # libpq splits at the first @, Python at the last
PIECES = ("tPass", "word9")


async def test_a_password_with_a_bare_at_never_shows_in_the_error() -> None:
    with pytest.raises(StorageError) as caught:
        await Database(AT_URL).open()
    text = str(caught.value)
    assert "127.0.0.1:1" in text and "%40" in text, text
    assert not any(piece in text for piece in PIECES), text


def test_every_piece_of_such_a_password_is_redacted_from_logs() -> None:
    mask = RedactingFilter(Settings(db_path=AT_URL).secrets())
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed to resolve host '%s'",
                               ("word9@127.0.0.1",), None)
    mask.filter(record)
    assert "word9" not in record.getMessage()


def test_earshot_doctor_names_the_problem_without_the_password(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "EARSHOT_DB": AT_URL, "EARSHOT_METRICS_PORT": "0"}
    done = subprocess.run([str(Path(sys.executable).with_name("earshot")), "doctor"], env=env,
                          capture_output=True, text=True, timeout=120)
    out = done.stdout + done.stderr
    assert "database" in out and "%40" in out, out
    assert not any(piece in out for piece in PIECES), out


async def test_a_postgresql_error_is_one_storage_error_without_the_password(postgres: Cluster) -> None:
    db = Database(postgres.fresh())
    await db.open()
    try:
        await db.execute("DROP TABLE turns CASCADE")           # a table gone under the process
        with pytest.raises(StorageError) as caught:
            await db.fetch("SELECT * FROM turns")
        text = str(caught.value)
        assert "PostgreSQL" in text and "turns" in text and "EARSHOT_DB" in text, text
        assert postgres.password not in text
    finally:
        await db.close()
