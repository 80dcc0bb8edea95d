"""Fleet correlation: rules over many PCs' reports, as pluggy hooks of the hub.

Same style as the PC's ``agentd_correlate``: a rule is pure and fast (no I/O); it gets a
:class:`FleetWindow` (the latest report of every PC within the window, summarized) and
returns :class:`FleetVerdict` objects. Hub plugins register under the entry-point group
``agentd.hub``; the built-in rule ``network.site_outage`` is below.
"""

from __future__ import annotations

import importlib.metadata
import ipaddress
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

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
    own_cause: str | None = None
    """The PC's own top verdict (``config.turn_auth_failed``...): the cause the PC named itself."""
    site: str | None = None
    """The site the PC belongs to: a name from ``[hub] sites``, else its public prefix."""


@dataclass(frozen=True)
class Site:
    """A named site: the public prefixes its PCs reach the hub from (``[hub] sites``)."""

    name: str
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def parse_sites(mapping: Mapping[str, Sequence[str]] | None) -> tuple[Site, ...]:
    """``{"Lisbon": ["198.51.100.0/24"]}`` -> sites; ValueError names a bad prefix."""
    out: list[Site] = []
    for name, prefixes in (mapping or {}).items():
        nets = []
        for text in prefixes:
            try:
                nets.append(ipaddress.ip_network(str(text), strict=False))
            except ValueError:
                raise ValueError(f"[hub] sites.{name}: {str(text)[:60]!r} is not an address prefix (like 198.51.100.0/24)") from None
        out.append(Site(str(name), tuple(nets)))
    return tuple(out)


def site_of(address: str | None, sites: Sequence[Site] = (), v4_prefix: int = 24, v6_prefix: int = 48) -> str | None:
    """The named site whose most specific prefix holds ``address``, else its public prefix."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    best: tuple[int, str] | None = None
    for site in sites:
        for net in site.networks:
            if ip.version == net.version and ip in net and (best is None or net.prefixlen > best[0]):
                best = (net.prefixlen, site.name)
    return best[1] if best else network_of(address, v4_prefix, v6_prefix)


class SiteMap:
    """``site_of`` with a memory: one per hub process (addresses repeat on every page load).
    Bounded: emptied when it holds more than ``limit`` addresses."""

    def __init__(self, sites: Sequence[Site] = (), v4_prefix: int = 24, v6_prefix: int = 48, limit: int = 200_000) -> None:
        self.sites = tuple(sites)
        self.v4_prefix, self.v6_prefix, self.limit = v4_prefix, v6_prefix, limit
        self._known: dict[str, str | None] = {}

    def __call__(self, address: str | None) -> str | None:
        if not address:
            return None
        try:
            return self._known[address]
        except KeyError:
            pass
        if len(self._known) >= self.limit:
            self._known.clear()
        found = self._known[address] = site_of(address, self.sites, self.v4_prefix, self.v6_prefix)
        return found


@dataclass(frozen=True)
class FleetWindow:
    reports: tuple[PcReport, ...]
    window_s: float
    min_pcs: int = 3
    min_share: float = 0.6
    v4_prefix: int = 24
    v6_prefix: int = 48


@dataclass(frozen=True)
class FleetVerdict:
    """A verdict about a group of PCs; ``reports`` are the affected reports."""

    code: str
    scope: str
    check_ids: tuple[str, ...]
    summary: str
    install_ids: tuple[str, ...]
    reports: tuple[str, ...]
    severity: Severity = Severity.CRITICAL
    confidence: float = 0.8
    next_step: str = ""
    counts: Mapping[str, int] = field(default_factory=dict)
    """``reporting``, ``failing``, ``passing`` and ``own_cause`` (PCs left out for a cause of their own)."""

    @property
    def check_id(self) -> str:
        return self.check_ids[0] if self.check_ids else ""

    def as_verdict(self) -> Verdict:
        """The form a report shows it in (``agentd/report_html.py`` draws verdicts)."""
        return Verdict(
            code=self.code, severity=self.severity, confidence=self.confidence, summary=self.summary,
            evidence=tuple(f"check:{c}" for c in self.check_ids), next_step=self.next_step,
            thresholds={"site": self.scope, "pcs": len(self.install_ids), **{f"{k}_pcs": v for k, v in self.counts.items()}},
        )

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "scope": self.scope, "check_id": self.check_id, "check_ids": list(self.check_ids),
                "summary": self.summary, "severity": str(self.severity), "confidence": self.confidence,
                "next_step": self.next_step, "install_ids": list(self.install_ids), "reports": list(self.reports),
                "counts": dict(self.counts)}


class FleetSpec:
    @hookspec
    def agentd_hub_correlate(self, window: FleetWindow) -> Sequence[FleetVerdict]:  # type: ignore[empty-body]
        """Rules over the fleet's latest reports (sync, pure, all results kept)."""


# -- the first rule -----------------------------------------------------------------------

OWN_CAUSE_PREFIXES = ("config.", "host.")
"""A PC that names one of these as its own cause failed for a reason of its own: never counted for its site."""


def has_own_cause(item: PcReport) -> bool:
    return bool(item.own_cause) and item.own_cause.startswith(OWN_CAUSE_PREFIXES)


class SiteOutageRule:
    """``network.site_outage``: most of the PCs that reported from one site in the window
    fail checks that no PC there passes. One verdict per site, naming every such check.

    Counted are the site's PCs whose own cause is not ``config.*`` or ``host.*`` (a wrong
    TURN password or a PC out of memory says nothing about the site's network). The
    verdict needs at least ``min_pcs`` failing PCs and ``min_share`` of those counted; a
    check that PCs elsewhere also fail with none passing it is the fleet's (or the
    platform's), not this site's."""

    @hookimpl
    def agentd_hub_correlate(self, window: FleetWindow) -> list[FleetVerdict]:
        groups: dict[str, list[PcReport]] = defaultdict(list)
        for item in window.reports:
            site = item.site or network_of(item.public_ip, window.v4_prefix, window.v6_prefix)
            if site:
                groups[site].append(item)
        ran: dict[str, set[str]] = defaultdict(set)  # check id -> sites where a PC reported it
        passed_at: dict[str, set[str]] = defaultdict(set)  # check id -> sites where a PC passed it
        for scope, members in groups.items():
            for m in members:
                for check_id in m.failed | m.passed:
                    ran[check_id].add(scope)
                for check_id in m.passed:
                    passed_at[check_id].add(scope)
        found: list[FleetVerdict] = []
        for scope, members in sorted(groups.items()):
            counted = [m for m in members if not has_own_cause(m)]
            checks = []
            for check_id in sorted(set().union(*(m.failed for m in counted))):
                if scope in passed_at[check_id]:
                    continue  # a PC here passes it: not the site's network
                if ran[check_id] - {scope} and not passed_at[check_id] - {scope}:
                    continue  # failing everywhere it ran: not this site's network
                checks.append(check_id)
            failing = [m for m in counted if m.failed & set(checks)]
            if not checks or len(failing) < window.min_pcs or len(failing) < window.min_share * len(counted):
                continue
            own = len(members) - len(counted)
            passing = len(counted) - len(failing)
            names = ", ".join(checks)
            found.append(FleetVerdict(
                code="network.site_outage",
                scope=scope,
                check_ids=tuple(checks),
                summary=(
                    f"{len(failing)} of {len(counted)} PCs at {scope} fail {names} within {window.window_s / 60:.0f} min "
                    f"and none there passes {'it' if len(checks) == 1 else 'them'}: the site's network, not each PC"
                    + (f" ({own} PC(s) with a cause of their own not counted)" if own else "")
                ),
                install_ids=tuple(sorted(m.install_id for m in failing)),
                reports=tuple(sorted(m.report_id for m in failing)),
                confidence=round(min(0.95, 0.5 + 0.4 * len(failing) / len(counted) + 0.01 * len(failing)), 2),
                next_step=f"check the uplink and firewall of site {scope} before touching the PCs",
                counts={"reporting": len(members), "failing": len(failing), "passing": passing, "own_cause": own},
            ))
        return found


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


def window_from_rows(rows: list[dict[str, Any]], window_s: float, *, sites: Sequence[Site] | SiteMap = (), **kw: Any) -> FleetWindow:
    """The latest report of each PC among ``rows`` (oldest first), each PC placed at its site
    (the label its config names, ``site_label``, else its address through the site map)."""
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        latest[row["install_id"]] = row
    place = sites if isinstance(sites, SiteMap) else SiteMap(sites, kw.get("v4_prefix", 24), kw.get("v6_prefix", 48))
    items = tuple(
        PcReport(
            install_id=r["install_id"], report_id=r["id"], hostname=r["hostname"], created_ts=r["created_ts"],
            public_ip=r["public_ip"], failed=frozenset(filter(None, (r["failed_checks"] or "").split(","))),
            passed=frozenset(filter(None, (r["passed_checks"] or "").split(","))),
            own_cause=r.get("top_verdict"), site=r.get("site_label") or place(r["public_ip"]),
        )
        for r in latest.values()
    )
    return FleetWindow(items, window_s, **kw)


def own_finding_first(own: Sequence[Verdict], site: Sequence[FleetVerdict]) -> list[Verdict]:
    """A report's verdicts with its site's: the PC's own finding first, unless that finding
    is the same network cause (a ``network.*`` verdict about a check the site fails), where
    the site verdict, naming the wider cause, leads."""
    if not site:
        return list(own)
    site_checks = {f"check:{c}" for v in site for c in v.check_ids}
    same_cause = bool(own) and (own[0].code == "check.unexplained"  # no finding of its own: the site's explains it
                                or own[0].code.startswith("network.") and bool(set(own[0].evidence) & site_checks))
    extra = [v.as_verdict() for v in site]
    if not own or same_cause:
        return [*extra, *own]
    return [own[0], *extra, *own[1:]]
