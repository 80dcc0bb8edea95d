"""What every rule family shares: thresholds, reading the findings vocabulary, time windows.

Rules read only the fields documented in ``plugins/FINDINGS.md``. A field that is missing
or of the wrong type reads as "not known" (None), never as zero: a rule that lacks its
inputs stays silent instead of guessing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Iterator, Mapping, Sequence

from agentd.correlation import Findings
from agentd.errors import ConfigError
from agentd.model import CheckResult, Evidence, Severity, Status, Verdict, parse_time


@dataclass(frozen=True)
class Thresholds:
    """``[thresholds]``: where a figure turns into a finding. Defaults are the field's own."""

    loss_pct: float = field(default=1.0, metadata={"help": "packet loss above this % is a problem", "min": 0, "max": 100})
    jitter_ms: float = field(default=30.0, metadata={"help": "jitter above this is a problem", "min": 0})
    rtt_ms: float = field(default=150.0, metadata={"help": "round-trip time above this is a problem", "min": 0})
    mos: float = field(default=3.5, metadata={"help": "MOS below this is unacceptable (Genesys' own line)", "min": 1, "max": 5})
    cpu_pct: float = field(default=90.0, metadata={"help": "host CPU use above this is pressure", "min": 1, "max": 100})
    mem_used_pct: float = field(default=90.0, metadata={"help": "host memory use above this is pressure", "min": 1, "max": 100})
    memory_pressure_avg10: float = field(
        default=10.0, metadata={"help": "Linux PSI memory 'some avg10' above this is pressure", "min": 0, "max": 100}
    )
    heartbeat_gap_s: float = field(
        default=65.0, metadata={"help": "a WebSocket heartbeat gap above this is a missed keepalive (Genesys sends one every 30 s)", "min": 1}
    )
    host_margin_s: float = field(
        default=60.0, metadata={"help": "how far around a call's window host samples still count", "min": 0, "max": 3600}
    )

    def pick(self, *names: str) -> dict[str, float]:
        """The thresholds a verdict used, for its ``thresholds`` field."""
        values = asdict(self)
        return {name: values[name] for name in names}


def thresholds_of(findings: Findings) -> Thresholds:
    """The configured thresholds; the defaults when the ``rules-thresholds`` plugin is disabled."""
    try:
        value = findings.config.section("thresholds")
    except ConfigError:
        return Thresholds()
    return value if isinstance(value, Thresholds) else Thresholds()


# -- reading the vocabulary -------------------------------------------------------------


def number(value: Any) -> float | None:
    """A finite number, or None (bools and strings are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if value == value and value not in (float("inf"), float("-inf")) else None


def metric(check: CheckResult | None, name: str) -> float | None:
    return number(check.metrics.get(name)) if check is not None else None


def items(value: Any) -> list[Mapping[str, Any]]:
    """A list of mappings from a details field; anything else reads as empty."""
    if not isinstance(value, (list, tuple)):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def ran(check: CheckResult | None) -> bool:
    """The check produced an answer about the network (not skipped, not errored)."""
    return check is not None and check.status in (Status.PASS, Status.WARN, Status.FAIL)


def failed(check: CheckResult | None) -> bool:
    return check is not None and check.status is Status.FAIL


def passed(check: CheckResult | None) -> bool:
    return check is not None and check.status in (Status.PASS, Status.WARN)


def reason(check: CheckResult | None) -> str | None:
    value = check.details.get("reason") if check is not None else None
    return value if isinstance(value, str) else None


def ok_evidence(findings: Findings, kind: str) -> Iterator[Evidence]:
    """Evidence items of ``kind`` that carry figures (status ``ok``)."""
    for item in findings.evidence(kind=kind):
        if item.status == "ok":
            yield item


def ref_check(check: CheckResult) -> str:
    return f"check:{check.id}"


def ref_evidence(item: Evidence) -> str:
    return f"evidence:{item.id}"


def verdict(
    code: str,
    severity: Severity,
    confidence: float,
    summary: str,
    next_step: str,
    evidence: Iterable[str],
    thresholds: Mapping[str, Any] | None = None,
) -> Verdict:
    refs = tuple(dict.fromkeys(evidence))  # keep order, drop repeats
    return Verdict(
        code=code,
        severity=severity,
        confidence=max(0.0, min(1.0, confidence)),
        summary=summary,
        next_step=next_step,
        evidence=refs,
        thresholds=dict(thresholds or {}),
    )


# -- time ------------------------------------------------------------------------------


def moment(value: Any) -> datetime | None:
    """An aware datetime from ISO-8601 text, a datetime, or epoch seconds; None otherwise."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str) and value:
        try:
            return parse_time(value)
        except ValueError:
            return None
    seconds = number(value)
    if seconds is not None:
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    return None


def call_window(findings: Findings) -> tuple[datetime, datetime, list[str]] | None:
    """The call's window from server evidence: (start, end, references it came from).

    The conversation's own ``startTime``/``endTime`` first, then any call-quality or
    diagnostics item's window. None when the server said nothing about when.
    """
    for kind in ("genesys.conversation", "genesys.call_quality", "genesys.webrtc_diagnostics"):
        for item in ok_evidence(findings, kind):
            start = moment(item.data.get("startTime")) or moment(item.window_start)
            end = moment(item.data.get("endTime")) or moment(item.window_end)
            if start is not None:
                return start, end or start + timedelta(hours=1), [ref_evidence(item)]
    return None


def sorted_by_time(entries: Sequence[Mapping[str, Any]], key: str = "timestamp") -> list[tuple[datetime, Mapping[str, Any]]]:
    timed = [(moment(entry.get(key)), entry) for entry in entries]
    return sorted(((at, entry) for at, entry in timed if at is not None), key=lambda pair: pair[0])


TIMELINE_KIND = "local.timeline"


def _timeline_item(findings: Findings) -> Evidence | None:
    return next(ok_evidence(findings, TIMELINE_KIND), None)


def timeline_refs(findings: Findings) -> list[str]:
    """The reference to the local history attached to the report, when there is one."""
    item = _timeline_item(findings)
    return [ref_evidence(item)] if item is not None else []


def _within(entries: Any, start: datetime, end: datetime) -> list[Mapping[str, Any]]:
    kept = []
    for entry in items(entries):
        at = moment(entry.get("at"))
        if at is not None and start <= at <= end:
            kept.append(entry)
    return kept


def timeline_host_samples(findings: Findings, start: datetime, end: datetime) -> list[Mapping[str, Any]] | None:
    """Host samples this machine kept for [start, end]; None when it has no history.

    From the daemon's live timeline when correlation runs beside it, else from the
    ``local.timeline`` evidence a report carries (so a stored report correlates the same).
    """
    timeline = findings.timeline
    if timeline is not None:
        try:
            return [s for s in timeline.host_samples(start, end) if isinstance(s, Mapping)]
        except Exception:  # a broken history is "no history", not a crashed rule
            return None
    item = _timeline_item(findings)
    return _within(item.data.get("host_samples"), start, end) if item is not None else None


def timeline_events(findings: Findings, start: datetime, end: datetime, kinds: Sequence[str]) -> list[Mapping[str, Any]] | None:
    timeline = findings.timeline
    if timeline is not None:
        try:
            return [e for e in timeline.events(start, end, kinds=list(kinds)) if isinstance(e, Mapping)]
        except Exception:
            return None
    item = _timeline_item(findings)
    if item is None:
        return None
    return [e for e in _within(item.data.get("events"), start, end) if e.get("kind") in kinds]


def fmt(value: float | None, unit: str = "", digits: int = 0) -> str:
    if value is None:
        return "?"
    return f"{value:.{digits}f}{unit}"


def isoformat_short(at: datetime) -> str:
    """``HH:MM:SSZ`` for summaries (the full times are in the evidence)."""
    return at.astimezone(timezone.utc).strftime("%H:%M:%SZ")
