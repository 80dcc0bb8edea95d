"""What an ``agentd_ice_servers`` hook answers: ICE servers from a source other than
``[[ice.servers]]`` (the Genesys softphone's own), or why there are none.

Plain frozen data, so any plugin can offer servers without importing the offering one.
Credentials are :class:`agentd.config.Secret` (registered with agentd.redact on creation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from agentd.config import Secret

SOURCE_LABELS = {"config": "[[ice.servers]]", "genesys": "the softphone's servers from Genesys"}


def source_label(source: str) -> str:
    return SOURCE_LABELS.get(source, f"servers from {source}")


@dataclass(frozen=True)
class OfferedServer:
    """One RTCIceServer: urls with the credentials of their table."""

    urls: tuple[str, ...]
    username: str | None = field(default=None, repr=False)
    credential: Secret | None = None


@dataclass(frozen=True)
class IceServerOffer:
    """A source's answer.

    - ``servers``: what to test, in the order the softphone uses them (TURN first);
    - ``relay_only``: the softphone runs with iceTransportPolicy "relay" (no STUN server
      offered: Genesys' Force TURN), with ``relay_only_why`` saying how that is known;
    - ``expires_at``: when the credentials stop working (epoch seconds);
    - ``cached``: answered from the owner-only cache, not fetched now;
    - ``skip``: the source does not apply now, and what to do about it (one line);
    - ``error`` + ``reason``: the servers could not be fetched (FINDINGS reason: ``auth``,
      ``timeout``, ``refused``, ``protocol``, ...);
    - ``details``: what a report may show (timings, the failed stage); never a secret.
    """

    source: str
    servers: tuple[OfferedServer, ...] = ()
    relay_only: bool = False
    relay_only_why: str | None = None
    expires_at: float | None = None
    cached: bool = False
    skip: str | None = None
    error: str | None = None
    reason: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return self.skip is None and self.error is None

    def summary(self) -> dict[str, Any]:
        """For a check's ``details.discovery`` (no credentials)."""
        out: dict[str, Any] = {"source": self.source, "ok": self.usable, "cached": self.cached, "servers": [u for s in self.servers for u in s.urls]}
        if self.relay_only:
            out["relay_only"] = True
            out["relay_only_why"] = self.relay_only_why
        if self.expires_at:
            out["expires_at"] = round(self.expires_at)
        if self.skip:
            out["skip"] = self.skip
        if self.error:
            out.update(error=self.error, reason=self.reason)
        if self.details:
            out.update({k: v for k, v in self.details.items() if k not in out})
        return out
