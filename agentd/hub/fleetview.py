"""The fleet as a helpdesk reads it: every PC's status from its latest report of any
profile, triaged (not ready first, then stale, then the rest), filtered by one form
(free text plus readiness, verdict, site and "last seen older than"), sorted on any
column and cut into pages on the server. Pure functions over the store's slim rows, so
the page and the JSON API give the same answer."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from agentd.hub.fleet import FleetVerdict, SiteMap

STALE_S = 24 * 3600.0
"""A PC whose latest report is older than this is stale: its status no longer says much."""
OLD_SEEN_S = 3600.0
"""Last seen longer ago than this is drawn greyed."""
PER_PAGE = 50
MAX_PER_PAGE = 500
STATUS_RANK = {"not_ready": 0, "stale": 1, "no_report": 1, "ready": 2, "revoked": 3}
STATUS_LABEL = {"not_ready": "NOT ready", "stale": "stale", "no_report": "no report yet", "ready": "ready", "revoked": "revoked"}
READINESS = {"not_ready": "not ready", "stale": "stale or no report", "ready": "ready", "connected": "connected now"}
OLDER = {"": "any time", "1h": "1 hour", "1d": "1 day", "7d": "7 days", "30d": "30 days"}
OLDER_S = {"1h": 3600.0, "1d": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0}
COLUMNS = ("status", "hostname", "agent", "last_seen", "report", "why", "failing", "site", "connected")
"""The fleet table's columns, each sortable (``?sort=NAME&dir=asc|desc``)."""


class FleetQueryError(ValueError):
    """A fleet query parameter the hub cannot use: the message names it."""


@dataclass(frozen=True)
class FleetQuery:
    text: str = ""
    readiness: str = ""
    verdict: str = ""
    site: str = ""
    older: str = ""
    sort: str = "status"
    descending: bool = False
    page: int = 1
    per_page: int = PER_PAGE

    @classmethod
    def parse(cls, params: Mapping[str, str], *, per_page: int = PER_PAGE) -> FleetQuery:
        def pick(name: str, allowed: Sequence[str]) -> str:
            value = params.get(name, "") or ""
            if value and value not in allowed:
                raise FleetQueryError(f"{name} must be one of {', '.join(a for a in allowed if a)}, not {value[:40]!r}")
            return value

        try:
            page = int(params.get("page") or 1)
            per = int(params.get("per_page") or per_page)
        except ValueError:
            raise FleetQueryError("page and per_page must be whole numbers") from None
        if page < 1 or not 1 <= per <= MAX_PER_PAGE:
            raise FleetQueryError(f"page must be 1 or more and per_page 1 to {MAX_PER_PAGE}")
        return cls(
            text=(params.get("q") or "").strip()[:200], readiness=pick("readiness", tuple(READINESS)),
            verdict=(params.get("verdict") or "")[:100], site=(params.get("site") or "")[:100],
            older=pick("older", tuple(OLDER)), sort=pick("sort", COLUMNS) or "status",
            descending=pick("dir", ("asc", "desc")) == "desc", page=page, per_page=per,
        )

    def params(self, **change: Any) -> dict[str, str]:
        """This query as URL parameters (the defaults left out), with ``change`` applied."""
        values = {"q": self.text, "readiness": self.readiness, "verdict": self.verdict, "site": self.site, "older": self.older,
                  "sort": "" if self.sort == "status" else self.sort, "dir": "desc" if self.descending else "",
                  "page": "" if self.page == 1 else str(self.page)}
        values.update({k: "" if v is None else str(v) for k, v in change.items()})
        return {k: v for k, v in values.items() if v}


def status_of(row: Mapping[str, Any], now: float) -> str:
    if row["revoked"] is not None:
        return "revoked"
    if row["report_id"] is None:
        return "no_report"
    if not row["ready"]:
        return "not_ready"
    if row["created_ts"] is None or now - row["created_ts"] > STALE_S:
        return "stale"
    return "ready"


def annotate(rows: Sequence[dict[str, Any]], sites: SiteMap, now: float | None = None) -> None:
    """Give each of the store's rows its ``status`` and ``site`` (the PC's own label from
    its config first, else its address through ``[hub] sites``) (in place: thousands of
    rows are filtered and sorted as they are; only a page's rows are shaped for showing)."""
    now = time.time() if now is None else now
    for r in rows:
        r["status"] = status_of(r, now)
        r["site"] = r.get("site_label") or sites(r["report_ip"] or r["public_ip"]) or ""


def shape(rows: Sequence[Mapping[str, Any]], site_verdicts: Mapping[str, Sequence[FleetVerdict]]) -> list[dict[str, Any]]:
    """A page's rows as the page and API show them (status, site, failing checks...)."""
    return [{
        "install_id": r["install_id"], "hostname": r["hostname"] or "", "user": r["agent_user"] or "",
        "connected": bool(r["connected_node"]), "revoked": r["revoked"] is not None, "last_seen": r["last_seen"],
        "public_ip": r["report_ip"] or r["public_ip"], "site": r["site"], "status": r["status"],
        "latest": None if r["report_id"] is None else {
            "id": r["report_id"], "created": r["created"], "created_ts": r["created_ts"], "profile": r["profile"],
            "ready": bool(r["ready"]), "top_verdict": r["top_verdict"], "sentence": r.get("sentence"),
            "failed_checks": [c for c in (r["failed_checks"] or "").split(",") if c]},
        "site_verdicts": [v.code for v in site_verdicts.get(r["install_id"], ())],
    } for r in rows]


def with_preshift(rows: Sequence[dict[str, Any]], preshift: Mapping[str, Mapping[str, Any]]) -> None:
    """Add each shown row's latest pre-shift (``latest_preshift``: what scripts read before
    the status came from any profile), from :meth:`Store.preshift_rows`."""
    for r in rows:
        p = preshift.get(r["install_id"])
        r["latest_preshift"] = None if p is None else {
            "id": p["id"], "created": p["created"], "ready": bool(p["ready"]), "top_verdict": p["top_verdict"],
            "failed_checks": [c for c in (p["failed_checks"] or "").split(",") if c]}


def counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    found = {"pcs": len(rows), "not_ready": 0, "stale": 0, "ready": 0, "connected": 0}
    for r in rows:
        status = r["status"]
        if status == "not_ready" or status == "ready":
            found[status] += 1
        elif status in ("stale", "no_report"):
            found["stale"] += 1
        if r["connected_node"]:
            found["connected"] += 1
    return found


def site_counts(rows: Sequence[Mapping[str, Any]], limit: int = 20) -> list[dict[str, Any]]:
    """Per site: PCs, not ready, stale, connected; the sites with most not-ready first."""
    by: dict[str, list[int]] = {}
    for r in rows:
        site = by.get(r["site"])
        if site is None:
            site = by[r["site"]] = [0, 0, 0, 0]
        site[0] += 1
        status = r["status"]
        if status == "not_ready":
            site[1] += 1
        elif status == "stale" or status == "no_report":
            site[2] += 1
        if r["connected_node"]:
            site[3] += 1
    ordered = sorted(by.items(), key=lambda kv: (-kv[1][1], -kv[1][2], kv[0]))[:limit]
    return [{"site": name or "-", "pcs": c[0], "not_ready": c[1], "stale": c[2], "connected": c[3]} for name, c in ordered]


def select(rows: Sequence[dict[str, Any]], query: FleetQuery, site_verdicts: Mapping[str, Sequence[FleetVerdict]] = {},  # noqa: B006
           *, conversation_pcs: set[str] = frozenset(), now: float | None = None) -> list[dict[str, Any]]:
    """The rows the query's filters keep (not yet sorted or paged)."""
    now = time.time() if now is None else now
    text = query.text.lower()
    older = OLDER_S.get(query.older)
    wanted = {"not_ready": ("not_ready",), "stale": ("stale", "no_report"), "ready": ("ready",)}.get(query.readiness)
    site_pcs = {i for i, vs in site_verdicts.items() if any(v.code == query.verdict for v in vs)} if query.verdict else set()
    kept = []
    for r in rows:
        if text and not (text in (r["hostname"] or "").lower() or text in (r["agent_user"] or "").lower()
                         or text in r["install_id"].lower() or r["install_id"] in conversation_pcs):
            continue
        if wanted is not None and r["status"] not in wanted:
            continue
        if query.readiness == "connected" and not r["connected_node"]:
            continue
        if query.verdict and r["top_verdict"] != query.verdict and r["install_id"] not in site_pcs:
            continue
        if query.site and r["site"] != query.site:
            continue
        if older is not None and r["last_seen"] is not None and now - r["last_seen"] < older:
            continue
        kept.append(r)
    return kept


def _key(column: str):
    low = float("-inf")

    def name(r: Mapping[str, Any]) -> tuple[str, str]:
        return ((r["hostname"] or "").lower(), r["install_id"])

    return {
        "status": lambda r: (STATUS_RANK[r["status"]], *name(r)),
        "hostname": name,
        "agent": lambda r: ((r["agent_user"] or "").lower(), *name(r)),
        "last_seen": lambda r: (r["last_seen"] if r["last_seen"] is not None else low, *name(r)),
        "report": lambda r: (r["created_ts"] if r["created_ts"] is not None else low, *name(r)),
        "why": lambda r: (r["top_verdict"] or "~", *name(r)),
        "failing": lambda r: ((r["failed_checks"] or "").count(",") + bool(r["failed_checks"]), r["failed_checks"] or "", *name(r)),
        "site": lambda r: (r["site"], *name(r)),
        "connected": lambda r: (not r["connected_node"], *name(r)),
    }[column]


def page_of(rows: list[dict[str, Any]], query: FleetQuery) -> tuple[list[dict[str, Any]], int]:
    """Sorted and cut: (this page's rows, number of pages)."""
    ordered = sorted(rows, key=_key(query.sort), reverse=query.descending)
    pages = max(1, -(-len(ordered) // query.per_page))
    start = (min(query.page, pages) - 1) * query.per_page
    return ordered[start:start + query.per_page], pages


def ago(ts: float | None, now: float | None = None) -> str:
    """"4 min ago", "3 h ago", "8 d ago": how old, in the unit a person reads."""
    if ts is None:
        return "never"
    seconds = max(0.0, (time.time() if now is None else now) - ts)
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min ago"
    if seconds < 2 * 86400:
        return f"{seconds // 3600:.0f} h ago"
    return f"{seconds // 86400:.0f} d ago"
