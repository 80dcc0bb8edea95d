"""The ``path.load`` check (latency under load: bufferbloat) and its ``network.bufferbloat`` rule.

A bounded test in the ``full`` profile (and whenever helpdesk asks for a full check): it
measures round trips to the media edge while the line is idle, then loads the line up and
down for a few seconds with several HTTP flows to a load service of the organisation's
own (``agentd reflect --http-port``; never a public host), byte-capped, and reports the
delay the load added (median and 90th percentile), RPM (draft-ietf-ippm-responsiveness)
and a grade (``measure.py``). The rule names ``network.bufferbloat`` when the added delay
would break calls by the project's E-model.

It does not run during a call (the daemon's notifications monitor records calls in the
local timeline), not under the run's other checks (it waits for them: the load would
spoil their figures), and not on many PCs of one site at once (the service admits a
bounded number of tests and answers 429 with Retry-After; the check waits briefly once,
then skips and says so).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from agentd import hookimpl, redact
from agentd.checks import Check, CheckContext, Outcome, Plan
from agentd.config import Config, ConfigSection, Secret
from agentd.errors import AgentdError, ConfigError, ProbeError
from agentd.net import resolve
from agentd.tls import client_context

from . import client as load_client
from .client import Busy, Counter, LoadClient, Prober, Target
from .measure import breaks_calls, summarise
from .rule import bufferbloat_verdicts, mos_limit_of

CHECK_ID = "path.load"
MB = 2**20

OTHER_CHECKS = ("dns", "https", "websocket", "stun", "nat", "turn.udp", "turn.tcp", "turn.tls", "udp.ports", "media.path", "host", "path")
"""The checks whose figures the load would spoil: path.load waits until they are done."""


@dataclass(frozen=True)
class LoadedLatencySettings:
    """``[loaded_latency]``"""

    url: str | None = field(default=None, metadata={"help": "the load service: http(s)://host:port of `agentd reflect --http-port` (default: the [hub] url; neither: the check skips)"})
    token: Secret | None = field(default=None, metadata={"help": "the service's --load-token, if it has one (Authorization: Bearer); the hub gets this PC's install token"})
    ca_file: Path | None = field(default=None, metadata={"help": "a PEM CA bundle to trust for an https:// url (added to the system's)"})
    load_s: float = field(default=5.0, metadata={"help": "how long the line is loaded", "min": 1, "max": 30})
    idle_s: float = field(default=1.0, metadata={"help": "round trips measured before the load (the idle baseline)", "min": 0.2, "max": 10})
    ramp_s: float = field(default=1.0, metadata={"help": "the first seconds of load, while queues fill, are not counted", "min": 0, "max": 10})
    flows: int = field(default=16, metadata={"help": "HTTP connections each way", "min": 1, "max": 32})
    interval_ms: float = field(default=50.0, metadata={"help": "one round-trip probe every this many ms", "min": 10, "max": 1000})
    upload_cap_mb: float = field(default=16.0, metadata={"help": "most MiB one test sends", "min": 0.25, "max": 1024})
    download_cap_mb: float = field(default=48.0, metadata={"help": "most MiB one test receives", "min": 0.25, "max": 4096})
    busy_wait_s: float = field(default=5.0, metadata={"help": "a busy service (another PC testing) is waited for once, this long at most", "min": 0, "max": 60})
    wait_for_checks_s: float = field(default=20.0, metadata={"help": "how long to wait for the run's other checks before loading the line", "min": 0, "max": 300})
    timeout_s: float = field(default=3.0, metadata={"help": "deadline of each request to the service (start, end)", "min": 0.2, "max": 30})
    call_max_h: float = field(default=4.0, metadata={"help": "a call the timeline saw start, without an end, counts as running for this long at most", "min": 0.1, "max": 48})


@hookimpl
def agentd_config_sections():
    return [ConfigSection("loaded_latency", LoadedLatencySettings, "the path.load check: latency under load (bufferbloat)")]


@hookimpl
def agentd_configure(config: Config) -> None:
    settings: LoadedLatencySettings = config.section("loaded_latency")
    if settings.url is not None:
        try:
            Target.parse(settings.url)
        except ValueError as exc:
            raise ConfigError(str(exc), file=str(config.path) if config.path else None, key="loaded_latency.url") from None


@hookimpl
def agentd_unconfigured(config: Config):
    settings: LoadedLatencySettings = config.section("loaded_latency")
    if settings.url is None and _hub_settings(config) is None:
        return ["latency under load (path.load): set [loaded_latency] url to an `agentd reflect --http-port` service, or [hub] url"]
    return []


@hookimpl
def agentd_collect_checks(plan: Plan):
    s: LoadedLatencySettings = plan.config.section("loaded_latency")
    own = s.idle_s + s.load_s + 2.0 + 2 * s.timeout_s + s.busy_wait_s
    return [
        Check(
            CHECK_ID,
            "Latency under load (bufferbloat)",
            run_path_load,
            timeout_s=s.wait_for_checks_s + own + 2.0,  # a backstop: every phase has its own deadline
            profiles=frozenset({"full"}),
            order=75,
        )
    ]


@hookimpl
def agentd_correlate(findings):
    return bufferbloat_verdicts(findings)


# -- a call in progress ----------------------------------------------------------------------------


def call_in_progress(max_age_h: float) -> dict[str, Any] | None:
    """The call the daemon's notifications monitor saw start and not end (from the local
    timeline), or None. ``{"state": "unknown"}`` when there is no timeline to ask."""
    from agentd import timeline as timeline_mod

    timeline = timeline_mod.open_existing()
    if timeline is None:
        return {"state": "unknown"}
    try:
        since = datetime.now(timezone.utc) - timedelta(hours=max_age_h)
        events = timeline.events(start=since, kinds=["call.start", "call.end"])
    except Exception:  # a broken history: nothing known
        return {"state": "unknown"}
    finally:
        timeline.close()
    running: dict[str, str] = {}
    for event in events:
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        conversation = str(data.get("conversationId") or "")
        if event.get("kind") == "call.start":
            running[conversation] = event.get("at", "")
        else:
            running.pop(conversation, None)
    if running:
        conversation, since_at = list(running.items())[-1]
        return {"state": "active", "conversationId": conversation, "since": since_at}
    return None


def _call_skip(call: dict[str, Any], details: dict) -> Outcome:
    details = {**details, "reason": "call_active", "call": call}
    return Outcome.skipped(
        f"a call is in progress (conversation {call.get('conversationId') or '?'}, since {call.get('since') or '?'}): "
        "loading the line would hurt it; run a full check after the call",
        details=details,
    )


# -- the check ---------------------------------------------------------------------------------------


async def _wait_for_others(ctx: CheckContext, limit_s: float) -> list[str]:
    """Wait (at most ``limit_s``) for the run's other checks; the ids still running after it."""
    waits = {cid: asyncio.ensure_future(ctx.result_of(cid)) for cid in OTHER_CHECKS if cid != ctx.check_id}
    if not waits:
        return []
    done, pending = await asyncio.wait(waits.values(), timeout=limit_s)
    for task in pending:
        task.cancel()
    return [cid for cid, task in waits.items() if task in pending]


async def _probe_target(ctx: CheckContext, target: Target, timeout_s: float) -> tuple[str, str, int, str]:
    """(kind, address, port, shown): the media edge's first STUN/TURN UDP url, else the load service over TCP."""
    try:
        from agentd_plugins.ice.probes import resolve_url
        from agentd_plugins.ice.selection import selection

        chosen = await selection(ctx)
        endpoint = next(iter(chosen.udp_targets()), None)
    except ConfigError:  # the ice plugin is disabled
        endpoint = None
    if endpoint is not None:
        address = await resolve_url(endpoint.url, timeout_s=timeout_s)
        return "stun", address, endpoint.url.port, f"STUN {endpoint.url.hostport}"
    resolved = await resolve(target.host, target.port, timeout_s=timeout_s)
    return "tcp", resolved.addresses[0], target.port, f"TCP handshakes to {target.host}:{target.port}"


def _hub_settings(config: Config) -> Any:
    try:
        return config.section("hub")
    except ConfigError:  # the hub plugin is disabled
        return None


async def _hub_target(ctx: CheckContext, timeout_s: float) -> tuple[Target, str | None, Any] | None:
    """The configured hub as the load target, with this PC's install token (enrolling once if
    it has none yet, as the hub sink does); None without ``[hub]``."""
    hub = _hub_settings(ctx.config)
    if hub is None:
        return None
    from agentd_plugins.hub import install_token, load_token

    token = load_token(hub)
    if token is None:
        async with asyncio.timeout(timeout_s):
            token = await install_token(hub)
    return Target.parse(hub.url), token, hub.ca_file


async def run_path_load(ctx: CheckContext) -> Outcome:
    s: LoadedLatencySettings = ctx.section("loaded_latency")
    if s.url is not None:
        target, token, ca_file = Target.parse(s.url), (s.token.reveal() if s.token else None), s.ca_file
        if token:
            redact.register_secret(token)  # never in a summary, a log line or an error
    else:
        try:
            found = await _hub_target(ctx, s.timeout_s)
        except TimeoutError:
            raise ProbeError(f"the hub did not enroll this PC within {s.timeout_s:g} s: no token for its load service", reason="timeout") from None
        except AgentdError as exc:
            raise ProbeError(f"the hub's load service needs this PC's install token: {exc}", reason="auth") from None
        if found is None:
            return Outcome.skipped(
                "no load target: set [loaded_latency] url to an `agentd reflect --http-port` service of your own, or [hub] url "
                "(never a public host)",
                details={"reason": "not_configured"},
            )
        target, token, ca_file = found
    details: dict[str, Any] = {"service": target.shown, "upload_cap_bytes": int(s.upload_cap_mb * MB), "download_cap_bytes": int(s.download_cap_mb * MB)}
    call = call_in_progress(s.call_max_h)
    if call is not None and call.get("state") == "active":
        return _call_skip(call, details)
    details["call_state"] = "unknown (no timeline of the notifications monitor)" if call else "no call"

    ctx.note("waiting for the other checks")
    still = await _wait_for_others(ctx, s.wait_for_checks_s)
    if still:
        return Outcome.skipped(
            f"{', '.join(still)} still measuring after {s.wait_for_checks_s:g} s: not loading the line under them",
            details={**details, "reason": "checks_running", "running": still},
        )
    kind, address, port, shown = await _probe_target(ctx, target, s.timeout_s)
    details.update(probe=shown, probe_kind=kind)
    if kind == "tcp":
        details["probe_note"] = "no stun:/turn: UDP url known: round trips are TCP handshakes to the load service"

    ssl_context = client_context(ca_file) if target.scheme == "https" else None
    service = LoadClient(target, token=token, ssl_context=ssl_context, timeout_s=s.timeout_s)
    started = await service.start()
    waited = 0.0
    if isinstance(started, Busy):
        if started.retry_after_s > s.busy_wait_s:
            return _busy(details, started, waited)
        ctx.note(f"load service busy: waiting {started.retry_after_s:g} s")
        waited = started.retry_after_s
        await asyncio.sleep(started.retry_after_s)
        started = await service.start()
        if isinstance(started, Busy):
            return _busy(details, started, waited)
    if waited:
        details["waited_busy_s"] = waited
    session, budget = started
    ended: list[dict] = []
    try:
        call = call_in_progress(s.call_max_h)  # a call may have started while this check waited
        if call is not None and call.get("state") == "active":
            return _call_skip(call, details)
        return await _measure(ctx, s, service, session, budget, kind, address, port, shown, details, ended)
    finally:
        if not ended:
            await service.end(session)


def _busy(details: dict, busy: Busy, waited: float) -> Outcome:
    extra = f" (waited {waited:g} s once)" if waited else ""
    return Outcome.skipped(
        f"the load service is busy with another PC's test{extra}: skipped so that one site's PCs never load their line at once; "
        f"it asks to retry after {busy.retry_after_s:g} s",
        details={**details, "reason": "busy", "retry_after_s": busy.retry_after_s},
    )


async def _measure(
    ctx, s: LoadedLatencySettings, service: LoadClient, session: str, budget: int, kind: str, address: str, port: int, shown: str, details: dict, ended: list[dict]
) -> Outcome:
    up_cap = int(s.upload_cap_mb * MB)
    down_cap = int(s.download_cap_mb * MB)
    if budget:  # the service's own budget is the ceiling too
        up_cap, down_cap = min(up_cap, budget), min(down_cap, budget)
    prober = Prober(interval_s=s.interval_ms / 1000.0)
    stop = asyncio.Event()
    drain_s = 2.0
    if kind == "stun":
        probing = asyncio.ensure_future(load_client.run_stun_prober(prober, address, port, stop, drain_s))
    else:
        probing = asyncio.ensure_future(load_client.run_tcp_prober(prober, address, port, stop, drain_s))
    counter = Counter()
    flows: list[asyncio.Future] = []
    try:
        ctx.note(f"idle round trips to {shown}")
        idle_start = time.monotonic()
        await asyncio.sleep(s.idle_s)
        load_start = time.monotonic()
        end_at = load_start + s.load_s
        ctx.note(f"loading the line for {s.load_s:g} s ({s.flows} flows each way)")
        flows = [asyncio.ensure_future(service.upload(session, up_cap // s.flows, end_at, counter)) for _ in range(s.flows)]
        flows += [asyncio.ensure_future(service.download(session, down_cap // s.flows, end_at, counter)) for _ in range(s.flows)]
        await asyncio.wait(flows, timeout=s.load_s + 1.0)
        load_end = min(time.monotonic(), end_at)
    finally:
        for flow in flows:
            flow.cancel()
        stop.set()
        try:
            async with asyncio.timeout(drain_s + 1.0):
                await probing
        except TimeoutError:
            probing.cancel()
    counts = await service.end(session)  # what arrived there: the throughput (the client counts what it handed its sockets)
    ended.append(counts)
    arrived_up = counts.get("uploaded") if isinstance(counts.get("uploaded"), int) else counter.uploaded
    arrived_down = counter.downloaded
    # the line counts as loaded from the end of the ramp to the moment the first direction stopped
    loaded_from = load_start + s.ramp_s
    loaded_to = load_end
    early = counter.flows_done == len(flows) and counter.last_flow_end < end_at - 0.05
    if early:
        loaded_to = counter.last_flow_end
    active_s = max(0.001, (loaded_to if early else load_end) - load_start)
    details.update(
        uploaded_bytes=counter.uploaded,
        downloaded_bytes=counter.downloaded,
        load_s=round(load_end - load_start, 2),
        ended_at_cap=early,
        arrived_upload_bytes=arrived_up,
    )
    before_ramp = loaded_to - loaded_from < 0.2
    if before_ramp:  # the caps ran out before the ramp ended: all of the load window counts, for figures only
        loaded_from = load_start
    details["ended_before_ramp"] = before_ramp
    idle = prober.answered(idle_start, load_start)
    loaded = prober.answered(loaded_from, loaded_to)
    lost = prober.lost(loaded_from, loaded_to)
    metrics: dict[str, Any] = {
        "uploaded_bytes": counter.uploaded,
        "downloaded_bytes": counter.downloaded,
        "upload_mbps": round(arrived_up * 8 / active_s / 1e6, 2),
        "download_mbps": round(arrived_down * 8 / active_s / 1e6, 2),
    }
    if not idle:
        raise ProbeError(f"{shown} answered no round trip while the line was idle", reason="timeout", details=details)
    if not loaded and early and not prober.lost(loaded_from, loaded_to):
        took = counter.last_flow_end - load_start
        details["reason"] = "cap_too_small"
        return Outcome.passed(
            f"not measurable: the line carried the whole cap ({counter.uploaded} bytes up, {counter.downloaded} down) in {took * 1000:.0f} ms, "
            f"before a round trip could be timed under it; no queue builds that fast (raise [loaded_latency] caps to measure)",
            metrics=metrics,
            details=details,
        )
    if not loaded:
        lost_all = prober.lost(loaded_from, loaded_to)
        raise ProbeError(f"{shown} answered none of {lost_all} round trips while the line was loaded", reason="timeout", details={**details, **metrics})
    figures = summarise(idle, loaded, lost)
    metrics.update(
        idle_rtt_ms=figures.idle_rtt_ms,
        loaded_rtt_ms=figures.loaded_rtt_ms,
        added_delay_ms=figures.added_ms,
        added_delay_p90_ms=figures.added_p90_ms,
        rpm=figures.rpm,
        loaded_jitter_ms=figures.loaded_jitter_ms,
        loaded_loss_pct=figures.loaded_loss_pct,
        idle_mos=figures.idle_mos,
        loaded_mos=figures.loaded_mos,
        loaded_r_factor=figures.loaded_r_factor,
        loaded_effective_ms=figures.loaded_effective_ms,
    )
    details.update(grade=figures.grade, idle_samples=figures.idle_samples, loaded_samples=figures.loaded_samples)
    mos_limit = mos_limit_of(ctx.config)
    # a load that ended at its caps before the ramp did not hold the line long enough for a queue
    # to count: what its probes saw is mostly this PC moving the caps (no verdict from it)
    why = None if before_ramp else breaks_calls(figures.added_ms, figures.idle_rtt_ms, figures.idle_mos, figures.loaded_mos, figures.loaded_effective_ms, mos_limit)
    details["breaks_calls"] = why
    text = (
        f"grade {figures.grade}: load adds {figures.added_ms:.0f} ms (p90 {figures.added_p90_ms:.0f} ms) to {figures.idle_rtt_ms:.0f} ms "
        f"round trips to {shown}; {figures.rpm:.0f} RPM; {metrics['upload_mbps']:g} Mbit/s up, {metrics['download_mbps']:g} down"
    )
    if early:
        text += " (the load ended at its byte cap: the line is faster than the cap can fill for long"
        text += "; too soon for a queue to count)" if before_ramp else ")"
    if why == "mos":
        return Outcome.warned(f"{text}; under load a call's MOS would be {figures.loaded_mos:.2f} (below {mos_limit:g})", metrics=metrics, details=details)
    if why == "delay":
        return Outcome.warned(f"{text}; under load a call's delay passes the E-model's knee (MOS {figures.loaded_mos:.2f})", metrics=metrics, details=details)
    return Outcome.passed(text, metrics=metrics, details=details)
