"""The ``turn.udp``, ``turn.tcp`` and ``turn.tls`` checks: a real TURN allocation per transport.

Each configured ``turn:``/``turns:`` url of the check's transport gets an allocation
with the configured credentials, under ``[ice] timeout_s``: relay address and allocation
time, or the precise reason it failed (``auth`` for 401, evidence for
``config.turn_auth_failed``; ``refused``; ``timeout``; ``tls_untrusted`` naming the
certificate's subject; ...). Every allocation is released at once (REFRESH with
lifetime 0), so a check run leaves no relay ports behind on the server.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from agentd import hookimpl
from agentd.checks import Check, CheckContext, Outcome, Plan
from agentd_plugins.ice import IceSettings, turn_endpoints
from agentd_plugins.ice.probes import Allocation, turn_allocation

TRANSPORTS = {"udp": 50, "tcp": 51, "tls": 52}
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
            timeout_s=settings.timeout_s + 1.0,  # a backstop: every allocation has its own deadline
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


async def allocate_all(settings: IceSettings, transport: str) -> list[Allocation]:
    """An allocation (made and released) on every url of ``transport``, concurrently."""
    return list(
        await asyncio.gather(
            *(turn_allocation(e, timeout_s=settings.timeout_s, ca_file=settings.ca_file) for e in turn_endpoints(settings, transport))
        )
    )


def _describe(a: Allocation) -> str:
    return f"relay {a.relay} from {a.server} in {a.alloc_ms:.0f} ms" if a.ok else (a.error or f"{a.server}: {a.reason}")


async def run_turn(ctx: CheckContext, transport: str) -> Outcome:
    settings: IceSettings = ctx.section("ice")
    if not turn_endpoints(settings, transport):
        scheme = "turns:" if transport == "tls" else f"turn:...?transport={transport}"
        return Outcome.skipped(f"no {scheme} url in [[ice.servers]]", details={"reason": "not_configured"})
    ctx.note(f"TURN over {transport}")
    allocations = await ctx.memo(f"ice.turn.{transport}", lambda: allocate_all(settings, transport))
    ok = [a for a in allocations if a.ok]
    failed = [a for a in allocations if not a.ok]
    metrics = {"alloc_ms": min((a.alloc_ms for a in ok), default=None), "allocations_ok": len(ok), "allocations_failed": len(failed)}
    details: dict = {"allocations": [a.to_dict() for a in allocations]}
    first = ok[0] if ok else None
    if first is not None:
        details.update(server=first.server, relay=first.relay, mapped=first.mapped)
    if failed:
        # the dominant reason names the case; the first failure of that reason gives server and certificate
        reason = Counter(a.reason for a in failed).most_common(1)[0][0]
        example = next(a for a in failed if a.reason == reason)
        details["reason"] = reason
        if first is None:
            details["server"] = example.server
        if example.certificate:
            details["certificate"] = example.certificate
    if not ok:
        return Outcome.failed("; ".join(_describe(a) for a in failed), metrics=metrics, details=details)
    if failed:
        return Outcome.warned(
            f"{_describe(first)}; but " + "; ".join(_describe(a) for a in failed), metrics=metrics, details=details
        )
    return Outcome.passed("; ".join(_describe(a) for a in ok), metrics=metrics, details=details)
