"""Fixtures of the signaling tests: loopback WebSocket servers and an in-process check run."""

from __future__ import annotations

import pytest

from agentd.app import App
from agentd.model import CheckResult

from .servers import ServerThread

OFFLINE_GENESYS = """
[genesys]
# the reserved .invalid TLD never resolves (RFC 6761): no Genesys credentials, no traffic
region = "agentd-test.invalid"
"""


@pytest.fixture
def ws_servers():
    servers = ServerThread()
    try:
        yield servers
    finally:
        servers.close()


async def run_websocket_check(agentd_env, websocket_toml: str, *, genesys_toml: str = OFFLINE_GENESYS) -> CheckResult:
    """Write a config, load the real app and plugins, run only the ``websocket`` check."""
    path = agentd_env.write_config(genesys_toml + "\n[websocket]\n" + websocket_toml)
    app = App.load(path)
    report = await app.run_check("preshift", only=["websocket"], deadline_s=30)
    (result,) = [c for c in report.checks if c.id == "websocket"]
    return result
