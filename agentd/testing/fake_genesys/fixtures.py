"""pytest fixtures: ``fake_genesys`` (a running fake with the default scenario).

Use with ``pytest_plugins = ["agentd.testing.fake_genesys.fixtures"]`` in a root
conftest, or ``from agentd.testing.fake_genesys.fixtures import fake_genesys`` in any
conftest. The fixture is async (pytest-asyncio); ``fake_genesys.state`` is the live state.
"""

from __future__ import annotations

from typing import AsyncIterator

import pytest_asyncio

from .scenario import default_scenario
from .server import FakeGenesys


@pytest_asyncio.fixture
async def fake_genesys() -> AsyncIterator[FakeGenesys]:
    async with FakeGenesys(default_scenario()) as fake:
        yield fake
