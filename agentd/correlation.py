"""What correlation rules see."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from agentd.model import CheckResult, Evidence, Report, Severity, Status, Verdict

if TYPE_CHECKING:
    from agentd.config import Config


@dataclass(frozen=True)
class Findings:
    """Local check results and server-side evidence of one run, handed to
    ``agentd_correlate``. ``timeline`` is the daemon's local history (host samples,
    earlier probes, WebSocket drops) when this machine has one, else None."""

    report: Report
    config: Config
    timeline: Any | None = None

    def check(self, check_id: str) -> CheckResult | None:
        return self.report.check(check_id)

    def evidence(self, *, kind: str | None = None, source: str | None = None) -> Iterator[Evidence]:
        for item in self.report.evidence:
            if (kind is None or item.kind == kind) and (source is None or item.source == source):
                yield item


# The local history a report carries (evidence kind ``local.timeline``), so that the
# HTML report can chart the PC next to the call and a stored report correlates the same.
TIMELINE_EVIDENCE_KIND = "local.timeline"
TIMELINE_MARGIN_S = 300.0
TIMELINE_MAX_SAMPLES = 600
TIMELINE_SAMPLE_FIELDS = (
    "at", "cpu_pct", "load_1m", "mem_used_pct", "mem_available_mb", "swap_used_pct",
    "memory_pressure_avg10", "cpu_pressure_avg10", "browser_rss_mb", "interface", "wifi_signal_dbm",
)
TIMELINE_EVENT_KINDS = ("ws.drop", "ws.reconnect", "call.start", "call.end", "mute", "check.report")


def timeline_evidence(report: Report, timeline: Any) -> Evidence | None:
    """An excerpt of ``timeline`` around the time the report's evidence describes.

    The window is the span of the ``ok`` evidence items' windows that cover time (a call;
    not the moment a state was read), widened by
    ``TIMELINE_MARGIN_S`` each side; None when no evidence has a window (a readiness
    check), when the report already carries one, or when the timeline cannot be read.
    """
    from datetime import timedelta

    from agentd.model import isoformat, parse_time

    if timeline is None or any(e.kind == TIMELINE_EVIDENCE_KIND for e in report.evidence):
        return None
    bounds = []
    for item in report.evidence:
        if item.status != "ok" or not item.window_start or not item.window_end:
            continue
        try:
            span = parse_time(item.window_start), parse_time(item.window_end)
        except ValueError:
            continue
        if span[1] > span[0]:  # a span of time (a call), not the moment a state was read
            bounds.extend(span)
    if not bounds:
        return None
    start = min(bounds) - timedelta(seconds=TIMELINE_MARGIN_S)
    end = max(bounds) + timedelta(seconds=TIMELINE_MARGIN_S)
    try:
        samples = [
            {k: s[k] for k in TIMELINE_SAMPLE_FIELDS if k in s}
            for s in timeline.host_samples(start, end)
            if isinstance(s, dict)
        ]
        events = [e for e in timeline.events(start, end, kinds=list(TIMELINE_EVENT_KINDS)) if isinstance(e, dict)]
    except Exception as exc:  # a broken history must not cost the report
        return Evidence(
            id=TIMELINE_EVIDENCE_KIND, source="timeline", kind=TIMELINE_EVIDENCE_KIND, status="error",
            summary=f"the local timeline could not be read: {type(exc).__name__}: {exc}",
        )
    step = max(1, -(-len(samples) // TIMELINE_MAX_SAMPLES))  # thin evenly to the cap
    samples = samples[::step]
    return Evidence(
        id=TIMELINE_EVIDENCE_KIND,
        source="timeline",
        kind=TIMELINE_EVIDENCE_KIND,
        status="ok",
        summary=f"this PC's history over the same minutes: {len(samples)} host samples, {len(events)} events",
        window_start=isoformat(start),
        window_end=isoformat(end),
        data={"host_samples": samples, "events": events},
    )


# -- every bad check is named -----------------------------------------------------------------

UNEXPLAINED_CODE = "check.unexplained"
BAD_STATUSES = (Status.FAIL, Status.WARN, Status.ERROR)


def unexplained_checks(report: Report, verdicts: Iterable[Verdict]) -> list[CheckResult]:
    """Checks that ended ``fail``, ``warn`` or ``error`` and are in no verdict's evidence."""
    named = {ref for v in verdicts for ref in v.evidence}
    return [c for c in report.checks if c.status in BAD_STATUSES and f"check:{c.id}" not in named]


def unexplained_verdict(checks: Sequence[CheckResult]) -> Verdict | None:
    """The last word of correlation: checks no rule explained still reach helpdesk, under
    ``check.unexplained``, with their own summaries (a red row with no finding is a dead end)."""
    if not checks:
        return None
    rows = "; ".join(f"{c.id} {c.status}: {c.summary}" for c in checks)
    errors_only = all(c.status is Status.ERROR for c in checks)
    return Verdict(
        code=UNEXPLAINED_CODE,
        severity=Severity.WARNING if any(c.status is Status.FAIL for c in checks) else Severity.INFO,
        confidence=0.5,
        summary=f"No rule names a cause for {len(checks)} check(s) that did not pass ({rows}).",
        next_step=(
            "Re-run `agentd check` to see whether it repeats"
            + ("; a check that did not finish points at the PC (load) or agentd itself: send the report to IT." if errors_only
               else "; if it does, send this report to IT with the rows above: they are the evidence.")
        ),
        evidence=tuple(f"check:{c.id}" for c in checks),
    )
