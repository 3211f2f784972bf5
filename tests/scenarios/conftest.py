"""The scenario suite's one fixture: a driver for each adapter (tests.scenarios.drivers.DRIVERS), with its stand-ins
served and the model stand-in of tests/conftest.py; the adapter itself is started by the scenario."""
from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.dashscope import FakeDashScope
from tests.scenarios.driver import Driver, running
from tests.scenarios.drivers import DRIVERS


@pytest.fixture(params=sorted(DRIVERS))
async def driver(request: pytest.FixtureRequest, model: FakeDashScope, tmp_path: Path) -> AsyncIterator[Driver]:
    async with running(DRIVERS[request.param], tmp_path, model) as d:
        yield d
