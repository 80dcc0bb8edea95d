"""Rule about the PC itself: audio falls to 0 while nothing is lost, under memory/CPU pressure.

Code: ``host.resource_exhaustion`` (seed 000 scenario C). The symptom comes from the
call's ``genesys.webrtc_diagnostics`` (``audioLevel`` 0 while ``packetsLost`` does not
rise); the cause from this PC's host samples over the same minutes (the daemon's local
timeline). Without that history the rule says so, as an ``info`` verdict, instead of
guessing.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Mapping

from agentd import hookimpl
from agentd.correlation import Findings
from agentd.model import Evidence, Severity, Status, Verdict

from .base import (
    Thresholds,
    isoformat_short,
    items,
    number,
    ok_evidence,
    ref_check,
    ref_evidence,
    sorted_by_time,
    thresholds_of,
    timeline_host_samples,
    timeline_refs,
    verdict,
)


@hookimpl
def agentd_correlate(findings: Findings) -> list[Verdict]:
    limits = thresholds_of(findings)
    found = resource_exhaustion(findings, limits)
    now = pressure_now(findings, limits)
    if found is not None and now is not None:  # one finding about the PC, with both
        return [replace(found, evidence=tuple(dict.fromkeys((*found.evidence, *now.evidence))))]
    return [v for v in (found, now) if v is not None]


# The runner's words for a check that ran out of time (agentd/runner.py).
OUT_OF_TIME = ("timed out after", "not finished within")


def pressure_now(findings: Findings, limits: Thresholds) -> Verdict | None:
    """The ``host`` check saw the PC under pressure while it ran (a pre-shift check): calls
    from it may stutter now. Checks that ran out of time meanwhile are named with it, since
    a starved PC is a likely reason they did not finish."""
    host = findings.check("host")
    if host is None or host.status is not Status.WARN:
        return None
    found = pressure(host.metrics, limits) or [host.summary.split(";")[0]]
    starved = [
        c for c in findings.report.checks
        if c.status is Status.ERROR and c.id != host.id and any(w in c.summary for w in OUT_OF_TIME)
    ]
    cpu = number(host.metrics.get("cpu_pct"))
    busy = cpu is not None and cpu > limits.cpu_pct
    also = f"; {', '.join(c.id for c in starved)} ran out of time meanwhile, likely for the same reason" if starved and busy else ""
    return verdict(
        "host.resource_exhaustion",
        Severity.WARNING,
        0.6,
        f"The PC is under pressure right now ({', '.join(found)}): the softphone's audio may stutter or drop{also}.",
        "Close heavy applications and browser tabs (or wait for an update or scan to finish), then re-run "
        "`agentd check`; if it recurs at every shift start, the PC needs more memory or CPU.",
        [ref_check(host), *(ref_check(c) for c in starved if busy)],
        limits.pick("cpu_pct", "mem_used_pct", "memory_pressure_avg10"),
    )


def silent_audio(item: Evidence) -> list[datetime]:
    """Moments the call's audio level was 0 while the lost-packet counter stood still,
    provided the audio was above 0 at some point (a call muted from the start is not this)."""
    zeros: list[datetime] = []
    heard = False
    previous_lost: float | None = None
    for at, stat in sorted_by_time(items(item.data.get("rtc_stats"))):
        level = number(stat.get("audioLevel"))
        lost = number(stat.get("packetsLost"))
        rose = lost is not None and previous_lost is not None and lost > previous_lost
        if lost is not None:
            previous_lost = lost if previous_lost is None else max(previous_lost, lost)
        if level is None:
            continue
        if level > 0:
            heard = True
        elif not rose:
            zeros.append(at)
    return zeros if heard else []


def pressure(sample: Mapping, limits: Thresholds) -> list[str]:
    """What in one host sample is beyond its limit, in words."""
    found = []
    cpu, mem, psi = number(sample.get("cpu_pct")), number(sample.get("mem_used_pct")), number(sample.get("memory_pressure_avg10"))
    if cpu is not None and cpu > limits.cpu_pct:
        found.append(f"CPU {cpu:.0f}%")
    if mem is not None and mem > limits.mem_used_pct:
        found.append(f"memory {mem:.0f}% used")
    if psi is not None and psi > limits.memory_pressure_avg10:
        found.append(f"memory pressure {psi:.0f}%")
    return found


def resource_exhaustion(findings: Findings, limits: Thresholds) -> Verdict | None:
    for item in ok_evidence(findings, "genesys.webrtc_diagnostics"):
        zeros = silent_audio(item)
        if zeros:
            break
    else:
        return None
    margin = timedelta(seconds=limits.host_margin_s)
    start, end = zeros[0] - margin, zeros[-1] + margin
    used = limits.pick("cpu_pct", "mem_used_pct", "memory_pressure_avg10", "host_margin_s")
    symptom = f"the call's audio level fell to 0 {len(zeros)} time(s) ({isoformat_short(zeros[0])} to {isoformat_short(zeros[-1])}) while no packets were lost"
    samples = timeline_host_samples(findings, start, end)
    if not samples:
        return verdict(
            "host.resource_exhaustion",
            Severity.INFO,
            0.3,
            f"Possibly the PC itself: {symptom}, but this machine has no local host history for those minutes, "
            "so memory or CPU pressure can be neither confirmed nor ruled out.",
            "Keep the agentd daemon running (`agentd run` / the service) so the next incident has host history; "
            "meanwhile ask the agent whether the PC was slow or the browser had many tabs open.",
            [ref_evidence(item)],
            used | {"local_history": "missing"},
        )
    strained = [(s, pressure(s, limits)) for s in samples]
    strained = [(s, p) for s, p in strained if p]
    if not strained:
        return None  # the PC was fine then: the silence has another cause (a muted device, the OS)
    worst = max(strained, key=lambda pair: len(pair[1]))
    return verdict(
        "host.resource_exhaustion",
        Severity.WARNING,
        0.85,
        f"The PC ran out of resources during the call: {symptom}, and in the same minutes "
        f"{len(strained)} of {len(samples)} host samples showed pressure (worst: {', '.join(worst[1])} at {worst[0].get('at')}).",
        "Close other heavy applications and browser tabs, check the browser's memory use, and if it recurs "
        "give the PC more memory; a restart of the browser frees it at once.",
        [ref_evidence(item), *timeline_refs(findings)],
        used,
    )
