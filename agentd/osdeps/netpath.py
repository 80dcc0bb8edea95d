"""Probing the path to an address without privileges: the route's gateway, echoes, hops.

What the ``path`` check needs from the operating system, one seam for every platform:

- :func:`route_to`: the route this PC uses to reach an address (its gateway and interface);
- :func:`probe_path`: at once, a burst of echoes to the gateway and TTL-limited probes to
  the address, repeated per hop (an MTR-style run), each with its own deadline.

Linux (:mod:`._posix_netpath`): the gateway over an ICMP ping socket where
``net.ipv4.ping_group_range`` admits the process, else a raw ICMP socket where the process
has ``CAP_NET_RAW``, else UDP probes to a closed port (the gateway answers port
unreachable, rate-limited by most routers); hops with UDP probes whose TTL is limited and
``IP_RECVERR`` on their socket, as tracepath does (a router's time-exceeded and the
address's port-unreachable come back on the probe's own socket, no privilege needed).
Windows (:mod:`._windows_netpath`): ``IcmpSendEcho2`` from iphlpapi for both, with the TTL
in its IP options for the hops (no privilege needed either).

Nothing here decides anything: it returns what was sent and what came back.
"""

from __future__ import annotations

import asyncio
import ipaddress
import statistics
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

HOP_PORT_BASE = 33434
"""The first destination port of the UDP hop probes (traceroute's); each probe of one hop
goes to its own port, so an ICMP answer names the probe it belongs to."""


class PathProbeError(OSError):
    """The platform cannot probe at all (no socket of any kind could be opened)."""


@dataclass(frozen=True)
class Route:
    """How this PC reaches ``destination``: through ``gateway`` (None: on-link or a
    point-to-point tunnel) on ``interface``; ``local`` when the address is this machine."""

    destination: str
    gateway: str | None = None
    interface: str | None = None
    source: str | None = None
    local: bool = False
    how: str = ""
    """Where the route came from (``ip route get``, ``/proc/net/route``, ``GetBestRoute2``)."""


@dataclass(frozen=True)
class Series:
    """One point of the path probed ``sent`` times: round-trip times in send order, None
    for a probe that got no answer before its deadline."""

    rtts_ms: tuple[float | None, ...]
    answered_by: str | None = None
    """The address that answered most often (a router, or the target itself)."""
    kind: str | None = None
    """What answered: ``echo`` (an echo reply), ``time_exceeded`` (a router on the way),
    ``unreachable`` (the target's port unreachable, or a router's), ``udp`` (the target answered UDP)."""
    ttl: int | None = None

    @property
    def sent(self) -> int:
        return len(self.rtts_ms)

    @property
    def received(self) -> int:
        return sum(1 for r in self.rtts_ms if r is not None)

    @property
    def lost(self) -> int:
        return self.sent - self.received

    def to_dict(self) -> dict[str, Any]:
        answered = [r for r in self.rtts_ms if r is not None]
        diffs = [abs(b - a) for a, b in zip(self.rtts_ms, self.rtts_ms[1:]) if a is not None and b is not None]
        return {
            "ttl": self.ttl,
            "address": self.answered_by,
            "answer": self.kind,
            "sent": self.sent,
            "received": self.received,
            "lost": self.lost,
            "loss_pct": round(100.0 * self.lost / self.sent, 2) if self.sent else None,
            "rtt_ms": round(statistics.median(answered), 3) if answered else None,
            "rtt_min_ms": round(min(answered), 3) if answered else None,
            "rtt_max_ms": round(max(answered), 3) if answered else None,
            # mean |D| of consecutive answered probes (RFC 3550's D, without its 1/16 smoothing)
            "jitter_ms": round(statistics.fmean(diffs), 3) if diffs else None,
        }


@dataclass(frozen=True)
class PathProbe:
    """What one :func:`probe_path` run saw."""

    target: str
    gateway: Series | None
    gateway_method: str | None
    """``icmp`` (ping socket), ``icmp-raw`` (raw socket), ``udp`` (port unreachable), ``icmp-win`` (IcmpSendEcho2)."""
    gateway_note: str | None
    """Why the gateway was probed the way it was (e.g. the ping socket was refused), or why not at all."""
    hops: tuple[Series, ...]
    """By TTL from 1; the last one is the target itself when it answered."""
    hops_method: str | None
    hops_note: str | None
    target_ttl: int | None
    """The TTL at which the target itself answered (None: it never did)."""
    duration_ms: float = 0.0
    stopped_early: str | None = None
    """Why sending ended before ``count``: ``asked`` (the caller set ``stop``) or ``clean``
    (every point up to the target answered every probe of at least ``clean_after``)."""


def is_private(address: str) -> bool:
    """A home or site network's own address: RFC 1918, link-local, loopback, IPv6 ULA.

    Not the shared address space 100.64.0.0/10 (an ISP's carrier-grade NAT: already the
    ISP) nor the documentation and benchmark ranges (public as far as a path goes)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.version == 4:
        return any(ip in net for net in _PRIVATE_V4)
    return ip.is_link_local or ip.is_loopback or ip in ipaddress.ip_network("fc00::/7")


_PRIVATE_V4 = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8")
)


def most_common(addresses: Sequence[str]) -> str | None:
    return Counter(addresses).most_common(1)[0][0] if addresses else None


def _impl():
    if sys.platform == "win32":
        from . import _windows_netpath as impl
    else:
        from . import _posix_netpath as impl
    return impl


def route_to(address: str) -> Route:
    """The route to ``address`` (blocking, bounded: at most about a second)."""
    return _impl().route_to(address)


async def probe_path(
    target: str,
    gateway: str | None,
    *,
    count: int,
    interval_s: float,
    hop_every: int = 2,
    max_hops: int,
    timeout_s: float,
    stop: asyncio.Event | None = None,
    clean_after: int = 0,
) -> PathProbe:
    """Echo ``gateway`` ``count`` times every ``interval_s`` and, at once, trace ``target``
    every ``hop_every``-th of those ticks, each hop up to the target; a probe unanswered
    ``timeout_s`` after it was sent is lost. Bounded: returns at the latest
    ``count * interval_s + timeout_s`` (and a little) after it starts. ``stop``, once set,
    ends the sending early (after at least a quarter of ``count``): the caller no longer
    needs the figures to be long. ``clean_after`` (0: never): end early too once the target
    has answered and the gateway and every hop up to it have answered each of at least
    this many probes (the gateway: ``hop_every`` times as many) that are old enough to have
    been answered: a clean path needs no full burst (Linux; Windows probes the full burst)."""
    if count < 1 or interval_s <= 0 or hop_every < 1 or max_hops < 1 or timeout_s <= 0:
        raise ValueError("count, interval_s, hop_every, max_hops and timeout_s must be positive")
    return await _impl().probe_path(
        target, gateway, count=count, interval_s=interval_s, hop_every=hop_every, max_hops=max_hops, timeout_s=timeout_s,
        stop=stop, clean_after=clean_after,
    )
