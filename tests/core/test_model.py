"""The report model: JSON that round-trips and readiness derived from the checks."""

from __future__ import annotations

import json

import pytest

from agentd.model import SCHEMA, AgentInfo, CheckResult, Evidence, Report, Severity, Status, Verdict

AGENT = AgentInfo(hostname="pc-17", install_id="agentd-x", version="0.1.0", platform="Linux", python="3.11.7", user="ana")


def _report(*statuses: Status) -> Report:
    return Report(
        id="20261121T000000Z-abc",
        created="2026-11-21T00:00:00.000Z",
        agent=AGENT,
        profile="preshift",
        checks=tuple(
            CheckResult(id=f"c{i}", status=s, summary=f"check {i}", duration_ms=1.25, metrics={"rtt_ms": 20.5, "loss_pct": None}, details={"a": [1, 2]})
            for i, s in enumerate(statuses)
        ),
        evidence=(Evidence(id="genesys.call_quality", source="genesys", kind="genesys.call_quality", summary="MOS 3.1", data={"minMos": 3.1}),),
        verdicts=(
            Verdict(
                code="network.isp_congestion",
                severity=Severity.WARNING,
                confidence=0.8,
                summary="loss rises with RTT",
                evidence=("check:c0", "evidence:genesys.call_quality"),
                next_step="call the ISP",
                thresholds={"rtt_ms": 150},
            ),
        ),
    )


def test_json_round_trips_to_an_equal_report():
    report = _report(Status.PASS, Status.WARN, Status.SKIP)
    again = Report.from_json(report.to_json())
    assert again == report
    assert again.to_json() == report.to_json()


@pytest.mark.parametrize(
    "statuses, ready",
    [((Status.PASS, Status.WARN, Status.SKIP), True), ((Status.PASS, Status.FAIL), False), ((Status.ERROR,), False), ((), True)],
)
def test_ready_is_derived_from_the_checks(statuses, ready):
    report = _report(*statuses)
    assert report.ready is ready
    assert json.loads(report.to_json())["ready"] is ready


def test_json_has_the_contract_fields():
    data = json.loads(_report(Status.PASS).to_json())
    assert data["schema"] == SCHEMA == "agentd.report/1"
    assert list(data)[:3] == ["schema", "id", "created"]
    check = data["checks"][0]
    assert {"id", "status", "summary", "duration_ms", "metrics", "details"} <= set(check)
    verdict = data["verdicts"][0]
    assert {"code", "severity", "confidence", "summary", "evidence"} <= set(verdict)
    assert verdict["evidence"] == ["check:c0", "evidence:genesys.call_quality"]


def test_non_finite_numbers_become_null_so_the_json_stays_valid():
    report = Report(
        id="r", created="2026-11-21T00:00:00.000Z", agent=AGENT, profile="preshift",
        checks=(CheckResult(id="m", status=Status.PASS, summary="x", metrics={"jitter_ms": float("nan"), "rtt_ms": float("inf")}),),
    )
    data = json.loads(report.to_json())
    assert data["checks"][0]["metrics"] == {"jitter_ms": None, "rtt_ms": None}


def test_newer_reports_with_unknown_fields_still_load():
    data = json.loads(_report(Status.PASS).to_json())
    data["future_field"] = {"x": 1}
    data["checks"][0]["future_check_field"] = 3
    assert Report.from_dict(data).checks[0].id == "c0"


def test_a_document_that_is_not_a_report_is_refused():
    with pytest.raises(ValueError, match="not an agentd report"):
        Report.from_dict({"schema": "something/1"})
