"""The ``nat`` check: the NAT's mapping behaviour (RFC 4787), and what the host's interfaces say.

From ONE local UDP socket it sends a STUN binding to every distinct server endpoint it
knows (the ``stun:`` urls, the ``turn:`` UDP urls, and the OTHER-ADDRESS a server names,
RFC 5780). The same mapped address towards every endpoint means endpoint-independent
mapping (direct media can work); different ones mean endpoint-dependent mapping (a
symmetric NAT: every call needs TURN), evidence for ``network.symmetric_nat``.

It also reports whether the host has only private addresses, a global IPv6 address, and
VPN-looking interfaces (tun, wg, ppp, ...).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

import psutil

from agentd import hookimpl
from agentd.checks import Check, CheckContext, Outcome, Plan
from agentd.errors import ProbeError
from agentd_plugins.ice import IceEndpoint, IceSettings
from agentd_plugins.ice.selection import selection
from agentd_plugins.ice.probes import binding_request, format_address, open_udp_client, probe_error, resolve_url
from agentd_plugins.host.sample import vpn_interfaces

CHECK_ID = "nat"



@hookimpl
def agentd_collect_checks(plan: Plan):
    settings: IceSettings = plan.config.section("ice")
    return [
        Check(
            CHECK_ID,
            "NAT mapping behaviour and host addresses",
            run_nat,
            timeout_s=settings.timeout_s + 1.0 + settings.discovery_timeout_s,  # a backstop: the bindings share one deadline
            profiles=frozenset({"preshift", "full"}),
            order=45,
        )
    ]


def binding_targets(chosen: list[IceEndpoint]) -> list[tuple[str, object]]:
    """(label, url) of every endpoint a UDP binding can go to, in selection order."""
    seen: set[tuple[str, int]] = set()
    found = []
    for endpoint in chosen:
        url = endpoint.url
        if url.scheme == "stun" or (url.scheme == "turn" and url.transport == "udp"):
            key = (url.host.lower(), url.port)
            if key not in seen:
                seen.add(key)
                found.append((url.url, url))
    return found


def interface_facts() -> dict:
    """private_only, ipv6 (a global IPv6 address), vpn_interfaces, and the addresses seen."""
    addrs = psutil.net_if_addrs()
    stats = psutil.net_if_stats()
    public_v4: list[str] = []
    private_v4: list[str] = []
    global_v6: list[str] = []
    # a VPN interface may carry no address psutil lists (tun has no MAC): look at every interface that is up
    vpn = list(vpn_interfaces(stats))
    for name, entries in addrs.items():
        st = stats.get(name)
        if st is not None and not st.isup:
            continue
        for entry in entries:
            if entry.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            try:
                ip = ipaddress.ip_address(entry.address.split("%")[0])
            except ValueError:
                continue
            if ip.is_loopback or ip.is_link_local or ip.is_multicast:
                continue
            if ip.version == 4:
                (private_v4 if (ip.is_private or ip in _CGNAT) else public_v4).append(str(ip))
            elif ip.is_global:
                global_v6.append(str(ip))
    return {
        "private_only": not public_v4 and not global_v6,
        "ipv6": bool(global_v6),
        "vpn_interfaces": sorted(vpn),
        "local_addresses": sorted(private_v4 + public_v4 + global_v6),
    }


_CGNAT = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT space (RFC 6598): not public either


async def map_endpoints(chosen: list[IceEndpoint], deadline_s: float) -> dict:
    """Bindings from one socket to every target; returns mapped addresses and errors per endpoint."""
    started = time.monotonic()
    left = lambda: max(0.05, deadline_s - (time.monotonic() - started))  # noqa: E731
    targets = binding_targets(chosen)
    resolved: list[tuple[str, tuple[str, int]]] = []
    errors: dict[str, dict] = {}

    async def resolve_one(label, url):
        try:
            resolved.append((label, (await resolve_url(url, timeout_s=left()), url.port)))
        except ProbeError as exc:
            errors[label] = {"reason": exc.reason, "error": str(exc)}

    await asyncio.gather(*(resolve_one(label, url) for label, url in targets))
    resolved.sort(key=lambda item: [t[0] for t in targets].index(item[0]))
    mapped: dict[str, str] = {}
    other: dict[str, str] = {}
    if not resolved:
        return {"mapped": mapped, "errors": errors, "local": None}
    family = socket.AF_INET6 if ":" in resolved[0][1][0] else socket.AF_INET
    resolved = [r for r in resolved if (":" in r[1][0]) == (family == socket.AF_INET6)]
    client = await open_udp_client(local=("::" if family == socket.AF_INET6 else "0.0.0.0", 0), timeout_s=left())
    local_port = client.transport.get_extra_info("sockname")[1]

    async def bind_one(label: str, addr: tuple[str, int]) -> None:
        try:
            response = await client.request(binding_request(), addr, timeout_s=left())
        except Exception as exc:  # noqa: BLE001
            error = probe_error(exc, format_address(addr) or label, deadline_s)
            errors[label] = {"reason": error.reason, "error": str(error)}
            return
        found = response.attributes.get("XOR-MAPPED-ADDRESS") or response.attributes.get("MAPPED-ADDRESS")
        if found:
            mapped[label] = format_address(found)
        if response.attributes.get("OTHER-ADDRESS"):
            other[label] = format_address(response.attributes["OTHER-ADDRESS"])

    try:
        await asyncio.gather(*(bind_one(label, addr) for label, addr in resolved))
        # one server endpoint only: the server's own alternate address gives the second (RFC 5780)
        known = {format_address(addr) for _, addr in resolved}
        if len(mapped) == 1:
            alternate = next(iter(other.values()), None)
            if alternate and alternate not in known:
                host, _, port = alternate.rpartition(":")
                await bind_one(f"{alternate} (OTHER-ADDRESS)", (host.strip("[]"), int(port)))
    finally:
        client.close()
    return {"mapped": mapped, "errors": errors, "local": _local_address(resolved[0][1], local_port)}


def _local_address(remote: tuple[str, int], port: int) -> str | None:
    """The address the kernel would send from towards ``remote`` (a connect sends nothing on UDP)."""
    family = socket.AF_INET6 if ":" in remote[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(remote)
        except OSError:
            return None
        return format_address((probe.getsockname()[0], port))


async def run_nat(ctx: CheckContext) -> Outcome:
    settings: IceSettings = ctx.section("ice")
    facts = await asyncio.to_thread(interface_facts)
    details: dict = {"mapping": "unknown", "mapped_addresses": {}, **facts}
    chosen = await selection(ctx)
    targets = chosen.udp_targets()
    if chosen.relay_only:
        # Force TURN: the softphone offers only relay candidates, so the NAT's mapping never decides a call
        details.update(reason="relay_only")
        return Outcome.skipped(
            f"the softphone is relay-only ({chosen.relay_only_why}): every call goes through the TURN relay, "
            "so the NAT's mapping does not matter" + _extras(facts),
            details=chosen.annotate(details, []),
        )
    if not binding_targets(targets):
        return chosen.nothing_to_test("stun: or turn: UDP url", details)
    ctx.note("NAT mapping")
    chosen.annotate(details, targets)
    suffix = chosen.suffix(targets)
    found = await map_endpoints(targets, settings.timeout_s)
    mapped: dict[str, str] = found["mapped"]
    details["mapped_addresses"] = mapped
    details["local"] = found["local"]
    if found["errors"]:
        details["errors"] = found["errors"]
    extras = _extras(facts)
    if not mapped:
        reasons = {e["reason"] for e in found["errors"].values()}
        details["reason"] = reasons.pop() if len(reasons) == 1 else "timeout"
        return Outcome.skipped("no STUN server answered, so the NAT mapping is unknown" + extras + suffix, details=details)
    if len(mapped) < 2:
        details["reason"] = "not_configured"
        return Outcome.skipped(
            f"only one server endpoint answered ({next(iter(mapped.values()))}); the mapping needs two "
            "(configure a second stun: url)" + extras + suffix,
            details=details,
        )
    distinct = sorted(set(mapped.values()))
    details["nat"] = found["local"] not in distinct
    if len(distinct) == 1:
        details["mapping"] = "endpoint-independent"
        what = "no NAT" if not details["nat"] else "endpoint-independent mapping"
        return Outcome.passed(f"{what}: {distinct[0]} towards {len(mapped)} server endpoints" + extras + suffix, details=details)
    details["mapping"] = "endpoint-dependent"
    return Outcome.warned(
        f"symmetric NAT (endpoint-dependent mapping): {', '.join(distinct)} towards {len(mapped)} server endpoints; "
        "calls need a TURN relay" + extras + suffix,
        details=details,
    )


def _extras(facts: dict) -> str:
    notes = []
    if facts["vpn_interfaces"]:
        notes.append("VPN interface " + ", ".join(facts["vpn_interfaces"]))
    if facts["ipv6"]:
        notes.append("IPv6")
    if facts["private_only"]:
        notes.append("private addresses only")
    return f" ({'; '.join(notes)})" if notes else ""
