"""The ``websocket`` check: configured ws(s):// targets and the channels other plugins
contribute through ``agentd_websocket_channels`` (the Genesys notifications channel
subscribed to the agent's calls; the softphone's streaming XMPP channel). Details follow
plugins/FINDINGS.md."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable

from agentd.checks import CheckContext, Outcome
from agentd.tls import client_context

from .probe import ProbePlan, probe_target, summarize_rtts
from .settings import WebsocketSettings

# The top-level fields of details: those of the row that decides the status (FINDINGS.md).
TOP_LEVEL = ("target", "phases", "handshake_status", "close_code", "close_reason", "reason", "large_messages")

def probe_plan(settings: WebsocketSettings, *, genesys: bool = False) -> ProbePlan:
    return ProbePlan(
        connect_timeout_s=settings.connect_timeout_s,
        ping_count=settings.ping_count,
        ping_interval_s=settings.ping_interval_s,
        pong_timeout_s=settings.pong_timeout_s,
        genesys_ping=genesys,
        observe_s=settings.observe_s,
        heartbeat_timeout_s=settings.heartbeat_timeout_s if genesys else None,
        large_message_bytes=settings.large_message_bytes,
    )


def check_timeout_s(settings: WebsocketSettings, api_timeout_s: float = 0.0) -> float:
    """The check's own deadline: the slowest target's worst case, plus the API calls."""
    per_ping = settings.ping_interval_s + 2 * settings.pong_timeout_s  # protocol ping + Genesys ping
    # the streaming channel may send one ping more to tell one lost pong from a server that stopped answering
    confirm = settings.ping_interval_s + settings.pong_timeout_s
    return settings.connect_timeout_s + settings.ping_count * per_ping + confirm + settings.observe_s + 2 * api_timeout_s + 2.0


async def run_websocket(ctx: CheckContext) -> Outcome:
    settings: WebsocketSettings = ctx.section("websocket")
    context = client_context(settings.ca_file)
    jobs: list[Awaitable[dict | None]] = [probe_target(url, probe_plan(settings), ssl_context=context) for url in settings.targets]
    plugins = getattr(ctx.plan, "plugins", None)
    if settings.genesys_channel and plugins is not None:
        jobs.extend(channel.probe(ctx, settings, probe_plan(settings, genesys=True)) for _, channel in plugins.websocket_channels(ctx.config))
    if not jobs:
        return Outcome.skipped(
            "no WebSocket target configured and no Genesys credentials ([websocket] targets, [genesys] client_id)",
            details={"reason": "not_configured", "targets": []},
        )
    rows = [row for row in await asyncio.gather(*jobs) if row is not None]
    if not rows:
        return Outcome.skipped(
            "no WebSocket target configured and no Genesys credentials ([websocket] targets, [genesys] client_id)",
            details={"reason": "not_configured", "targets": []},
        )
    return classify(rows, settings)


def classify(rows: list[dict], settings: WebsocketSettings) -> Outcome:
    """Status from the rows: any failed target fails the check; slow or large messages warn."""
    failed = [r for r in rows if not r["ok"]]
    warnings: list[str] = []
    for r in rows:
        if not r["ok"]:
            continue
        rtt = summarize_rtts(_rtts(r))["median"]
        if rtt is not None and rtt > settings.slow_rtt_ms:
            warnings.append(f"{r['target']}: slow pongs (median {rtt:.0f} ms)")
            r.setdefault("warning", "slow")
        if r["connect_ms"] is not None and r["connect_ms"] > settings.slow_connect_ms:
            warnings.append(f"{r['target']}: slow opening ({r['connect_ms']:.0f} ms)")
            r.setdefault("warning", "slow")
        if r["large_messages"]:
            largest = max(m["bytes"] for m in r["large_messages"])
            warnings.append(
                f"{r['target']}: {len(r['large_messages'])} message(s) above {settings.large_message_bytes} bytes (largest {largest})"
            )
            r.setdefault("warning", "large_messages")
    worst = failed[0] if failed else next((r for r in rows if "warning" in r), rows[0])
    details: dict[str, Any] = {key: worst.get(key) for key in TOP_LEVEL}
    details["targets"] = rows
    rtts = _rtts(worst)
    gaps = [r["max_heartbeat_gap_s"] for r in rows if r["max_heartbeat_gap_s"] is not None]
    metrics = {
        "connect_ms": max((r["connect_ms"] for r in rows if r["connect_ms"] is not None), default=None),
        "ping_rtt_ms": summarize_rtts(rtts)["median"],
        "max_heartbeat_gap_s": max(gaps, default=None),
    }
    if failed:
        return Outcome.failed("; ".join(r["error"] for r in failed), metrics=metrics, details=details)
    if warnings:
        return Outcome.warned("; ".join(warnings), metrics=metrics, details=details)
    parts = []
    for r in rows:
        rtt = summarize_rtts(_rtts(r))["median"]
        median = f", median {rtt:.1f} ms" if rtt is not None else ""
        if r.get("xmpp"):
            phases = r["phases"]
            parts.append(
                f"{r['target']} open in {r['connect_ms']:.0f} ms (SASL {phases.get('sasl_ms') or 0:.0f} ms, bind {phases.get('bind_ms') or 0:.0f} ms), "
                f"{r['xmpp_pongs_received']}/{r['xmpp_pings_sent']} XMPP pongs{median}"
            )
        else:
            parts.append(f"{r['target']} open in {r['connect_ms']:.0f} ms, {r['pongs_received']}/{r['pings_sent']} pongs{median}")
    return Outcome.passed("; ".join(parts), metrics=metrics, details=details)


def _rtts(row: dict) -> list[float]:
    """Every round trip of a row: protocol pings, the Genesys text ping, XMPP pings."""
    return row["ping_rtts_ms"] + row["genesys_ping_rtts_ms"] + row.get("xmpp_ping_rtts_ms", [])
