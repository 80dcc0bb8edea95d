"""The report: what one run found, as frozen dataclasses with a versioned JSON form.

The JSON contract is ``agentd.report/1`` (see DESIGN.md). Changes are additive only:
new optional fields may appear, existing ones keep their name and meaning. ``from_dict``
ignores fields it does not know, so an older agentd can read a newer report.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any, Iterable, Mapping

SCHEMA = "agentd.report/1"

_SURROGATE = re.compile("[\ud800-\udfff]")


def _surrogate_text(code: int) -> str:
    # U+DC80..U+DCFF: a byte that was not UTF-8, kept by Python's surrogateescape
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def escape_undecodable(text: str) -> str:
    """``text`` with the bytes the OS gave that were not UTF-8 (a non-UTF-8 hostname,
    read back by Python as lone surrogates) written as ``\\xNN``: printable, storable
    in JSON and sendable, instead of failing every encoder downstream."""
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return _SURROGATE.sub(lambda m: _surrogate_text(ord(m.group())), text)


class Status(StrEnum):
    """How a check ended. Only ``fail`` and ``error`` make a PC not ready."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"

    @property
    def blocks_readiness(self) -> bool:
        return self in (Status.FAIL, Status.ERROR)


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def isoformat(moment: datetime) -> str:
    """ISO-8601 in UTC with milliseconds and a ``Z``, the form Genesys Cloud uses too."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """Parse ISO-8601 (``Z`` or offset); naive times are taken as UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _plain(value: Any) -> Any:
    """Make ``value`` JSON-safe: tuples become lists, NaN/inf become None, times ISO strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, StrEnum):
        return str(value)
    return value


def _known(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass(frozen=True)
class CheckResult:
    """One local check as it ended.

    ``metrics`` hold numbers whose names carry their unit (``rtt_ms``, ``loss_pct``);
    ``details`` anything a person or a correlation rule may need to see why.
    """

    id: str
    status: Status
    summary: str
    duration_ms: float = 0.0
    metrics: dict[str, float | int | None] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    title: str = ""
    started: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "status": str(self.status),
            "summary": self.summary,
            "duration_ms": self.duration_ms,
            "started": self.started,
            "metrics": _plain(self.metrics),
            "details": _plain(self.details),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckResult:
        known = _known(cls, data)
        known["status"] = Status(known["status"])
        known["metrics"] = dict(known.get("metrics") or {})
        known["details"] = dict(known.get("details") or {})
        return cls(**known)


@dataclass(frozen=True)
class Evidence:
    """One item of evidence from a source outside the local probes (mostly Genesys Cloud).

    ``status`` is ``ok`` (figures in ``data``), ``skipped`` (source not available here,
    for example a 404 on an optional endpoint) or ``error`` (the source failed: ``summary``
    says how). ``window_start``/``window_end`` bound the time the figures describe.
    """

    id: str
    source: str
    kind: str
    summary: str
    status: str = "ok"
    window_start: str | None = None
    window_end: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "kind": self.kind,
            "status": self.status,
            "summary": self.summary,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "data": _plain(self.data),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evidence:
        known = _known(cls, data)
        known["data"] = dict(known.get("data") or {})
        return cls(**known)


@dataclass(frozen=True)
class Verdict:
    """A named cause with the evidence it rests on.

    ``code`` is from the closed vocabulary in DESIGN.md. ``evidence`` holds references:
    ``check:<check id>`` or ``evidence:<evidence id>``.
    """

    code: str
    severity: Severity
    confidence: float
    summary: str
    evidence: tuple[str, ...] = ()
    next_step: str = ""
    thresholds: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": str(self.severity),
            "confidence": self.confidence,
            "summary": self.summary,
            "next_step": self.next_step,
            "thresholds": _plain(self.thresholds),
            "evidence": list(self.evidence),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        known = _known(cls, data)
        known["severity"] = Severity(known["severity"])
        known["evidence"] = tuple(known.get("evidence") or ())
        known["thresholds"] = dict(known.get("thresholds") or {})
        return cls(**known)


@dataclass(frozen=True)
class AgentInfo:
    """The PC the report is about."""

    hostname: str
    install_id: str
    version: str
    platform: str
    python: str
    user: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "hostname": self.hostname,
            "install_id": self.install_id,
            "version": self.version,
            "platform": self.platform,
            "python": self.python,
            "user": self.user,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgentInfo:
        return cls(**_known(cls, data))


@dataclass(frozen=True)
class Report:
    """One run: checks, evidence and verdicts together (``agentd.report/1``)."""

    id: str
    created: str
    agent: AgentInfo
    profile: str
    checks: tuple[CheckResult, ...] = ()
    evidence: tuple[Evidence, ...] = ()
    verdicts: tuple[Verdict, ...] = ()
    conversation_id: str | None = None
    duration_ms: float = 0.0
    schema: str = SCHEMA

    @property
    def ready(self) -> bool:
        """Ready unless a check failed or errored. Derived, so it cannot disagree with the checks."""
        return not any(c.status.blocks_readiness for c in self.checks)

    def check(self, check_id: str) -> CheckResult | None:
        return next((c for c in self.checks if c.id == check_id), None)

    def with_verdicts(self, verdicts: Iterable[Verdict]) -> Report:
        return replace(self, verdicts=tuple(verdicts))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "id": self.id,
            "created": self.created,
            "profile": self.profile,
            "conversation_id": self.conversation_id,
            "agent": self.agent.to_dict(),
            "ready": self.ready,
            "duration_ms": self.duration_ms,
            "checks": [c.to_dict() for c in self.checks],
            "evidence": [e.to_dict() for e in self.evidence],
            "verdicts": [v.to_dict() for v in self.verdicts],
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        text = json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)
        if text.isascii() or not _SURROGATE.search(text):
            return text
        # a string some source read from the OS with undecodable bytes (lone surrogates):
        # escaped as \\xNN in the JSON text, so the report still encodes as UTF-8 and is kept
        return _SURROGATE.sub(lambda m: "\\" + _surrogate_text(ord(m.group())), text)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Report:
        schema = data.get("schema")
        if not isinstance(schema, str) or not schema.startswith("agentd.report/"):
            raise ValueError(f"not an agentd report (schema is {schema!r})")
        return cls(
            schema=schema,
            id=data["id"],
            created=data["created"],
            profile=data.get("profile", "unknown"),
            conversation_id=data.get("conversation_id"),
            agent=AgentInfo.from_dict(data["agent"]),
            duration_ms=float(data.get("duration_ms") or 0.0),
            checks=tuple(CheckResult.from_dict(c) for c in data.get("checks", ())),
            evidence=tuple(Evidence.from_dict(e) for e in data.get("evidence", ())),
            verdicts=tuple(Verdict.from_dict(v) for v in data.get("verdicts", ())),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Report:
        return cls.from_dict(json.loads(text))


def new_report_id() -> str:
    """Report ids sort by time (a UTC stamp) and never collide (a random suffix)."""
    return f"{utcnow().strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:12]}"
