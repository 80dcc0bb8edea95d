"""The ``turn.udp``, ``turn.tcp`` and ``turn.tls`` checks: a real TURN allocation per transport.

Each configured ``turn:``/``turns:`` url of the check's transport gets an allocation
with the configured credentials, under ``[ice] timeout_s`` (and as long again once the
server has answered: a lossy path retransmits): relay address and allocation
time, or the precise reason it failed (``auth`` for 401, evidence for
``config.turn_auth_failed``; ``refused``; ``timeout``; ``tls_untrusted`` naming the
certificate's subject; ...). Every allocation is released at once (REFRESH with
lifetime 0), so a check run leaves no relay ports behind on the server.

Over TCP and TLS, connections race (``ice.probes.connect_stream``: another every 250 ms
until one is answered): a lost SYN costs one of them the kernel's 1 s retransmission,
not the check its deadline, and the summary says when the path showed loss that way.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

from agentd import hookimpl
from agentd.checks import Check, CheckContext, Outcome, Plan
from agentd_plugins.ice import IceEndpoint, IceSettings
from agentd_plugins.ice.probes import Allocation, turn_allocation
from agentd_plugins.ice.selection import selection, with_fresh_credentials

TRANSPORTS = {"udp": 50, "tcp": 51, "tls": 52}
PATIENCE = 1.0
"""An allocation whose server has answered (its 401 challenge came back) may take this many
times ``[ice] timeout_s`` more: on a lossy path it is retransmitting, not talking to a dead
server. A silent server still costs ``timeout_s``."""
TITLES = {
    "udp": "TURN allocation over UDP",
    "tcp": "TURN allocation over TCP",
    "tls": "TURN allocation over TLS (turns:)",
}


@hookimpl
def agentd_collect_checks(plan: Plan):
    settings: IceSettings = plan.config.section("ice")
    return [
        Check(
            f"turn.{transport}",
            TITLES[transport],
            _runner(transport),
            # a backstop: every allocation has its own deadline; a 401 on offered credentials fetches them once more
            timeout_s=2 * (settings.timeout_s * (1 + PATIENCE) + settings.discovery_timeout_s) + 1.0,
            profiles=frozenset({"preshift", "full"}),
            order=order,
        )
        for transport, order in TRANSPORTS.items()
    ]


def _runner(transport: str):
    async def run(ctx: CheckContext) -> Outcome:
        return await run_turn(ctx, transport)

    run.__name__ = f"run_turn_{transport}"
    return run


async def allocate_all(ctx: CheckContext, settings: IceSettings, chosen: list[IceEndpoint]) -> list[Allocation]:
    """An allocation (made and released) on every url, concurrently; offered credentials
    that get 401 are fetched again once and tried again (they go stale, the softphone's too)."""
    return list(await asyncio.gather(*(allocate_one(ctx, settings, e) for e in chosen)))


async def allocate_one(ctx: CheckContext, settings: IceSettings, endpoint: IceEndpoint) -> Allocation:
    found = await turn_allocation(endpoint, timeout_s=settings.timeout_s, ca_file=settings.ca_file, patience_s=PATIENCE * settings.timeout_s)
    if found.ok or found.reason != "auth" or endpoint.source == "config":
        return found
    ctx.note("TURN credentials rejected: fetching them again")
    fresh = await with_fresh_credentials(ctx, endpoint)
    if fresh is None:
        return found
    again = await turn_allocation(fresh, timeout_s=settings.timeout_s, ca_file=settings.ca_file, patience_s=PATIENCE * settings.timeout_s)
    return dataclasses.replace(again, refetched=True)


SLOW_CONNECT_MS = 900.0
"""A TCP connection answered after this long had a SYN retransmitted (the kernel's first is at 1 s)."""


def lossy_connect(a: Allocation) -> str | None:
    """How the TCP connection shows a lossy path, or None: a later one of the racing
    connections got through first (the first's SYN or its answer was lost), or it took a
    SYN retransmission."""
    if a.connect_winner is not None and a.connect_winner > 1:
        return f"TCP connection {a.connect_winner} of {a.connect_attempts} got through first: the first one's SYN or its answer was lost"
    if a.connect_ms is not None and a.connect_ms > SLOW_CONNECT_MS:
        return f"TCP took {a.connect_ms:.0f} ms to connect: a SYN was retransmitted"
    return None


def _describe(a: Allocation) -> str:
    if a.ok:
        text = f"relay {a.relay} from {a.server} in {a.alloc_ms:.0f} ms" + (" (with fresh credentials)" if a.refetched else "")
        lossy = lossy_connect(a)
        return text + (f" (slow because the path loses packets: {lossy})" if lossy else "")
    text = a.error or f"{a.server}: {a.reason}"
    if a.connected and a.reason == "timeout":
        text += " (the port is open: the TURN exchange was lost or late, as on a lossy path)"
    if a.reason == "auth" and a.source not in (None, "config"):
        # not agentd's configuration: the source handed out credentials its own TURN server refuses
        text += " (credentials handed out by Genesys, refused also after fetching them again)"
    return text


async def run_turn(ctx: CheckContext, transport: str) -> Outcome:
    settings: IceSettings = ctx.section("ice")
    chosen = await selection(ctx)
    urls = chosen.turn(transport)
    if not urls:
        scheme = "turns:" if transport == "tls" else f"turn:...?transport={transport}"
        return chosen.nothing_to_test(f"{scheme} url")
    ctx.note(f"TURN over {transport}")
    allocations = await ctx.memo(f"ice.turn.{transport}", lambda: allocate_all(ctx, settings, urls))
    ok = [a for a in allocations if a.ok]
    failed = [a for a in allocations if not a.ok]
    metrics = {"alloc_ms": min((a.alloc_ms for a in ok), default=None), "allocations_ok": len(ok), "allocations_failed": len(failed)}
    details: dict = chosen.annotate({"allocations": [a.to_dict() for a in allocations]}, urls)
    suffix = chosen.suffix(urls)
    first = ok[0] if ok else None
    if first is not None:
        details.update(server=first.server, relay=first.relay, mapped=first.mapped, source=first.source)
    if failed:
        # the dominant reason names the case; the first failure of that reason gives server and certificate
        reason = Counter(a.reason for a in failed).most_common(1)[0][0]
        example = next(a for a in failed if a.reason == reason)
        details["reason"] = reason
        if first is None:
            details["server"] = example.server
            details["source"] = example.source
        if example.certificate:
            details["certificate"] = example.certificate
    if not ok:
        return Outcome.failed("; ".join(_describe(a) for a in failed) + suffix, metrics=metrics, details=details)
    if failed or chosen.failed_offers():
        but = ("; but " + "; ".join(_describe(a) for a in failed)) if failed else ""
        return Outcome.warned(f"{_describe(first)}{but}{suffix}", metrics=metrics, details=details)
    return Outcome.passed("; ".join(_describe(a) for a in ok) + suffix, metrics=metrics, details=details)
