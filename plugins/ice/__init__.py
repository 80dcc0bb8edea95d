"""The ``[ice]`` section: the ICE servers (RTCIceServer naming) every media probe uses.

This plugin contributes no check. It owns the configuration that ``stun``, ``nat``,
``turn.*``, ``udp.ports`` and ``media.path`` share, validates every url when the
configuration loads (so a typo is a configuration error naming the key, not a failed
check), and offers the helpers those plugins import:

- :func:`.selection.selection` - the ICE servers one run tests: ``[[ice.servers]]``, the
  softphone's own (through the ``agentd_ice_servers`` hook), or both (``[ice] source``);
- :func:`endpoints` - every configured url with its credentials, parsed;
- :func:`parse_port_range` - ``"16384-65535"`` to ``(16384, 65535)``;
- :mod:`.probes` - STUN bindings and TURN allocations with hard deadlines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agentd import hookimpl
from agentd.config import Config, ConfigSection, Secret
from agentd.errors import ConfigError

from .urls import IceUrl, IceUrlError, parse_ice_url

DEFAULT_MEDIA_PORT_RANGE = "16384-65535"
"""Genesys Cloud's media range (widened from 16384-32768 in 2024)."""


@dataclass(frozen=True)
class IceServerSettings:
    """One ``[[ice.servers]]`` table, named as the browser's RTCIceServer."""

    urls: str | tuple[str, ...] = field(metadata={"help": 'stun:/turn:/turns: urls, e.g. ["turn:host:3478?transport=udp"]'})
    username: str | None = field(default=None, metadata={"help": "TURN username"})
    credential: Secret | None = field(default=None, metadata={"help": 'TURN password: a string or { env = "NAME" } / { file = "PATH" } / { credential = "NAME" }'})


@dataclass(frozen=True)
class IceSettings:
    """``[ice]``"""

    source: Literal["auto", "genesys", "config"] = field(
        default="auto",
        metadata={"help": "which ICE servers to test: auto = [[ice.servers]] and, once the agent ran `agentd login`, the softphone's own from Genesys; genesys = only those; config = only [[ice.servers]]"},
    )
    servers: tuple[IceServerSettings, ...] = field(default=(), metadata={"help": "the ICE servers ([[ice.servers]] tables)"})
    ca_file: Path | None = field(default=None, metadata={"help": "a PEM CA bundle to trust for turns: (added to the system's)"})
    timeout_s: float = field(default=2.0, metadata={"help": "deadline of one STUN binding or TURN allocation", "min": 0.2, "max": 30})
    stun_tcp: bool = field(default=True, metadata={"help": "also try STUN over TCP for stun: urls"})
    media_port_range: str = field(default=DEFAULT_MEDIA_PORT_RANGE, metadata={"help": "the local UDP port range media uses (A-B)"})
    discovery_timeout_s: float = field(default=4.0, metadata={"help": "deadline of fetching the softphone's own ICE servers (a cached list costs nothing)", "min": 0.5, "max": 30})


@dataclass(frozen=True)
class IceEndpoint:
    """One configured url with the credentials of its server table."""

    url: IceUrl
    username: str | None = None
    credential: Secret | None = None
    server_index: int = 0
    source: str = "config"
    """``config`` for [[ice.servers]]; else the offering source (``genesys``)."""


@hookimpl
def agentd_config_sections():
    return [ConfigSection("ice", IceSettings, "ICE servers (STUN/TURN) for the media probes")]


@hookimpl
def agentd_configure(config: Config) -> None:
    settings: IceSettings = config.section("ice")
    file = str(config.path) if config.path else None
    endpoints(settings, file=file)  # raises ConfigError naming the key
    try:
        parse_port_range(settings.media_port_range)
    except ValueError as exc:
        raise ConfigError(str(exc), file=file, key="ice.media_port_range") from None
    if settings.ca_file is not None and not settings.ca_file.is_file():
        raise ConfigError(f"{settings.ca_file} is not a readable file", file=file, key="ice.ca_file")


def server_urls(server: IceServerSettings) -> tuple[str, ...]:
    return (server.urls,) if isinstance(server.urls, str) else tuple(server.urls)


def endpoints(settings: IceSettings, *, file: str | None = None) -> list[IceEndpoint]:
    """Every url of every server, parsed, in configuration order."""
    found: list[IceEndpoint] = []
    for index, server in enumerate(settings.servers):
        urls = server_urls(server)
        if not urls:
            raise ConfigError("an ICE server needs at least one url", file=file, key=f"ice.servers[{index}].urls")
        for position, text in enumerate(urls):
            key = f"ice.servers[{index}].urls" + ("" if isinstance(server.urls, str) else f"[{position}]")
            try:
                url = parse_ice_url(text)
            except IceUrlError as exc:
                raise ConfigError(str(exc), file=file, key=key) from None
            if url.is_turn and (not server.username or server.credential is None):
                raise ConfigError(
                    f"{url.scheme}: urls need username and credential in the same [[ice.servers]] table",
                    file=file,
                    key=f"ice.servers[{index}]",
                )
            found.append(IceEndpoint(url=url, username=server.username, credential=server.credential, server_index=index))
    return found


def stun_endpoints(settings: IceSettings) -> list[IceEndpoint]:
    """Urls a STUN binding can go to: stun: and stuns: urls (turn servers answer bindings
    too, but the stun urls are the ones the browser asks for its server-reflexive address)."""
    return [e for e in endpoints(settings) if e.url.scheme in ("stun", "stuns")]


def turn_endpoints(settings: IceSettings, transport: str) -> list[IceEndpoint]:
    """turn:/turns: urls whose transport is ``transport`` ("udp", "tcp" or "tls")."""
    return [e for e in endpoints(settings) if e.url.is_turn and e.url.transport == transport]


def parse_port_range(text: str) -> tuple[int, int]:
    """``"A-B"`` (or one port ``"A"``) to ``(A, B)``; raises ValueError saying what is wrong."""
    low, dash, high = str(text).strip().partition("-")
    try:
        first = int(low)
        last = int(high) if dash else first
    except ValueError:
        raise ValueError(f"{text!r} is not a port range like 16384-65535") from None
    if not (1 <= first <= last <= 65535):
        raise ValueError(f"{text!r}: ports must be 1-65535 and the first not above the last")
    return first, last
