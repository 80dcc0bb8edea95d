"""Rule ``network.bufferbloat``: the line adds delay under load that would break calls.

Reads the ``path.load`` check (plugins/FINDINGS.md): its metrics ``added_delay_ms``,
``idle_rtt_ms``, ``idle_mos``, ``loaded_mos``, ``loaded_effective_ms`` and ``details.grade``.
It fires when the load makes the difference for a call by the project's E-model
(``measure.breaks_calls``): MOS under load below ``[thresholds] mos`` while the idle line
was above it, or the effective latency pushed past the E-model's knee (160 ms), with at
least 30 ms added (grade B or worse). Silent when the load ended at its byte caps before
the queues' ramp (``details.ended_before_ramp``): the line was not held long enough for a
queue to count, and what the probes saw is mostly the PC moving the caps. Pure: no I/O.
"""

from __future__ import annotations

from agentd.errors import ConfigError
from agentd.model import Severity, Status, Verdict

from .measure import EMODEL_KNEE_MS, breaks_calls

CODE = "network.bufferbloat"
DEFAULT_MOS_LIMIT = 3.5


def mos_limit_of(config) -> float:
    """``[thresholds] mos`` (the rules' shared line), 3.5 when that section is not loaded."""
    try:
        value = getattr(config.section("thresholds"), "mos", None)
    except ConfigError:
        return DEFAULT_MOS_LIMIT
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else DEFAULT_MOS_LIMIT


def _num(metrics, name: str) -> float | None:
    value = metrics.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def bufferbloat_verdicts(findings) -> list[Verdict]:
    check = findings.check("path.load")
    if check is None or check.status not in (Status.PASS, Status.WARN) or check.details.get("ended_before_ramp") is True:
        return []  # a load that ended at its caps before the ramp held the line too briefly to judge
    m = check.metrics
    figures = [_num(m, k) for k in ("added_delay_ms", "idle_rtt_ms", "idle_mos", "loaded_mos", "loaded_effective_ms")]
    if any(v is None for v in figures):
        return []
    added, idle_rtt, idle_mos, loaded_mos, effective = figures
    limit = mos_limit_of(findings.config)
    why = breaks_calls(added, idle_rtt, idle_mos, loaded_mos, effective, limit)
    if why is None:
        return []
    grade = check.details.get("grade") if isinstance(check.details.get("grade"), str) else "?"
    p90 = _num(m, "added_delay_p90_ms")
    rpm = _num(m, "rpm")
    probe = check.details.get("probe") or "the media edge"
    effect = (
        f"a call's MOS would fall from {idle_mos:.2f} to {loaded_mos:.2f} (below {limit:g})"
        if why == "mos"
        else f"a call's delay would pass the E-model's knee ({effective:.0f} ms effective, {EMODEL_KNEE_MS:.0f} ms is where delay is heard; MOS {loaded_mos:.2f})"
    )
    summary = (
        f"Bufferbloat (grade {grade}): while the line is busy (an upload, a backup, a video) it adds {added:.0f} ms"
        + (f" (p90 {p90:.0f} ms)" if p90 is not None else "")
        + f" to round trips to {probe}"
        + (f", {rpm:.0f} RPM" if rpm is not None else "")
        + f": {effect}."
    )
    return [
        Verdict(
            code=CODE,
            severity=Severity.CRITICAL if why == "mos" else Severity.WARNING,
            confidence=0.8,
            summary=summary,
            next_step=(
                "Turn on SQM / smart queue management on the home router (often 'Smart Queue', 'QoS' with "
                "fq_codel or CAKE, set a little below the line's real speeds); until then, keep big uploads and "
                "cloud backups, video uploads and downloads off the line during calls. If the router cannot, "
                "ask the ISP for a modem/router with queue management."
            ),
            evidence=(f"check:{check.id}",),
            thresholds={"mos": limit, "emodel_knee_ms": EMODEL_KNEE_MS, "min_added_ms": 30.0},
        )
    ]
