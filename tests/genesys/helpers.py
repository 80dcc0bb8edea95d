"""Shared set-up of the genesys tests: settings and configuration pointing at the fake."""

from __future__ import annotations

from typing import Any

from agentd.config import Secret
from agentd.testing.fake_genesys import CC_CLIENT_ID, CC_CLIENT_SECRET, INTEGRATION_ACTIVE_ID, INTEGRATION_INACTIVE_ID, FakeGenesys
from agentd_plugins.genesys.client import GenesysClient
from agentd_plugins.genesys.settings import GenesysSettings


def settings_for(fake: FakeGenesys, **overrides: Any) -> GenesysSettings:
    values: dict[str, Any] = dict(
        api_base_url=fake.url,
        login_base_url=fake.url,
        client_id=CC_CLIENT_ID,
        client_secret=Secret(CC_CLIENT_SECRET),
        timeout_s=5.0,
    )
    values.update(overrides)
    return GenesysSettings(**values)


def fast_client(fake: FakeGenesys, **overrides: Any) -> GenesysClient:
    """A client whose 5xx backoff is short, so retry tests take milliseconds."""
    client = GenesysClient(settings_for(fake, **overrides))
    client.backoff_base_s = 0.02
    return client


def config_text(fake: FakeGenesys, *, secret_env: str | None = "AGENTD_TEST_CLIENT_SECRET", extra: str = "") -> str:
    """A whole agentd.toml for the CLI: client secret by env reference, both integrations."""
    secret = f'client_secret = {{ env = "{secret_env}" }}\n' if secret_env else ""
    return (
        "[genesys]\n"
        f'api_base_url = "{fake.url}"\n'
        f'login_base_url = "{fake.url}"\n'
        f'client_id = "{CC_CLIENT_ID}"\n'
        f"{secret}"
        f'integration_ids = ["{INTEGRATION_ACTIVE_ID}", "{INTEGRATION_INACTIVE_ID}"]\n'
        "timeout_s = 5.0\n"
        f"{extra}"
    )
