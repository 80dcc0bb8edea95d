"""Parse ICE server urls: ``stun:`` / ``stuns:`` (RFC 7064) and ``turn:`` / ``turns:`` (RFC 7065).

    stun:host[:port]                      UDP and TCP, default port 3478
    stuns:host[:port]                     TLS over TCP, default port 5349
    turn:host[:port][?transport=udp|tcp]  default transport udp, default port 3478
    turns:host[:port][?transport=tcp]     TLS over TCP, default port 5349

IPv6 literals go in brackets (``turn:[2001:db8::1]:3478``). Browsers accept the same
syntax; ``turns:...?transport=udp`` would be DTLS, which neither browsers nor agentd use.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

Scheme = Literal["stun", "stuns", "turn", "turns"]
Transport = Literal["udp", "tcp", "tls"]

DEFAULT_PORTS = {"stun": 3478, "turn": 3478, "stuns": 5349, "turns": 5349}

# host: a bracketed IPv6 literal or a run of name/IPv4 characters; port: digits
_HOSTPORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9._~%!$&'()*+,;=-]+))(?::(?P<port>[0-9]{1,5}))?$")


class IceUrlError(ValueError):
    """A url that is not a valid stun:/stuns:/turn:/turns: url; the message says why."""


@dataclass(frozen=True)
class IceUrl:
    """One parsed url. ``transport`` is how agentd talks to the server: ``tls`` for
    ``turns:``/``stuns:``; for ``stun:`` it is ``udp`` (TCP is tried too, see ``transports``)."""

    url: str
    scheme: Scheme
    host: str
    port: int
    transport: Transport

    @property
    def is_turn(self) -> bool:
        return self.scheme in ("turn", "turns")

    @property
    def transports(self) -> tuple[Transport, ...]:
        """Every transport a STUN binding may use with this url (RFC 7064: stun: is UDP and TCP)."""
        if self.scheme == "stun":
            return ("udp", "tcp")
        return (self.transport,)

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return self.url


def parse_ice_url(url: str) -> IceUrl:
    """Parse one url; raises :class:`IceUrlError` naming the problem."""
    if not isinstance(url, str) or not url.strip():
        raise IceUrlError("an ICE server url must be a non-empty string")
    text = url.strip()
    scheme, sep, rest = text.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS:
        raise IceUrlError(f"{text!r} must start with stun:, stuns:, turn: or turns:")
    if rest.startswith("//"):
        raise IceUrlError(f"{text!r}: ICE urls have no '//' (write {scheme}:host:port)")
    hostport, qmark, query = rest.partition("?")
    match = _HOSTPORT.match(hostport)
    if not match:
        raise IceUrlError(f"{text!r}: expected {scheme}:host[:port], with IPv6 addresses in brackets")
    host = match.group("v6") or match.group("host")
    if match.group("v6"):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise IceUrlError(f"{text!r}: [{host}] is not an IPv6 address") from None
    port = int(match.group("port")) if match.group("port") else DEFAULT_PORTS[scheme]
    if not 1 <= port <= 65535:
        raise IceUrlError(f"{text!r}: port {port} is out of range 1-65535")
    transport: Transport = "tls" if scheme in ("stuns", "turns") else "udp"
    if qmark:
        if scheme in ("stun", "stuns"):
            raise IceUrlError(f"{text!r}: {scheme}: urls take no query (RFC 7064)")
        key, eq, value = query.partition("=")
        if key.lower() != "transport" or not eq:
            raise IceUrlError(f"{text!r}: the only query a turn url takes is ?transport=udp or ?transport=tcp")
        value = value.lower()
        if value not in ("udp", "tcp"):
            raise IceUrlError(f"{text!r}: transport must be udp or tcp, got {value!r}")
        if scheme == "turns" and value == "udp":
            raise IceUrlError(f"{text!r}: turns over udp would be DTLS, which browsers and agentd do not use")
        if scheme == "turn":
            transport = value  # type: ignore[assignment]
    return IceUrl(url=text, scheme=scheme, host=host, port=port, transport=transport)  # type: ignore[arg-type]
