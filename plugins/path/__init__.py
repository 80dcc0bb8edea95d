"""The ``path`` check: the agent's path to the media edge, segment by segment.

At once, for ``[path] duration_s`` (1 s by default):

- a burst of ICMP echoes to the default gateway of the route to the TURN server (the
  home router, or the office's first router): loss, RTT and jitter of the agent's own
  link (Wi-Fi or LAN);
- TTL-limited UDP probes to the TURN server's own address, repeated per hop (an MTR run):
  loss and RTT per hop, and who answered. The first hop whose address is not a home
  network's (RFC 1918, link-local) is where the ISP begins; ``[path] isp_hops`` hops from
  there count as the ISP, later ones as beyond it (transit, the platform).

The check judges nothing itself (it passes whenever it measured): the segment rules
(``plugins/rules/segments.py``) put these figures beside ``media.path``'s end-to-end loss
and name the segment where the loss starts and persists to the edge. The platform does the
probing (:mod:`agentd.osdeps.netpath`): Linux ping sockets, raw ICMP or UDP with
``IP_RECVERR`` (no root); Windows ``IcmpSendEcho2``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from agentd import hookimpl
from agentd.checks import Check, CheckContext, Outcome, Plan
from agentd.config import ConfigSection
from agentd.model import Status
from agentd.osdeps import netpath
from agentd_plugins.ice.selection import selection

CHECK_ID = "path"
RESOLVE_TIMEOUT_S = 1.0
ROUTE_TIMEOUT_S = 1.5
PUBLIC_ADDRESS_WAIT_S = 0.5
"""How long the check waits, after probing, for the ``stun`` check's public address."""


@dataclass(frozen=True)
class PathSettings:
    """``[path]``: the segment probes."""

    duration_s: float = field(default=1.0, metadata={"help": "how long the gateway and the hops are probed (s)", "min": 0.1, "max": 30})
    gateway_interval_ms: float = field(
        default=5.0, metadata={"help": "one echo to the gateway every this many ms (200 echoes in the default second)", "min": 1, "max": 1000}
    )
    hop_every: int = field(default=2, metadata={"help": "each hop is probed on every n-th gateway echo (100 probes per hop by default)", "min": 1, "max": 100})
    timeout_s: float = field(default=0.5, metadata={"help": "a probe unanswered this long after it was sent is lost (s)", "min": 0.05, "max": 5})
    max_hops: int = field(default=16, metadata={"help": "the highest TTL probed", "min": 1, "max": 64})
    clean_after: int = field(
        default=60,
        metadata={"help": "end early once the edge answered and every point up to it answered each of this many probes (0: never; Linux)", "min": 0, "max": 10000},
    )
    isp_hops: int = field(
        default=3,
        metadata={"help": "hops from the first public one that count as the agent's ISP (access, aggregation, border); later ones are beyond it", "min": 1, "max": 30},
    )


@hookimpl
def agentd_config_sections():
    return [ConfigSection("path", PathSettings, "the path check (segment probes)")]


@hookimpl
def agentd_collect_checks(plan: Plan):
    settings: PathSettings = plan.config.section("path")
    return [
        Check(
            CHECK_ID,
            "The path segment by segment: the gateway, the ISP, the hops to the media edge",
            run_path,
            timeout_s=settings.duration_s + settings.timeout_s + RESOLVE_TIMEOUT_S + ROUTE_TIMEOUT_S + PUBLIC_ADDRESS_WAIT_S + 1.0,
            profiles=frozenset({"preshift", "full"}),
            order=65,
        )
    ]


async def _resolve(host: str) -> str | None:
    try:
        infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(host, None, family=socket.AF_INET), RESOLVE_TIMEOUT_S)
    except (OSError, asyncio.TimeoutError):
        return None
    return infos[0][4][0] if infos else None


def proxy_in_use() -> str | None:
    """The HTTPS proxy this process would use (host:port, never credentials), if any."""
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        value = os.environ.get(name)
        if value:
            parts = urlsplit(value if "://" in value else f"http://{value}")
            if parts.hostname:
                return f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
    return None


def vpn_of(interface: str | None) -> str | None:
    from agentd_plugins.host.sample import VPN_PREFIXES

    return interface if interface and interface.lower().startswith(VPN_PREFIXES) else None


def segments_of(hops: list[dict[str, Any]], target: str, target_ttl: int | None, gateway: str | None, isp_hops: int) -> dict[str, Any]:
    """Give each hop its ``role`` (``home``, ``isp``, ``beyond``, ``edge``, or ``unknown``
    for a silent hop before the ISP is known); the first public hop; in place."""
    first_public = next(
        (h for h in hops if h["address"] and h["address"] != target and not netpath.is_private(h["address"])),
        None,
    )
    for hop in hops:
        ttl = hop["ttl"]
        if hop["address"] == target or (target_ttl is not None and ttl >= target_ttl):
            hop["role"] = "edge"
        elif first_public is None:
            hop["role"] = "home" if hop["address"] and netpath.is_private(hop["address"]) else "unknown"
        elif ttl < first_public["ttl"]:
            hop["role"] = "home" if hop["address"] is None or netpath.is_private(hop["address"]) else "unknown"
        elif ttl < first_public["ttl"] + isp_hops:
            hop["role"] = "isp"
        else:
            hop["role"] = "beyond"
        if gateway and hop["address"] == gateway:
            hop["gateway"] = True
    return {"ttl": first_public["ttl"], "address": first_public["address"]} if first_public else {}


async def _public_address(ctx: CheckContext) -> str | None:
    try:
        stun = await asyncio.wait_for(ctx.result_of("stun"), PUBLIC_ADDRESS_WAIT_S)
    except asyncio.TimeoutError:
        return None
    if stun is None or stun.status not in (Status.PASS, Status.WARN):
        return None
    mapped = stun.details.get("mapped")
    if isinstance(mapped, list) and mapped and isinstance(mapped[0], str):
        return mapped[0].rpartition(":")[0].strip("[]") or None
    return None


async def _stop_when_media_is_clean(ctx: CheckContext, stop: asyncio.Event) -> None:
    """Set ``stop`` once media.path is 95 % sure its loss is below the line: the segments
    are then only figures, and a clean pre-shift need not wait for a full second of them."""
    media = await ctx.result_of("media.path")
    if media is None or media.status not in (Status.PASS, Status.WARN):
        return
    decision = media.details.get("loss_decision")
    if media.details.get("transport") == "udp" and isinstance(decision, dict) and decision.get("side") == "below":
        stop.set()


def _loss(series: dict[str, Any]) -> str:
    return f"{series['loss_pct']:.1f}% loss of {series['sent']}"


async def run_path(ctx: CheckContext) -> Outcome:
    settings: PathSettings = ctx.section("path")
    chosen = await selection(ctx)
    candidates = chosen.turn("udp") or [e for e in chosen.endpoints if e.url.is_turn] or chosen.stun()
    if not candidates:
        return chosen.nothing_to_test("turn: or stun: url (the path is traced to the media edge)", {"hops": []})
    endpoint = candidates[0]
    host = endpoint.url.host
    ctx.note(f"tracing the path to {host}")
    target = await _resolve(host)
    details: dict[str, Any] = {"server": str(endpoint.url), "hops": []}
    if target is None:
        return Outcome.skipped(f"{host} has no IPv4 address here (not resolved within {RESOLVE_TIMEOUT_S:g} s): no path to trace", details={**details, "reason": "dns"})
    details["target"] = target
    try:
        route = await asyncio.wait_for(asyncio.to_thread(netpath.route_to, target), ROUTE_TIMEOUT_S)
    except asyncio.TimeoutError:
        route = netpath.Route(destination=target, how="the route lookup did not answer in time")
    details["route"] = {"gateway": route.gateway, "interface": route.interface, "source": route.source, "how": route.how}
    if route.local:
        return Outcome.skipped(f"the media edge {host} ({target}) is this machine: no path to trace", details={**details, "reason": "local"})
    vpn, proxy = vpn_of(route.interface), proxy_in_use()
    if vpn:
        details["vpn"] = vpn
    if proxy:
        details["proxy"] = proxy
    interval = settings.gateway_interval_ms / 1000.0
    count = max(1, int(round(settings.duration_s / interval)))
    started = time.monotonic()
    stop = asyncio.Event()
    watcher = asyncio.ensure_future(_stop_when_media_is_clean(ctx, stop))
    try:
        probe = await netpath.probe_path(
            target, route.gateway, count=count, interval_s=interval, hop_every=settings.hop_every,
            max_hops=settings.max_hops, timeout_s=settings.timeout_s, stop=stop, clean_after=settings.clean_after,
        )
    except OSError as exc:
        return Outcome(Status.ERROR, f"the path could not be probed on this system: {exc}", details={**details, "reason": "probe"})
    finally:
        watcher.cancel()
    hops = [h.to_dict() for h in probe.hops]
    first_public = segments_of(hops, target, probe.target_ttl, route.gateway, settings.isp_hops)
    gateway = probe.gateway.to_dict() if probe.gateway is not None else None
    if gateway is not None:
        gateway.update(address=route.gateway, method=probe.gateway_method)
    public = await _public_address(ctx)
    details.update(
        gateway=gateway,
        gateway_note=probe.gateway_note,
        hops=hops,
        hops_method=probe.hops_method,
        hops_note=probe.hops_note,
        target_ttl=probe.target_ttl,
        first_public_hop=first_public or None,
        isp_hops=settings.isp_hops,
        public_address=public,
        probing_ms=round((time.monotonic() - started) * 1000.0, 1),
        stopped_early={
            "asked": "media.path found its loss below the line (95 % sure): no loss to place",
            "clean": f"every point up to {target} answered each of at least {settings.clean_after} probes: a clean path",
        }.get(probe.stopped_early or ""),
        platform=sys.platform,
    )
    parts = []
    if gateway is not None:
        method = {"icmp": "ping", "icmp-raw": "ping", "udp": "UDP", "icmp-win": "ping"}.get(str(probe.gateway_method), str(probe.gateway_method))
        rtt = f", {gateway['rtt_ms']:.1f} ms" if gateway["rtt_ms"] is not None else ""
        parts.append(f"gateway {route.gateway} ({method}): {_loss(gateway)}{rtt}")
    elif route.gateway is None:
        parts.append("no gateway on the route (on-link or a tunnel)")
    else:
        parts.append(f"gateway {route.gateway} not probed ({probe.gateway_note})")
    answered = [h for h in hops if h["received"]]
    if probe.target_ttl is not None:
        parts.append(f"{probe.target_ttl} hops to {target}")
    elif hops:
        parts.append(f"{target} did not answer; {len(answered)} of {len(hops)} hops did")
    else:
        parts.append(f"hops not probed ({probe.hops_note})")
    if first_public:
        parts.append(f"the ISP from hop {first_public['ttl']} ({first_public['address']})")
    if public:
        parts.append(f"public address {public}")
    if vpn:
        parts.append(f"through the VPN {vpn}")
    if proxy:
        parts.append(f"HTTPS through the proxy {proxy} (media does not use it)")
    worst = [h for h in hops if h["loss_pct"] and h["role"] != "edge"]
    if worst:
        lossy = max(worst, key=lambda h: h["loss_pct"])
        parts.append(f"most loss at hop {lossy['ttl']} ({lossy['address'] or 'silent'}): {_loss(lossy)}")
    edge = next((h for h in hops if h["role"] == "edge" and h["received"]), None)
    if edge is not None:
        parts.append(f"edge {_loss(edge)}")
    metrics = {
        "gateway_rtt_ms": gateway["rtt_ms"] if gateway else None,
        "gateway_loss_pct": gateway["loss_pct"] if gateway else None,
        "gateway_jitter_ms": gateway["jitter_ms"] if gateway else None,
        "hops": len(hops),
        "edge_loss_pct": edge["loss_pct"] if edge else None,
        "edge_rtt_ms": edge["rtt_ms"] if edge else None,
    }
    return Outcome.passed("; ".join(parts), metrics=metrics, details=details)
