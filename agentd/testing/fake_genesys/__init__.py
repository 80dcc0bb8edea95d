"""A fake Genesys Cloud for tests: a real HTTP server on loopback speaking the Platform API.

    from agentd.testing.fake_genesys import FakeGenesys, default_scenario

    async with FakeGenesys(default_scenario()) as fake:
        config = fake.config_toml(client_id=CC_CLIENT_ID, client_secret=CC_CLIENT_SECRET)

Plugin authors can use the ``fake_genesys`` pytest fixture: add
``pytest_plugins = ["agentd.testing.fake_genesys.fixtures"]`` to their root conftest (or
import the fixture). See ``server.py`` for the endpoints, faults and the extension point
(``notifications.py`` plugs in through ``install(app, fake)``).
"""

from .scenario import (
    AGENT_USER_ID,
    CC_CLIENT_ID,
    CC_CLIENT_SECRET,
    CODE_CLIENT_ID,
    CODE_CLIENT_SECRET,
    DROPPED_CALL_ID,
    INTEGRATION_ACTIVE_ID,
    INTEGRATION_INACTIVE_ID,
    LOGIN_CLIENT_ID,
    PHONE_ID,
    PKCE_ONLY_CLIENT_ID,
    QUEUE_ID,
    STATION_ID,
    add_call,
    agent_refresh_token,
    default_scenario,
    seed_diagnostics_payload,
)
from .server import FakeGenesys, error_json
from .state import FakeState, Fault, OAuthClient, RecordedRequest, TokenGrant

__all__ = [
    "agent_refresh_token",
    "AGENT_USER_ID",
    "CC_CLIENT_ID",
    "CC_CLIENT_SECRET",
    "CODE_CLIENT_ID",
    "CODE_CLIENT_SECRET",
    "DROPPED_CALL_ID",
    "INTEGRATION_ACTIVE_ID",
    "INTEGRATION_INACTIVE_ID",
    "LOGIN_CLIENT_ID",
    "PHONE_ID",
    "PKCE_ONLY_CLIENT_ID",
    "QUEUE_ID",
    "STATION_ID",
    "FakeGenesys",
    "FakeState",
    "Fault",
    "OAuthClient",
    "RecordedRequest",
    "TokenGrant",
    "add_call",
    "default_scenario",
    "error_json",
    "seed_diagnostics_payload",
]
