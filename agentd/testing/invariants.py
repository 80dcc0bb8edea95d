"""What every scenario test asserts about a report, whatever the scenario.

    from agentd.testing.invariants import assert_every_bad_check_explained

    explained = assert_every_bad_check_explained(report)          # a Report or its JSON dict
    assert "network.media_blocked" in explained["stun"]

A check that ended ``fail``, ``warn`` or ``error`` must be in the evidence of at least one
verdict: a red row with no finding leaves helpdesk with nothing to do. The core's last-word
verdict ``check.unexplained`` keeps that true in production; in a scenario whose cause is
known it is a gap in the rules, so it counts only for the checks named in ``unexplained_ok``.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from agentd.correlation import BAD_STATUSES, UNEXPLAINED_CODE
from agentd.model import Report

BAD = frozenset(str(s) for s in BAD_STATUSES)


def _rows(report: Report | Mapping[str, Any]) -> tuple[list[tuple[str, str, str]], list[tuple[str, tuple[str, ...]]]]:
    """(checks as (id, status, summary), verdicts as (code, evidence)) of a report or its JSON."""
    if isinstance(report, Report):
        checks = [(c.id, str(c.status), c.summary) for c in report.checks]
        verdicts = [(v.code, tuple(v.evidence)) for v in report.verdicts]
    else:
        checks = [(c["id"], c["status"], c.get("summary", "")) for c in report["checks"]]
        verdicts = [(v["code"], tuple(v.get("evidence") or ())) for v in report["verdicts"]]
    return checks, verdicts


def assert_every_bad_check_explained(
    report: Report | Mapping[str, Any], *, unexplained_ok: Iterable[str] = ()
) -> dict[str, set[str]]:
    """Fail unless every check that ended fail/warn/error is in a verdict's evidence (and,
    outside ``unexplained_ok``, in a verdict that names a cause). Returns, per bad check, the
    codes of the verdicts that cite it."""
    allowed = set(unexplained_ok)
    checks, verdicts = _rows(report)
    explained: dict[str, set[str]] = {}
    missing = []
    for check_id, status, summary in checks:
        if status not in BAD:
            continue
        codes = {code for code, refs in verdicts if f"check:{check_id}" in refs}
        named = codes - {UNEXPLAINED_CODE}
        if not codes or (not named and check_id not in allowed):
            missing.append(f"{check_id} ({status}: {summary}) -> {sorted(codes) or 'no verdict'}")
        explained[check_id] = codes
    if missing:
        listing = "\n  ".join(missing)
        given = "\n  ".join(f"{code}: {', '.join(refs)}" for code, refs in verdicts) or "(none)"
        raise AssertionError(f"checks that ended badly with no verdict naming a cause:\n  {listing}\nverdicts:\n  {given}")
    return explained
