"""Shared fixtures. No test may reach a real service: credentials and endpoints are cleared first."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith(("TELEGRAM_", "SLACK_", "DASHSCOPE_", "EARSHOT_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EARSHOT_DB", str(tmp_path / "earshot.db"))
