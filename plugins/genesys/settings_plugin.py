"""Declares ``[genesys]`` so every plugin (dns, https, the API client) reads one region."""

from __future__ import annotations

import structlog

from agentd import hookimpl
from agentd.config import Config, ConfigSection

from .settings import KNOWN_REGIONS, GenesysSettings, validate

log = structlog.get_logger("agentd.genesys")


@hookimpl
def agentd_config_sections():
    return [ConfigSection("genesys", GenesysSettings, "the Genesys Cloud organisation: region and OAuth client")]


@hookimpl
def agentd_configure(config: Config) -> None:
    settings: GenesysSettings = config.section("genesys")
    validate(settings, str(config.path) if config.path else None)
    if settings.region not in KNOWN_REGIONS and not settings.api_base_url:
        log.warning("region is not one of the known Genesys Cloud regions", region=settings.region)
