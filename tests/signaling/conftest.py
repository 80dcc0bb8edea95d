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


# -- the fake Genesys Cloud, as the agent ------------------------------------------------------


from agentd.config import Secret  # noqa: E402
from agentd.testing.fake_genesys import AGENT_USER_ID, CC_CLIENT_ID, CC_CLIENT_SECRET, LOGIN_CLIENT_ID  # noqa: E402
from agentd.testing.fake_genesys import agent_refresh_token as fake_agent_refresh_token  # noqa: E402
from agentd.testing.fake_genesys.fixtures import fake_genesys  # noqa: E402,F401  (a fixture)
from agentd.testing.fake_genesys.notifications import NotificationHub, hub_of  # noqa: E402
from agentd_plugins.genesys.client import GenesysClient  # noqa: E402
from agentd_plugins.genesys.settings import GenesysSettings  # noqa: E402


def agent_refresh_token(fake) -> str:
    """A refresh token of the agent's own login; several processes reuse the one token."""
    return fake_agent_refresh_token(fake.state, reused=True)


def agent_settings(fake, **overrides) -> GenesysSettings:
    values = dict(
        api_base_url=fake.url,
        login_base_url=fake.url,
        client_id=LOGIN_CLIENT_ID,
        auth="login",
        refresh_token=Secret(agent_refresh_token(fake)),
        user_id=AGENT_USER_ID,
        timeout_s=5.0,
    )
    values.update(overrides)
    return GenesysSettings(**values)


def agent_config(fake) -> str:
    return (
        "[genesys]\n"
        f'api_base_url = "{fake.url}"\nlogin_base_url = "{fake.url}"\n'
        f'client_id = "{LOGIN_CLIENT_ID}"\nauth = "login"\nuser_id = "{AGENT_USER_ID}"\n'
        f'refresh_token = "{agent_refresh_token(fake)}"\n'
    )


def service_config(fake) -> str:
    """Client credentials (no user context) with the agent named by [genesys] user_id."""
    return (
        "[genesys]\n"
        f'api_base_url = "{fake.url}"\nlogin_base_url = "{fake.url}"\n'
        f'client_id = "{CC_CLIENT_ID}"\nclient_secret = "{CC_CLIENT_SECRET}"\nuser_id = "{AGENT_USER_ID}"\n'
    )


def agent_client(fake, **overrides) -> GenesysClient:
    return GenesysClient(agent_settings(fake, **overrides))


def hub(fake) -> NotificationHub:
    return hub_of(fake)
