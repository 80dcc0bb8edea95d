"""The ``dns`` check: can this PC resolve the Genesys Cloud signaling hosts, and how fast."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from agentd import hookimpl
from agentd.checks import Check, CheckContext, Outcome, Plan
from agentd.config import ConfigSection
from agentd.errors import ProbeError
from agentd.net import resolve


@dataclass(frozen=True)
class DnsSettings:
    """``[dns]``"""

    timeout_s: float = field(default=2.0, metadata={"help": "deadline of one lookup", "min": 0.1, "max": 30})
    slow_ms: float = field(default=500.0, metadata={"help": "a lookup slower than this is a warning", "min": 1})
    extra_hosts: tuple[str, ...] = field(default=(), metadata={"help": "more host names to resolve"})


@hookimpl
def agentd_config_sections():
    return [ConfigSection("dns", DnsSettings, "the dns check")]


@hookimpl
def agentd_collect_checks(plan: Plan):
    settings: DnsSettings = plan.config.section("dns")
    return [Check("dns", "DNS resolution of the Genesys Cloud hosts", run_dns, timeout_s=settings.timeout_s + 1.0, order=10)]


async def run_dns(ctx: CheckContext) -> Outcome:
    settings: DnsSettings = ctx.section("dns")
    hosts = dict(ctx.section("genesys").hosts())
    for i, host in enumerate(settings.extra_hosts):
        hosts[f"extra{i + 1}"] = host

    async def one(role: str, host: str) -> dict:
        try:
            found = await resolve(host, timeout_s=settings.timeout_s)
        except ProbeError as exc:
            return {"role": role, "host": host, "ok": False, "error": str(exc), "reason": exc.reason, "answer": _answer(exc)}
        return {"role": role, "host": host, "ok": True, "addresses": list(found.addresses), "resolve_ms": round(found.elapsed_ms, 1)}

    rows = await asyncio.gather(*(one(role, host) for role, host in hosts.items()))
    failed = [r for r in rows if not r["ok"]]
    times = [r["resolve_ms"] for r in rows if r["ok"]]
    metrics = {"resolve_ms": max(times) if times else None, "hosts_failed": len(failed)}
    details = {"hosts": rows}
    if failed:
        names = ", ".join(r["host"] for r in failed)
        answers = {r["answer"] for r in failed}
        why = answers.pop() if len(answers) == 1 else "several errors, see details"
        return Outcome.failed(f"could not resolve {names} ({why})", metrics=metrics, details=details)
    slow = [r for r in rows if r["resolve_ms"] > settings.slow_ms]
    if slow:
        return Outcome.warned(
            f"resolved {len(rows)} hosts, slow: " + ", ".join(f"{r['host']} {r['resolve_ms']:.0f} ms" for r in slow),
            metrics=metrics,
            details=details,
        )
    return Outcome.passed(f"resolved {len(rows)} hosts in at most {max(times):.0f} ms", metrics=metrics, details=details)


def _answer(exc: ProbeError) -> str:
    """The resolver's own words ("Name or service not known"), or the timeout."""
    text = str(exc)
    if exc.reason == "timeout":
        return "no answer from the resolver"
    return text[text.find("(") + 1 : -1] if text.endswith(")") and "(" in text else text
