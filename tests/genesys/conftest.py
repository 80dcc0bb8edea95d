"""The genesys tests run against the fake Genesys Cloud (agentd.testing.fake_genesys)."""

from agentd.testing.fake_genesys.fixtures import fake_genesys  # noqa: F401  (a fixture)
