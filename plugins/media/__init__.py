"""The ``media.path`` check: packets and a real call through the TURN relay, as the softphone sends them.

Per transport, in the order ICE prefers them (UDP, then TCP, then TLS), on the first
configured ``turn:``/``turns:`` url of ``[[ice.servers]]``:

1. two TURN allocations (A and B) over UDP at once, and one pre-check allocation over
   TCP and TLS each, all at once, under ``[ice] timeout_s``. A server that answered
   (its 401 challenge came back) but whose allocation is still retransmitting on a lossy
   path gets more time (``PATIENCE``), still bounded; a silent one costs ``timeout_s``;
2. packet probes (:mod:`.relay_echo`): a channel bound on each allocation for the
   other's relayed address, then RTP-sized packets at the softphone's cadence both ways,
   each echoed. They start as soon as both allocations exist and wait for no handshake.
   In the pre-shift they stop when the loss decision is 95 % sure (the sequential test
   of :func:`.quality.decide_loss`) or at the cap ``duration_s``;
3. at the same time, an aiortc call (:mod:`.engine`, DTLS-SRTP, Opus) through the same
   relay proves a call sets up; its RTCP figures go to ``details.audio``.

A transport is left for the next only when it cannot carry packets: no allocation, or
nothing at all crossed the relay. A UDP path that loses 40 % is measured over UDP (as
ICE would choose it). A fallback report keeps what UDP showed in ``details.udp``. Over
UDP, ``details.relay_race`` says how often a relayed softphone call would end on the TCP
relay instead (libwebrtc keeps the first relay that connects; :func:`relay_race`).
See README.md for the figures' exact definitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentd import hookimpl
from agentd.checks import Check, CheckContext, Outcome, Plan
from agentd.config import ConfigSection
from agentd.errors import ConfigError, ProbeError
from agentd.model import Status

from agentd_plugins.ice import IceSettings
from agentd_plugins.ice.probes import Allocation, ServerProgress, open_allocation, tls_context, turn_allocation
from agentd_plugins.ice.selection import selection, with_fresh_credentials

from . import relay_echo
from .quality import e_model, interarrival_jitter, mean_jitter, percentile, udp_relay_race_lost
from .relay_echo import EchoPlan, EchoRun

if TYPE_CHECKING:
    from .engine import AudioFlow, CallResult, RelayTarget

TRANSPORTS = ("udp", "tcp", "tls")
SETTLE_S = 0.2
"""How long unused allocation pre-checks may still take once media has been measured."""
PATIENCE = 2.0
"""An allocation or channel binding the server has answered may take this many times
``[ice] timeout_s`` more (bounded by the check's deadline)."""
RESERVE_S = 2.0
"""Kept at the end of the check's deadline: closing the call (engine.CLOSE_TIMEOUT_S) and
releasing the allocations (RELEASE_TIMEOUT_S)."""
DEFAULT_LOSS_THRESHOLD_PCT = 1.0
"""``[thresholds] loss_pct``'s default, used when the rules plugin is not loaded."""
DEFAULT_JITTER_THRESHOLD_MS = 30.0
"""``[thresholds] jitter_ms``'s default, used when the rules plugin is not loaded."""
SERIES_MAX_POINTS = 300
RACE_NOTE_PCT = 5.0
"""The summary names the chance of a TCP relay from this many percent (``details.relay_race`` has it whenever a TCP or TLS relay allocated)."""


@dataclass(frozen=True)
class MediaSettings:
    """``[media]``"""

    duration_s: float = field(
        default=5.0,
        metadata={
            "help": "the longest the pre-shift probes (s); it stops as soon as loss is 95 % sure to be above or below "
            "[thresholds] loss_pct and known to +-loss_precision_pct",
            "min": 0.2,
            "max": 60,
        },
    )
    full_duration_s: float = field(default=10.0, metadata={"help": "how long to probe in the full profile (s), no early stop", "min": 0.2, "max": 300})
    interval_ms: float = field(default=20.0, metadata={"help": "one probe every this many ms per stream (the softphone sends audio every 20 ms)", "min": 2, "max": 1000})
    streams: int = field(default=4, metadata={"help": "probe streams each way, each at interval_ms (more: an earlier decision, more bandwidth)", "min": 1, "max": 8})
    loss_precision_pct: float = field(
        default=2.5, metadata={"help": "the pre-shift stops early only once loss_pct's 95 % interval is within +- this many points", "min": 0.1, "max": 50}
    )
    connect_timeout_s: float = field(
        default=3.0,
        metadata={"help": "how long the call gets for ICE to connect through the relay; once it has, DTLS gets until the check's deadline (s)", "min": 0.2, "max": 60},
    )
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


def _budget(media: MediaSettings, ice: IceSettings, profile: str) -> float:
    """The check's own deadline: UDP allocations with patience, a fallback's, probing, the call, closing."""
    allocation = ice.timeout_s * (1 + PATIENCE)
    return allocation + ice.timeout_s + _duration(media, profile) + media.connect_timeout_s + RESERVE_S + SETTLE_S + 1.0


@hookimpl
def agentd_collect_checks(plan: Plan):
    media: MediaSettings = plan.config.section("media")
    ice: IceSettings = plan.config.section("ice")
    return [
        Check(
            "media.path",
            "Media through the TURN relay (packets and a call)",
            run_media_check,
            # plus the softphone's own servers: fetched, and once more after a 401
            timeout_s=_budget(media, ice, plan.profile) + 2 * ice.discovery_timeout_s,
            profiles=frozenset({"preshift", "full"}),
            order=70,
        )
    ]


def _duration(media: MediaSettings, profile: str) -> float:
    return media.duration_s if profile == "preshift" else media.full_duration_s


def _jitter_threshold_ms(ctx: CheckContext) -> float:
    try:
        return float(ctx.section("thresholds").jitter_ms)
    except (ConfigError, AttributeError):
        return DEFAULT_JITTER_THRESHOLD_MS


def _loss_threshold_pct(ctx: CheckContext) -> float:
    try:
        return float(ctx.section("thresholds").loss_pct)
    except (ConfigError, AttributeError):
        return DEFAULT_LOSS_THRESHOLD_PCT


class Pair:
    """Two open allocations on one TURN url (ends A and B); :meth:`release` starts deleting them."""

    def __init__(self, relays, release: asyncio.Event) -> None:
        self.a, self.b = relays
        self._release = release

    def release(self) -> None:
        self._release.set()


@contextlib.asynccontextmanager
async def open_pair(endpoint, *, timeout_s: float, patience_s: float, ca_file, spares: int = 1):
    """Two allocations on ``endpoint`` (ends A and B), all released on exit.

    ``2 + spares`` allocations start at once and the first two to succeed are used (a
    spare is released at once): on a lossy path one lost request then does not cost a
    0.5-1.5 s retransmission. An answer to any of them gives all of them their patience.
    Raises the first failure's :class:`ProbeError` when fewer than two succeed.
    """
    release = asyncio.Event()
    progress = ServerProgress()
    got: asyncio.Queue = asyncio.Queue()
    used: list = []

    winners: list = []

    async def hold() -> None:
        try:
            async with open_allocation(endpoint, timeout_s=timeout_s, ca_file=ca_file, patience_s=patience_s, progress=progress) as relay:
                if len(winners) < 2:
                    winners.append(relay)
                    got.put_nowait(relay)
                    await release.wait()
                # else: a spare, released at once
        except BaseException as exc:  # noqa: BLE001 - handed to the waiter; a failed release is the server's to expire
            got.put_nowait(exc)

    count = 2 + max(0, spares)
    tasks = [asyncio.ensure_future(hold()) for _ in range(count)]
    try:
        failures: list[BaseException] = []
        while len(used) < 2 and len(used) + len(failures) < count:
            item = await got.get()
            if isinstance(item, BaseException):
                failures.append(item)
            else:
                used.append(item)
        if len(used) < 2:
            first = failures[0]
            raise first if isinstance(first, Exception) else ProbeError(str(first), reason="protocol")
        yield Pair(used, release)
    finally:
        release.set()
        await asyncio.wait(tasks)  # each release is bounded (RELEASE_TIMEOUT_S)


class EngineLoader:
    """The aiortc engine module, imported in a thread on first :meth:`start` (once)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.task: asyncio.Future | None = None

    def start(self) -> asyncio.Future:
        if self.task is None:
            self.task = asyncio.ensure_future(asyncio.to_thread(importlib.import_module, self.name))
        return self.task

    def __await__(self):
        # shielded: a cancelled call (UDP carried nothing) must not cancel the import the next transport's call needs
        return asyncio.shield(self.start()).__await__()


@dataclass
class _Attempt:
    """One transport's try: its row in ``details.attempts``, its packets, its call."""

    row: dict[str, Any]
    run: EchoRun | None = None
    call: "CallResult | None" = None


async def run_media_check(ctx: CheckContext) -> Outcome:
    media: MediaSettings = ctx.section("media")
    ice: IceSettings = ctx.section("ice")
    started = time.monotonic()
    servers = await selection(ctx)  # a cached list costs nothing; a fetch comes out of this check's time
    candidates = {t: servers.turn(t) for t in TRANSPORTS}
    if not any(candidates.values()):
        return servers.nothing_to_test("turn:/turns: url (nothing to relay media through)", {"attempts": []})
    profile = ctx.plan.profile
    end_by = started + min(_budget(media, ice, profile), ctx.config.core.deadline_for(profile)) - RESERVE_S
    plan = EchoPlan(
        interval_ms=media.interval_ms,
        streams=media.streams,
        max_s=_duration(media, profile),
        sequential=profile == "preshift",
        threshold=_loss_threshold_pct(ctx) / 100.0,
        precision=media.loss_precision_pct / 100.0,
    )
    ctx.note("allocating on the TURN server")
    # TCP and TLS pre-checks at once: a blackholed server costs its deadline once, and a
    # fallback knows at once whether the next transport allocates
    prechecks = {
        t: asyncio.ensure_future(turn_allocation(candidates[t][0], timeout_s=ice.timeout_s, ca_file=ice.ca_file))
        for t in ("tcp", "tls")
        if candidates[t]
    }
    # aiortc takes 0.3 s (more on a busy PC) to import, in a thread; started once the
    # allocations and channels exist: while it loads shared libraries it holds the GIL,
    # and the allocations' requests and answers would wait for it
    engine_loading = EngineLoader(f"{__name__}.engine")
    attempts: list[_Attempt] = []
    chosen: _Attempt | None = None
    not_configured = [t for t in TRANSPORTS if not candidates[t]]
    try:
        for transport in TRANSPORTS:
            if not candidates[transport]:
                continue
            endpoint = candidates[transport][0]
            row: dict[str, Any] = {"transport": transport, "server": endpoint.url.url, "source": endpoint.source}
            if transport in prechecks:
                allocation: Allocation = await prechecks[transport]
                fresh = await _fresh_after_401(ctx, endpoint, allocation.reason) if not allocation.ok else None
                if fresh is not None:
                    endpoint = fresh  # the softphone's credentials went stale: the re-fetched ones go on
                elif not allocation.ok:
                    attempts.append(_Attempt({**row, "ok": False, "reason": allocation.reason, "error": allocation.error}))
                    continue
            attempt = await _try_transport(ctx, endpoint, row, plan, ice, media, engine_loading, end_by)
            fresh = await _fresh_after_401(ctx, endpoint, attempt.row.get("reason"))
            if fresh is not None:
                attempt = await _try_transport(ctx, fresh, {**row, "refetched": True}, plan, ice, media, engine_loading, end_by)
            attempts.append(attempt)
            if attempt.row["ok"]:
                chosen = attempt
                break
    finally:
        await _settle([*prechecks.values(), *([engine_loading.task] if engine_loading.task else [])])
    rows = [a.row for a in attempts]
    udp = next((a for a in attempts if a.row["transport"] == "udp"), None)
    udp_seen = _udp_seen(udp) if udp is not None and chosen is not udp else None
    tested = [c[0] for c in candidates.values() if c]
    if chosen is None:
        blocked = _blocked(rows, not_configured, udp_seen)
        return Outcome(blocked.status, blocked.summary + servers.suffix(tested), details=servers.annotate(dict(blocked.details), tested))
    outcome = measured_outcome(
        chosen.run,
        chosen.call,
        rows,
        media,
        not_configured=not_configured,
        udp=udp_seen,
        fallback=_fallback_ready(prechecks),
        jitter_limit_ms=_jitter_threshold_ms(ctx),
    )
    summary = outcome.summary
    if servers.relay_only:
        summary += f"; relay-only, as the softphone runs ({servers.relay_only_why})"
    status = outcome.status
    if servers.failed_offers() and status == Status.PASS:
        status = Status.WARN
    return Outcome(status, summary + servers.suffix(tested), metrics=outcome.metrics, details=servers.annotate(dict(outcome.details), tested))


async def _fresh_after_401(ctx: CheckContext, endpoint, reason: str | None):
    """The same url with re-fetched credentials when offered ones got 401 (once per run), else None."""
    if reason != "auth" or endpoint.source == "config":
        return None
    ctx.note("TURN credentials rejected: fetching them again")
    return await with_fresh_credentials(ctx, endpoint)


async def _try_transport(ctx, endpoint, row, plan: EchoPlan, ice: IceSettings, media: MediaSettings, engine_loading, end_by: float) -> _Attempt:
    """Packets (and a call, at the same time) through one transport; ``row["ok"]``: it carried packets."""
    transport = endpoint.url.transport
    patience = max(0.0, min(PATIENCE * ice.timeout_s, end_by - time.monotonic() - ice.timeout_s))
    setup_started = time.monotonic()
    call_task: asyncio.Task | None = None
    hold = asyncio.Event()
    try:
        async with open_pair(endpoint, timeout_s=ice.timeout_s, patience_s=patience, ca_file=ice.ca_file) as pair:
            ctx.note(f"packets over {transport.upper()} through {endpoint.url.hostport}")
            await relay_echo.bind_channels(pair.a, pair.b, timeout_s=max(0.2, min(ice.timeout_s * (1 + PATIENCE), end_by - time.monotonic())))
            setup_ms = (time.monotonic() - setup_started) * 1000.0
            # the call starts with the probes, not before: its set-up (certificates, peers)
            # takes the event loop for a while, and the bindings should not wait for it
            probing = asyncio.ensure_future(
                relay_echo.probe(pair.a, pair.b, plan, transport=transport, url=endpoint.url.url, setup_ms=setup_ms, end_by=end_by)
            )
            call_task = asyncio.ensure_future(_call(endpoint, pair.a, ice, media, engine_loading, hold, end_by))
            run = await probing
            pair.release()  # deleting the allocations runs while the call finishes
            row = {**row, "setup_ms": round(setup_ms, 1), "alloc_ms": max(pair.a.alloc_ms, pair.b.alloc_ms)}
            if not run.carried:
                call_task.cancel()
                return _Attempt(
                    {**row, "ok": False, "reason": "timeout", "error": f"allocated, but none of {len(run.records)} packets crossed the relay"},
                    run=run,
                )
            hold.set()
            ctx.note("waiting for the call to finish")
            call = await _finish_call(call_task, end_by)
            return _Attempt({**row, "ok": True, "reason": None, "error": None}, run=run, call=call)
    except ProbeError as exc:
        return _Attempt({**row, "ok": False, "reason": exc.reason, "error": str(exc)})
    finally:
        if call_task is not None and not call_task.done():
            call_task.cancel()
            await asyncio.wait([call_task])


async def _call(endpoint, relay, ice: IceSettings, media: MediaSettings, engine_loading, hold: asyncio.Event, end_by: float):
    engine = await engine_loading
    target = _target(endpoint, relay.address, ice)
    try:
        return await engine.run_call(
            target, connect_timeout_s=media.connect_timeout_s, connect_max_s=max(media.connect_timeout_s, end_by - time.monotonic()), hold=hold
        )
    except ProbeError as exc:
        return engine.CallResult(endpoint.url.transport, False, None, "not started", reason=exc.reason, error=str(exc))


async def _finish_call(task: asyncio.Task, end_by: float) -> "CallResult | None":
    """The call's result once probing is done: it may still be connecting (bounded by ``end_by``)."""
    done, _ = await asyncio.wait([task], timeout=max(0.1, end_by - time.monotonic()))
    if not done or task.cancelled():
        return None
    exc = task.exception()
    if exc is not None:
        from .engine import CallResult

        return CallResult("?", False, None, "error", reason="protocol", error=f"{type(exc).__name__}: {exc}")
    return task.result()


async def _settle(tasks) -> None:
    """Let the unused pre-checks finish their release briefly, then cancel the rest
    (a cancelled one is freed by the server when its 60 s lifetime ends)."""
    pending = [t for t in tasks if not t.done()]
    if pending:
        _, still = await asyncio.wait(pending, timeout=SETTLE_S)
        for task in still:
            task.cancel()
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()


def _target(endpoint, address: str | None, ice: IceSettings) -> "RelayTarget":
    from .engine import RelayTarget

    url = endpoint.url
    tls = url.transport == "tls"
    return RelayTarget(
        url=url.url,
        transport=url.transport,
        # the address the allocation used (no second lookup); TLS keeps the name to verify
        host=url.host if tls else (address or url.host),
        port=url.port,
        username=endpoint.username or "",
        password=endpoint.credential.reveal() if endpoint.credential is not None else "",
        ssl_context=tls_context(ice.ca_file) if tls else None,
    )


def _fallback_ready(prechecks: dict[str, asyncio.Future]) -> tuple[str, float] | None:
    """The TCP or TLS relay that allocated fastest in the pre-checks: (transport, alloc_ms), or None."""
    ready = []
    for transport, task in prechecks.items():
        if task.done() and not task.cancelled() and task.exception() is None:
            allocation: Allocation = task.result()
            if allocation.ok and allocation.alloc_ms is not None:
                ready.append((allocation.alloc_ms, transport))
    if not ready:
        return None
    alloc_ms, transport = min(ready)
    return transport, alloc_ms


def _udp_seen(udp: _Attempt) -> dict[str, Any]:
    """What UDP showed before media fell back: the allocation's outcome and any packets."""
    seen = {k: udp.row.get(k) for k in ("ok", "reason", "error", "alloc_ms", "setup_ms") if udp.row.get(k) is not None or k == "ok"}
    if udp.run is not None:
        seen.update(relay_echo.summary_of(udp.run))
    return seen


def _blocked(attempts: list[dict[str, Any]], not_configured: list[str], udp_seen: dict[str, Any] | None = None) -> Outcome:
    reasons = {a["reason"] for a in attempts}
    if reasons == {"auth"}:
        summary = "the TURN server rejected the username or credential (401) on every transport: no media"
    else:
        summary = "no relay carried media (" + "; ".join(f"{a['transport'].upper()}: {a['reason']}" for a in attempts) + ")"
    details = {
        "transport": None,
        "attempts": attempts,
        "not_configured": not_configured,
        "reason": reasons.pop() if len(reasons) == 1 else "several",
    }
    if udp_seen is not None:
        details["udp"] = udp_seen
    return Outcome.failed(summary, details=details)


# -- figures ------------------------------------------------------------------------------------


def measured_outcome(
    run: EchoRun,
    call: "CallResult | None",
    attempts: list[dict[str, Any]],
    media: MediaSettings,
    *,
    not_configured: list[str] = (),
    udp: dict[str, Any] | None = None,
    fallback: tuple[str, float] | None = None,
    jitter_limit_ms: float = DEFAULT_JITTER_THRESHOLD_MS,
) -> Outcome:
    """Metrics, details and status from one transport's packet run and call (pure: no I/O).

    ``fallback``: the TCP/TLS relay that also allocated, and in how many ms (for
    :func:`relay_race`). ``jitter_limit_ms``: ``[thresholds] jitter_ms``; jitter above it warns."""
    records = run.records
    decision = run.decision
    loss = decision.lost / decision.tried if decision.tried else 0.0
    # delay and jitter from legs read on time (a stalled event loop is this process, not the network)
    arrived = [r for r in records if r.forward_ms is not None]  # not empty: a run that carried nothing is not measured
    timed = [r for r in arrived if not r.stalled] or arrived  # a PC busy all along: every leg was read late
    transits = [t for r in timed for t in (r.forward_ms, r.back_ms) if t is not None]
    echoes = [r.forward_ms + r.back_ms for r in timed if r.forward_ms is not None and r.back_ms is not None]
    rtt_median = statistics.median(transits)
    jitter = stream_jitter(timed)
    quality = e_model(rtt_median, jitter, loss * 100.0)
    burst = max_burst(records)
    sent = len(records)
    directions = _direction_loss(run)
    low, high = decision.interval
    metrics = {
        "rtt_ms": round(rtt_median, 2),
        "rtt_p95_ms": round(percentile(transits, 95), 2),
        "rtt_max_ms": round(max(transits), 2),
        "jitter_ms": round(jitter, 2),
        "loss_pct": round(loss * 100.0, 2),
        # each leg crosses the agent's network once up and once down: not separable here
        "upstream_loss_pct": None,
        "downstream_loss_pct": None,
        "max_loss_burst": burst,
        "mos": round(quality.mos, 2),
        "r_factor": round(quality.r_factor, 1),
    }
    details: dict[str, Any] = {
        "transport": run.transport,
        "server": run.url,
        "attempts": attempts,
        "not_configured": list(not_configured),
        "loss_ci95_pct": [round(low * 100.0, 2), round(high * 100.0, 2)],
        "legs_tried": decision.tried,
        "legs_lost": decision.lost,
        "probes_sent": sent,
        "probes_received": sum(1 for r in records if r.forward_ms is not None),
        "loss_decision": {
            "threshold_pct": round(decision.threshold * 100.0, 3),
            "side": decision.side,
            "confidence": 0.95,
            "bound_pct": None if decision.bound is None else round(decision.bound * 100.0, 2),
            "stopped": run.stopped,
        },
        "raw_loss_pct": round(100.0 * sum(1 for r in records if r.back_ms is None) / sent, 2) if sent else None,
        "two_peer_loss_pct": directions,
        "interval_ms": media.interval_ms,
        "streams": run.streams,
        "setup_ms": round(run.setup_ms, 1),
        "probing_ms": round(run.probing_ms, 1),
        "stalled_probes": sum(1 for r in records if r.stalled),
        "jitter_running_ms": round(running_jitter(timed), 2),
        "jitter_limit_ms": jitter_limit_ms,
        "echo_rtt_ms": None
        if not echoes
        else {"median": round(statistics.median(echoes), 2), "p95": round(percentile(echoes, 95), 2), "max": round(max(echoes), 2)},
        "direction_note": "each leg through the relay crosses the agent's network once up and once down, "
        "so upstream and downstream loss cannot be told apart; loss_pct is the round trip",
        "connect_ms": None if call is None or call.connect_ms is None else round(call.connect_ms, 1),
        "call": _call_details(call),
        "audio": {"a_to_b": _audio(call.audio_a_to_b if call else None), "b_to_a": _audio(call.audio_b_to_a if call else None)},
        "series": thin_series(records),
    }
    if udp is not None:
        details["udp"] = udp
    race = relay_race(loss, decision.interval, rtt_median, fallback) if run.transport == "udp" else None
    if race is not None:
        details["relay_race"] = race
    if run.stopped in ("closed", "deadline"):
        details["ended_early"] = run.stopped
    side = {"below": f"below {decision.threshold * 100:g}%", "above": f"above {decision.threshold * 100:g}%"}.get(decision.side)
    sureness = f"; {side}, 95% sure" if side else ""
    loss_text = f"loss {loss * 100:.1f}% (95% CI {low * 100:.1f}-{high * 100:.1f}%, {decision.tried} packets{sureness})"
    if run.transport != "udp":
        loss_text = f"loss {loss * 100:.1f}% over {run.transport.upper()} (retransmitted: losses show as delay)"
    below_fail = quality.mos < media.fail_mos
    mos_text = f"MOS {quality.mos:.2f}" + (f" (below {media.fail_mos:g})" if below_fail else "")
    jittery = run.transport == "udp" and jitter > jitter_limit_ms  # over TCP, retransmissions make the jitter
    jitter_text = f"jitter {jitter:.1f} ms" + (f" (above {jitter_limit_ms:g} ms)" if jittery else "")
    summary = f"media over {run.transport.upper()}: rtt {_short(rtt_median)} ms, {jitter_text}, {loss_text}, {mos_text}"
    if udp is not None:
        summary = f"UDP relay failed ({_udp_reason(udp)}); " + summary
    if race is not None and race["tcp_chance_pct"] >= RACE_NOTE_PCT:
        low_pct, high_pct = race["tcp_chance_ci95_pct"]
        summary += (
            f"; a relayed softphone call would go over {race['fallback'].upper()} in ~{race['tcp_chance_pct']:.0f}% of calls "
            f"(95% CI {low_pct:.0f}-{high_pct:.0f}%: a lost UDP allocation request loses the race to {race['fallback'].upper()})"
        )
    call_failed = call is None or not call.connected
    if call_failed:
        summary += "; the call did not connect" + (f" ({call.reason}: {call.error})" if call is not None and call.error else " in time")
    if below_fail:
        return Outcome.failed(summary, metrics=metrics, details=details)
    if run.transport != "udp" or quality.mos < media.warn_mos or jittery or call_failed or run.stopped in ("closed", "deadline"):
        return Outcome.warned(summary, metrics=metrics, details=details)
    return Outcome.passed(summary, metrics=metrics, details=details)


def relay_race(loss: float, interval: tuple[float, float], rtt_ms: float, fallback: tuple[str, float] | None) -> dict[str, Any] | None:
    """How often a softphone relaying its media would end on the TCP/TLS relay instead of
    the UDP one measured here (:func:`.quality.udp_relay_race_lost`), with the interval
    that the loss interval gives. None when no TCP/TLS relay allocated (nothing to race)."""
    if fallback is None:
        return None
    transport, alloc_ms = fallback
    # the TCP path is connected once allocated and a check has crossed the relay and back
    ready_ms = alloc_ms + 2.0 * rtt_ms

    def chance(value: float) -> float:
        return udp_relay_race_lost(min(1.0, max(0.0, value)), udp_rtt_ms=rtt_ms, tcp_ready_ms=ready_ms)

    low, high = interval
    return {
        "tcp_chance_pct": round(chance(loss) * 100.0, 1),
        "tcp_chance_ci95_pct": [round(chance(low) * 100.0, 1), round(chance(high) * 100.0, 1)],
        "fallback": transport,
        "fallback_ready_ms": round(ready_ms, 1),
        "note": "the share of relayed softphone calls (Force TURN, or no direct path to the media edge) that would end on "
        f"the {transport.upper()} relay: libwebrtc keeps the first relay path that connects and discards a UDP relay "
        "allocated after it; a lost allocation request is retransmitted only after 250 ms",
    }


def _udp_reason(udp: dict[str, Any]) -> str:
    if udp.get("legs_tried"):
        return f"{udp.get('reason')}: {udp.get('legs_lost')} of {udp.get('legs_tried')} packets lost"
    return str(udp.get("reason"))


def _call_details(call: "CallResult | None") -> dict[str, Any]:
    if call is None:
        return {"connected": False, "reason": "timeout", "error": "the call was still connecting at the check's deadline"}
    out = {"connected": call.connected, "connect_ms": None if call.connect_ms is None else round(call.connect_ms, 1), "state": call.state}
    if not call.connected:
        out.update(reason=call.reason, error=call.error)
    return out


def leg_streams(records) -> list[list[float]]:
    """Transit times per leg stream (each stream's first legs, and its echo legs), in send
    order: each is one packet every interval, like one RTP stream."""
    streams: dict[tuple[int, str], list[float]] = {}
    for r in records:
        if r.forward_ms is not None:
            streams.setdefault((r.stream, "forward"), []).append(r.forward_ms)
        if r.back_ms is not None:
            streams.setdefault((r.stream, "back"), []).append(r.back_ms)
    return list(streams.values())


def stream_jitter(records) -> float:
    """RFC 3550 jitter of the leg streams: the mean |D| of consecutive legs of each stream,
    over every stream (:func:`.quality.mean_jitter`, not the running estimate that starts at 0)."""
    value = mean_jitter(leg_streams(records))
    return 0.0 if value is None else value


def running_jitter(records) -> float:
    """RFC 3550's running estimate (J += (|D| - J)/16, from 0) per leg stream, averaged: kept in
    ``details.jitter_running_ms`` beside ``jitter_ms`` (on a short run it reads low)."""
    values = [interarrival_jitter(transits) for transits in leg_streams(records) if len(transits) > 1]
    return statistics.fmean(values) if values else 0.0


def max_burst(records) -> int:
    """The longest run of consecutive first legs lost within one stream (what concealment must bridge)."""
    longest = 0
    runs: dict[int, int] = {}
    for r in records:  # in send order, so each stream's sequence order
        runs[r.stream] = runs.get(r.stream, 0) + 1 if r.forward_ms is None else 0
        longest = max(longest, runs[r.stream])
    return longest


def _direction_loss(run: EchoRun) -> dict[str, float | None]:
    """Loss of legs A→B and B→A (A's first legs and B's echoes; B's first legs and A's echoes)."""
    counts = {"a_to_b": [0, 0], "b_to_a": [0, 0]}
    for r in run.records:
        first, echo = ("a_to_b", "b_to_a") if r.stream < run.streams else ("b_to_a", "a_to_b")
        counts[first][1] += 1
        counts[first][0] += r.forward_ms is None
        if r.forward_ms is not None:
            counts[echo][1] += 1
            counts[echo][0] += r.back_ms is None
    return {k: round(100.0 * lost / tried, 2) if tried else None for k, (lost, tried) in counts.items()}


def _short(ms: float) -> str:
    """Whole milliseconds, or one decimal below 10 ms (a LAN path is not "0 ms")."""
    return f"{ms:.1f}" if ms < 10 else f"{ms:.0f}"


def _audio(flow: "AudioFlow | None") -> dict[str, Any] | None:
    if flow is None:
        return None
    return {
        "frames_received": flow.frames_received,
        "peak_level": flow.peak_level,
        "packets_sent": flow.packets_sent,
        "packets_lost": flow.packets_lost,
        "rtcp_rtt_ms": flow.rtcp_rtt_ms,
        "rtcp_jitter_ms": flow.rtcp_jitter_ms,
    }


def thin_series(records, max_points: int = SERIES_MAX_POINTS) -> list[dict[str, Any]]:
    """``[{t_ms, rtt_ms | None}]`` for charts, at most ``max_points``, in send order.

    One point per probe when they fit; otherwise consecutive probes are grouped and each
    point carries the group's worst leg transit (None when every leg was lost) and ``lost``
    (legs lost in the group).
    """
    if not records:
        return []
    size = -(-len(records) // max_points)  # ceiling division
    points = []
    for start in range(0, len(records), size):
        group = records[start : start + size]
        transits = [t for r in group for t in (r.forward_ms, r.back_ms) if t is not None]
        lost = sum(1 for r in group if r.forward_ms is None) + sum(1 for r in group if r.forward_ms is not None and r.back_ms is None)
        point: dict[str, Any] = {"t_ms": round(group[0].sent_s * 1000.0, 1), "rtt_ms": round(max(transits), 2) if transits else None}
        if size > 1 or lost:
            point["lost"] = lost
        points.append(point)
    return points
