"""What correlation rules see."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

from agentd.model import CheckResult, Evidence, Report

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
