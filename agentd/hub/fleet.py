"""Fleet correlation: rules over many PCs' reports, as pluggy hooks of the hub.

Same style as the PC's ``agentd_correlate``: a rule is pure and fast (no I/O); it gets a
:class:`FleetWindow` (the latest report of every PC within the window, summarized) and
returns :class:`FleetVerdict` objects. Hub plugins register under the entry-point group
``agentd.hub``; the built-in rule ``network.site_outage`` is below.
"""

from __future__ import annotations

import importlib.metadata
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

import pluggy
import structlog

from agentd.hub.store import network_of
from agentd.model import Severity, Verdict

log = structlog.get_logger("agentd.hub.fleet")

PROJECT = "agentd_hub"
ENTRY_POINT_GROUP = "agentd.hub"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclass(frozen=True)
class PcReport:
    """One PC's latest report in the window, as fleet rules read it."""

    install_id: str
    report_id: str
    hostname: str
    created_ts: float
    public_ip: str | None
    failed: frozenset[str]
    passed: frozenset[str]


@dataclass(frozen=True)
class FleetWindow:
    reports: tuple[PcReport, ...]
    window_s: float
    min_pcs: int = 2
    v4_prefix: int = 24
    v6_prefix: int = 48


@dataclass(frozen=True)
class FleetVerdict:
    """A verdict about a group of PCs; ``reports`` are the affected reports."""

    code: str
    scope: str
    check_id: str
    summary: str
    install_ids: tuple[str, ...]
    reports: tuple[str, ...]
    severity: Severity = Severity.CRITICAL
    confidence: float = 0.8
    next_step: str = ""

    def as_verdict(self) -> Verdict:
        """The form a report shows it in (``agentd/report_html.py`` draws verdicts)."""
        return Verdict(
            code=self.code, severity=self.severity, confidence=self.confidence, summary=self.summary,
            evidence=(f"check:{self.check_id}",), next_step=self.next_step,
            thresholds={"site": self.scope, "pcs": len(self.install_ids)},
        )

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "scope": self.scope, "check_id": self.check_id, "summary": self.summary,
                "severity": str(self.severity), "confidence": self.confidence, "next_step": self.next_step,
                "install_ids": list(self.install_ids), "reports": list(self.reports)}


class FleetSpec:
    @hookspec
    def agentd_hub_correlate(self, window: FleetWindow) -> Sequence[FleetVerdict]:  # type: ignore[empty-body]
        """Rules over the fleet's latest reports (sync, pure, all results kept)."""


# -- the first rule -----------------------------------------------------------------------


class SiteOutageRule:
    """``network.site_outage``: several PCs behind one public address or prefix fail the
    same check in the window while PCs elsewhere pass it. One site's uplink, not each PC."""

    @hookimpl
    def agentd_hub_correlate(self, window: FleetWindow) -> list[FleetVerdict]:
        groups: dict[str, list[PcReport]] = defaultdict(list)
        for item in window.reports:
            if item.public_ip:
                groups[f"{item.public_ip}/32" if ":" not in item.public_ip else f"{item.public_ip}/128"].append(item)
                net = network_of(item.public_ip, window.v4_prefix, window.v6_prefix)
                if net:
                    groups[net].append(item)
        found: dict[tuple[str, frozenset[str]], FleetVerdict] = {}
        for scope, members in sorted(groups.items(), key=lambda kv: -int(kv[0].rsplit("/", 1)[1])):  # exact address first
            checks = set().union(*(m.failed for m in members))
            for check_id in sorted(checks):
                failing = [m for m in members if check_id in m.failed]
                if len(failing) < window.min_pcs:
                    continue
                inside = {m.install_id for m in members}
                elsewhere = [r for r in window.reports if r.install_id not in inside and check_id in r.passed]
                if not elsewhere:
                    continue  # everyone fails: not this site's problem
                ids = frozenset(m.install_id for m in failing)
                if any(key[1] >= ids and key[0] == check_id for key in found):
                    continue  # a narrower scope already names these PCs
                found[(check_id, ids)] = FleetVerdict(
                    code="network.site_outage",
                    scope=scope,
                    check_id=check_id,
                    summary=(
                        f"{len(failing)} PCs behind {scope} fail {check_id} within {window.window_s / 60:.0f} min "
                        f"while {len(elsewhere)} PC(s) elsewhere pass it: the site's network, not each PC"
                    ),
                    install_ids=tuple(sorted(ids)),
                    reports=tuple(sorted(m.report_id for m in failing)),
                    confidence=min(0.95, 0.6 + 0.1 * len(failing)),
                    next_step=f"check the site's uplink and firewall at {scope} before touching the PCs",
                )
        return list(found.values())


def manager(load_entry_points: bool = True) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(FleetSpec)
    pm.register(SiteOutageRule(), name="site-outage")
    if load_entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                pm.register(ep.load(), name=ep.name)
            except Exception as exc:  # a broken hub plugin is logged, the built-in rule still runs
                log.error("hub plugin failed to load", plugin=ep.name, error=f"{type(exc).__name__}: {exc}")
    return pm


def correlate(pm: pluggy.PluginManager, window: FleetWindow) -> list[FleetVerdict]:
    verdicts: list[FleetVerdict] = []
    for impl in pm.hook.agentd_hub_correlate.get_hookimpls():
        try:
            result = impl.function(window)
        except Exception as exc:
            log.error("fleet rule failed", plugin=impl.plugin_name, error=f"{type(exc).__name__}: {exc}")
            continue
        verdicts.extend(v for v in result or () if isinstance(v, FleetVerdict))
    return verdicts


def window_from_rows(rows: list[dict[str, Any]], window_s: float, **kw: Any) -> FleetWindow:
    """The latest report of each PC among ``rows`` (oldest first)."""
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        latest[row["install_id"]] = row
    items = tuple(
        PcReport(
            install_id=r["install_id"], report_id=r["id"], hostname=r["hostname"], created_ts=r["created_ts"],
            public_ip=r["public_ip"], failed=frozenset(filter(None, (r["failed_checks"] or "").split(","))),
            passed=frozenset(filter(None, (r["passed_checks"] or "").split(","))),
        )
        for r in latest.values()
    )
    return FleetWindow(items, window_s, **kw)
