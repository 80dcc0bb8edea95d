"""The ``stun`` check: a STUN binding to every configured STUN server, over UDP and TCP.

For each ``stun:`` url (RFC 7064: UDP and TCP; ``stuns:`` is TLS) it reports the mapped
(public) address and the round-trip time, or exactly why not (timeout, refused,
unreachable, dns). Every binding runs concurrently under ``[ice] timeout_s``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

from agentd import hookimpl
from agentd.checks import Check, CheckContext, Outcome, Plan
from agentd_plugins.ice import IceEndpoint, IceSettings
from agentd_plugins.ice.probes import Binding, stun_binding
from agentd_plugins.ice.selection import selection

CHECK_ID = "stun"


@hookimpl
def agentd_collect_checks(plan: Plan):
    settings: IceSettings = plan.config.section("ice")
    return [
        Check(
            CHECK_ID,
            "STUN bindings: the public address this PC is seen with",
            run_stun,
            timeout_s=settings.timeout_s + 1.0 + settings.discovery_timeout_s,  # a backstop: every binding has its own deadline
            profiles=frozenset({"preshift", "full"}),
            order=40,
        )
    ]


async def collect_bindings(settings: IceSettings, chosen: list[IceEndpoint]) -> list[Binding]:
    """Every binding the ``stun`` check makes, concurrently, within ``settings.timeout_s``."""
    jobs = []
    for endpoint in chosen:
        for transport in endpoint.url.transports:
            if transport == "tcp" and endpoint.url.scheme == "stun" and not settings.stun_tcp:
                continue
            jobs.append(_binding(endpoint, transport, settings))
    return list(await asyncio.gather(*jobs))


async def _binding(endpoint: IceEndpoint, transport: str, settings: IceSettings) -> Binding:
    found = await stun_binding(endpoint.url, transport, timeout_s=settings.timeout_s, ca_file=settings.ca_file)
    return dataclasses.replace(found, source=endpoint.source)


def _one_line(binding: Binding) -> str:
    if binding.ok:
        return f"{binding.server} {binding.transport}: {binding.mapped} in {binding.rtt_ms:.0f} ms"
    return binding.error or f"{binding.server} {binding.transport}: {binding.reason}"


async def run_stun(ctx: CheckContext) -> Outcome:
    settings: IceSettings = ctx.section("ice")
    chosen = await selection(ctx)
    stun_urls = chosen.stun()
    if chosen.relay_only:  # the softphone will not use its own STUN servers; a customer's own are still tested
        stun_urls = [e for e in stun_urls if e.source == "config"]
    if not stun_urls:
        if chosen.relay_only:
            return Outcome.skipped(
                f"the softphone is relay-only: {chosen.relay_only_why}, so it never uses STUN; every call goes through the TURN relay",
                details=chosen.annotate({"reason": "relay_only", "bindings": []}, []),
            )
        return chosen.nothing_to_test("stun: or stuns: url", {"bindings": []})
    ctx.note("STUN bindings")
    bindings = await ctx.memo("ice.stun.bindings", lambda: collect_bindings(settings, stun_urls))
    details: dict = chosen.annotate({"bindings": [b.to_dict() for b in bindings]}, stun_urls)
    suffix = chosen.suffix(stun_urls)
    if chosen.relay_only:
        suffix += f"; the softphone itself is relay-only ({chosen.relay_only_why})"
    ok = [b for b in bindings if b.ok]
    failed = [b for b in bindings if not b.ok]
    udp_ok = [b for b in ok if b.transport == "udp"]
    best = min((b.rtt_ms for b in (udp_ok or ok)), default=None)
    metrics = {"rtt_ms": best, "bindings_ok": len(ok), "bindings_failed": len(failed)}
    mapped = sorted({b.mapped for b in ok if b.mapped})
    if mapped:
        details["mapped"] = mapped
    # each binding has its own socket, so ports differ; a person wants the public address(es)
    public = sorted({m.rpartition(":")[0].strip("[]") for m in mapped}) or mapped
    if failed:
        details["reason"] = Counter(b.reason for b in failed).most_common(1)[0][0]
    tried_udp = any(b.transport == "udp" for b in bindings)
    if not ok or (tried_udp and not udp_ok):
        what = "no STUN server answered" if not ok else "no STUN server answered over UDP"
        return Outcome.failed(f"{what}: " + "; ".join(_one_line(b) for b in failed) + suffix, metrics=metrics, details=details)
    if failed or chosen.failed_offers():
        but = ("; but " + "; ".join(_one_line(b) for b in failed)) if failed else ""
        return Outcome.warned(f"public address {', '.join(public)}{but}{suffix}", metrics=metrics, details=details)
    return Outcome.passed(
        f"public address {', '.join(public)} (best {best:.0f} ms, {len(ok)} binding{'s' if len(ok) != 1 else ''}){suffix}",
        metrics=metrics,
        details=details,
    )
