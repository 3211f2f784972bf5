"""Shared fixtures. No test may reach a real service: credentials and endpoints are cleared first."""
from __future__ import annotations

import os

import pytest

from tests.fakes.dashscope import FakeDashScope
from tests.fakes.server import Served

MODEL_KEY = "sk-test"


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith(("TELEGRAM_", "SLACK_", "DASHSCOPE_", "EARSHOT_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EARSHOT_DB", str(tmp_path / "earshot.db"))
    # no fixed port for /healthz and /metrics: tests (and other checkouts on the machine) run side by side
    monkeypatch.setenv("EARSHOT_METRICS_PORT", "0")


@pytest.fixture
async def model():
    """The DashScope stand-in on loopback, answering to MODEL_KEY; `.url` is its root."""
    fake = FakeDashScope(api_key=MODEL_KEY)
    async with Served(fake.app) as served:
        fake.url = served.url
        yield fake
