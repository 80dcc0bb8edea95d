"""The ``media.path`` check: a real call's media through the TURN relay, as the softphone sends it.

Per transport, in the order the softphone prefers them (UDP, then TCP, then TLS), the
first configured ``turn:``/``turns:`` url of ``[[ice.servers]]`` is tried:

1. a TURN allocation on every transport at once, under ``[ice] timeout_s`` (a blackholed
   server costs that, not aioice's 63.5 s; a failure gets its reason: ``auth``,
   ``refused``, ``timeout``, ``tls_untrusted``, ...);
2. on the first transport that allocated, two relay-only aiortc peers connect and carry
   audio and probes (:mod:`.engine`); if that fails, the next transport is tried.

Figures (:mod:`.quality`) are converted to what the softphone would see on the agent's
path: one crossing of the agent's network each way, where the two-peer path crosses it
twice each way. See README.md for the exact definitions.
"""

from __future__ import annotations

import asyncio
import importlib
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentd import hookimpl
from agentd.checks import Check, CheckContext, Outcome, Plan
from agentd.config import ConfigSection
from agentd.errors import ConfigError, ProbeError
from agentd.tls import client_context

from agentd_plugins.ice import IceSettings, turn_endpoints
from agentd_plugins.ice.probes import Allocation, turn_allocation

from .quality import e_model, interarrival_jitter, longest_run, one_crossing_loss, percentile

if TYPE_CHECKING:
    from .engine import PathRun, RelayTarget

TRANSPORTS = ("udp", "tcp", "tls")
SETTLE_S = 0.2
"""How long unused allocation pre-checks may still take once media has been measured."""
CLOSE_ALLOWANCE_S = 1.0
"""Closing both peers (engine.CLOSE_TIMEOUT_S); the engine imports aiortc, so it loads on first use."""
SERIES_MAX_POINTS = 300


@dataclass(frozen=True)
class MediaSettings:
    """``[media]``"""

    duration_s: float = field(default=2.5, metadata={"help": "how long to probe in the pre-shift profile (s)", "min": 0.2, "max": 60})
    full_duration_s: float = field(default=10.0, metadata={"help": "how long to probe in the full and incident profiles (s)", "min": 0.2, "max": 300})
    interval_ms: float = field(default=20.0, metadata={"help": "one probe every this many ms (the softphone sends audio every 20 ms)", "min": 2, "max": 1000})
    connect_timeout_s: float = field(default=3.0, metadata={"help": "deadline of connecting the two peers through one relay transport (s)", "min": 0.2, "max": 60})
    warn_mos: float = field(default=4.0, metadata={"help": "a MOS below this is a warning", "min": 1, "max": 5})
    fail_mos: float = field(default=3.5, metadata={"help": "a MOS below this fails the check (Genesys: below 3.5 is unacceptable)", "min": 1, "max": 5})


@hookimpl
def agentd_config_sections():
    return [ConfigSection("media", MediaSettings, "the media.path check")]


@hookimpl
def agentd_configure(config) -> None:
    media: MediaSettings = config.section("media")
    if media.fail_mos > media.warn_mos:
        raise ConfigError(
            f"fail_mos ({media.fail_mos:g}) is above warn_mos ({media.warn_mos:g}): a failing MOS must also warn",
            file=str(config.path) if config.path else None,
            key="media.fail_mos",
        )


@hookimpl
def agentd_collect_checks(plan: Plan):
    media: MediaSettings = plan.config.section("media")
    ice: IceSettings = plan.config.section("ice")
    duration = _duration(media, plan.profile)
    # allocation + up to three connections + probing + late echoes + closing, with room
    budget = ice.timeout_s + len(TRANSPORTS) * media.connect_timeout_s + duration + 0.5 + CLOSE_ALLOWANCE_S + SETTLE_S + 0.5
    return [
        Check(
            "media.path",
            "Media through the TURN relay (audio and probes)",
            run_media_check,
            timeout_s=budget,
            profiles=frozenset({"preshift", "full"}),
            order=70,
        )
    ]


def _duration(media: MediaSettings, profile: str) -> float:
    return media.duration_s if profile == "preshift" else media.full_duration_s


async def run_media_check(ctx: CheckContext) -> Outcome:
    media: MediaSettings = ctx.section("media")
    ice: IceSettings = ctx.section("ice")
    candidates = {t: turn_endpoints(ice, t) for t in TRANSPORTS}
    if not any(candidates.values()):
        return Outcome.skipped(
            "no turn:/turns: url in [[ice.servers]]: nothing to relay media through",
            details={"reason": "not_configured", "attempts": []},
        )
    ctx.note("allocating on the TURN server")
    # every transport at once: a blackholed one costs its deadline once, not three times,
    # and each is awaited only when its turn comes (a dead TLS does not delay a good UDP)
    allocations = {
        t: asyncio.ensure_future(turn_allocation(candidates[t][0], timeout_s=ice.timeout_s, ca_file=ice.ca_file))
        for t in TRANSPORTS
        if candidates[t]
    }
    attempts: list[dict[str, Any]] = []
    run: "PathRun | None" = None
    not_configured = [t for t in TRANSPORTS if not candidates[t]]
    try:
        # aiortc takes ~0.3 s to import: do it in a thread while the allocations wait on the
        # network, not on the event loop where it would stall every other check
        engine = await asyncio.to_thread(importlib.import_module, f"{__name__}.engine")
        plan = engine.ProbePlan(
            duration_s=_duration(media, ctx.plan.profile), interval_ms=media.interval_ms, connect_timeout_s=media.connect_timeout_s
        )
        for transport, pending in allocations.items():
            endpoint = candidates[transport][0]
            allocation = await pending
            attempt: dict[str, Any] = {"transport": transport, "server": endpoint.url.url}
            if not allocation.ok:
                attempts.append({**attempt, "ok": False, "reason": allocation.reason, "error": allocation.error})
                continue
            ctx.note(f"media over {transport.upper()} through {endpoint.url.hostport}")
            try:
                run = await engine.run_media_path(_target(endpoint, allocation, ice), plan)
            except ProbeError as exc:
                attempts.append({**attempt, "ok": False, "reason": exc.reason, "error": str(exc)})
                continue
            except Exception as exc:  # noqa: BLE001 - aiortc's own failure is this attempt's, not the check's
                ctx.log.warning("media attempt raised", transport=transport, error=repr(exc))
                attempts.append({**attempt, "ok": False, "reason": "protocol", "error": f"{type(exc).__name__}: {exc}"})
                continue
            if not any(r.echo_rtt_ms is not None for r in run.records):
                attempts.append({**attempt, "ok": False, "reason": "timeout", "error": "connected, but no probe came back through the relay"})
                run = None
                continue
            attempts.append({**attempt, "ok": True, "reason": None, "error": None, "connect_ms": round(run.connect_ms, 1)})
            break
    finally:
        await _settle(allocations.values())
    if run is None:
        return _blocked(attempts, not_configured)
    return measured_outcome(run, attempts, media, not_configured=not_configured)


async def _settle(tasks) -> None:
    """Let the unused allocation checks finish their release briefly, then cancel the rest
    (a cancelled one is freed by the server when its 60 s lifetime ends)."""
    pending = [t for t in tasks if not t.done()]
    if pending:
        _, still = await asyncio.wait(pending, timeout=SETTLE_S)
        for task in still:
            task.cancel()


def _target(endpoint, allocation: Allocation, ice: IceSettings) -> "RelayTarget":
    from .engine import RelayTarget

    url = endpoint.url
    tls = url.transport == "tls"
    return RelayTarget(
        url=url.url,
        transport=url.transport,
        # the address the allocation used (no second lookup); TLS keeps the name to verify
        host=url.host if tls else (allocation.address or url.host),
        port=url.port,
        username=endpoint.username or "",
        password=endpoint.credential.reveal() if endpoint.credential is not None else "",
        ssl_context=client_context(ice.ca_file) if tls else None,
    )


def _blocked(attempts: list[dict[str, Any]], not_configured: list[str]) -> Outcome:
    reasons = {a["reason"] for a in attempts}
    if reasons == {"auth"}:
        summary = "the TURN server rejected the username or credential (401) on every transport: no media"
    else:
        summary = "no relay carried media (" + "; ".join(f"{a['transport'].upper()}: {a['reason']}" for a in attempts) + ")"
    return Outcome.failed(
        summary,
        details={
            "transport": None,
            "attempts": attempts,
            "not_configured": not_configured,
            "reason": reasons.pop() if len(reasons) == 1 else "several",
        },
    )


# -- figures ------------------------------------------------------------------------------------


def measured_outcome(run: "PathRun", attempts: list[dict[str, Any]], media: MediaSettings, *, not_configured: list[str] = ()) -> Outcome:
    """Metrics, details and status from one successful media run (pure: no I/O)."""
    records = run.records
    sent = len(records)
    echoes = [r.echo_rtt_ms for r in records if r.echo_rtt_ms is not None]
    forward = [r for r in records if r.forward_ms is not None]
    raw_loss = 1.0 - len(echoes) / sent
    loss = one_crossing_loss(raw_loss)
    # the echo goes agent→relay→agent twice; the softphone's round trip to the relay is half
    rtts = [e / 2.0 for e in echoes]
    jitter = interarrival_jitter([r.forward_ms for r in forward])
    rtt_median = statistics.median(rtts)
    quality = e_model(rtt_median, jitter, loss * 100.0)
    burst = longest_run([r.echo_rtt_ms is None for r in records])
    forward_loss = 1.0 - len(forward) / sent
    backward_loss = 1.0 - len(echoes) / len(forward) if forward else None
    metrics = {
        "rtt_ms": round(rtt_median, 2),
        "rtt_p95_ms": round(percentile(rtts, 95), 2),
        "rtt_max_ms": round(max(rtts), 2),
        "jitter_ms": round(jitter, 2),
        "loss_pct": round(loss * 100.0, 2),
        # each direction of the two-peer path crosses the agent's network once up and once down
        "upstream_loss_pct": None,
        "downstream_loss_pct": None,
        "max_loss_burst": burst,
        "mos": round(quality.mos, 2),
        "r_factor": round(quality.r_factor, 1),
    }
    details = {
        "transport": run.transport,
        "server": run.url,
        "attempts": attempts,
        "not_configured": list(not_configured),
        "raw_loss_pct": round(raw_loss * 100.0, 2),
        "probes_sent": sent,
        "probes_received": len(echoes),
        "interval_ms": media.interval_ms,
        "connect_ms": round(run.connect_ms, 1),
        "echo_rtt_ms": {"median": round(statistics.median(echoes), 2), "p95": round(percentile(echoes, 95), 2), "max": round(max(echoes), 2)},
        "two_peer_loss_pct": {
            "a_to_b": round(forward_loss * 100.0, 2),
            "b_to_a": None if backward_loss is None else round(backward_loss * 100.0, 2),
        },
        "direction_note": "each direction of the two-peer path crosses the agent's network once up and once down, "
        "so upstream and downstream loss cannot be told apart; loss_pct is the round trip",
        "audio": {"a_to_b": _audio(run.audio_a_to_b), "b_to_a": _audio(run.audio_b_to_a)},
        "series": thin_series(records),
    }
    if run.ended_early:
        details["ended_early"] = run.ended_early
    udp_failed = next((a for a in attempts if a["transport"] == "udp" and not a["ok"]), None)
    summary = (
        f"media over {run.transport.upper()}: rtt {_short(rtt_median)} ms, jitter {jitter:.1f} ms, "
        f"loss {loss * 100:.1f}%, MOS {quality.mos:.2f}"
    )
    if udp_failed:
        summary = f"UDP relay failed ({udp_failed['reason']}); " + summary
    if quality.mos < media.fail_mos:
        return Outcome.failed(f"{summary} (below {media.fail_mos:g})", metrics=metrics, details=details)
    if run.transport != "udp" or quality.mos < media.warn_mos or run.ended_early:
        return Outcome.warned(summary, metrics=metrics, details=details)
    return Outcome.passed(summary, metrics=metrics, details=details)


def _short(ms: float) -> str:
    """Whole milliseconds, or one decimal below 10 ms (a LAN path is not "0 ms")."""
    return f"{ms:.1f}" if ms < 10 else f"{ms:.0f}"


def _audio(flow) -> dict[str, Any]:
    return {
        "frames_received": flow.frames_received,
        "peak_level": flow.peak_level,
        "packets_sent": flow.packets_sent,
        "packets_lost": flow.packets_lost,
        "rtcp_rtt_ms": flow.rtcp_rtt_ms,
        "rtcp_jitter_ms": flow.rtcp_jitter_ms,
    }


def thin_series(records, max_points: int = SERIES_MAX_POINTS) -> list[dict[str, Any]]:
    """``[{t_ms, rtt_ms | None}]`` for charts, at most ``max_points``.

    One point per probe when they fit; otherwise consecutive probes are grouped and each
    point carries the group's worst round trip (None when all were lost) and ``lost``.
    """
    if not records:
        return []
    size = -(-len(records) // max_points)  # ceiling division
    points = []
    for start in range(0, len(records), size):
        group = records[start : start + size]
        rtts = [r.echo_rtt_ms / 2.0 for r in group if r.echo_rtt_ms is not None]
        point: dict[str, Any] = {"t_ms": round(group[0].sent_s * 1000.0, 1), "rtt_ms": round(max(rtts), 2) if rtts else None}
        if size > 1:
            point["lost"] = len(group) - len(rtts)
        points.append(point)
    return points
