"""Incident mode against the daemon's real SQLite timeline: aligned in time, carried in the report."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from agentd.correlation import TIMELINE_EVIDENCE_KIND
from agentd.model import Report, isoformat
from agentd.timeline import Timeline

from .scenarios import CALL_START, at, clean_evidence, report, rtc_stats, with_data


def silent_call_items():
    items = clean_evidence()
    stats = [(t, 0, 0.03, 0.4) for t in range(10, 300, 30)] + [(t, 0, 0.03, 0.0) for t in range(300, 420, 20)]
    items["genesys.webrtc_diagnostics"] = with_data(items["genesys.webrtc_diagnostics"], rtc_stats=rtc_stats(stats))
    return items


def test_the_call_window_picks_the_pcs_own_minutes_from_the_timeline(correlate, tmp_path):
    timeline = Timeline(tmp_path / "timeline.sqlite3")
    # an hour before the call the PC was starved; during the call it was starved again
    for minutes in range(-60, -50):
        timeline.add_sample({"cpu_pct": 99.0, "mem_used_pct": 99.0, "memory_pressure_avg10": 80.0}, at=CALL_START + timedelta(minutes=minutes))
    for seconds in range(-60, 660, 10):
        mem = 97.0 if 250 <= seconds <= 450 else 50.0
        timeline.add_sample({"cpu_pct": 30.0, "mem_used_pct": mem, "memory_pressure_avg10": 0.0, "browsers": [{"name": "chrome"}]},
                            at=CALL_START + timedelta(seconds=seconds))
    timeline.record("ws.drop", {"close_code": 1006, "reason": ""}, at=CALL_START + timedelta(seconds=330))
    timeline.record("ws.drop", {"close_code": 1006, "reason": ""}, at=CALL_START - timedelta(hours=2))

    verdicts = correlate(report({}, silent_call_items(), profile="incident"), timeline)
    codes = {v.code: v for v in verdicts}
    assert set(codes) == {"host.resource_exhaustion", "signaling.websocket_keepalive_timeout"}
    host = codes["host.resource_exhaustion"]
    assert "memory 97% used" in host.summary and "CPU 99%" not in host.summary  # only the call's minutes count
    assert "evidence:local.timeline" in host.evidence
    assert "1 time(s)" in codes["signaling.websocket_keepalive_timeout"].summary


def test_the_report_carries_the_history_and_correlates_the_same_when_stored(agentd_env, tmp_path):
    from agentd.app import App
    from .conftest import RULE_PLUGINS as RULES

    timeline = Timeline(tmp_path / "timeline.sqlite3")
    for seconds in range(-600, 1200, 5):
        timeline.add_sample({"cpu_pct": 95.0, "mem_used_pct": 60.0, "memory_pressure_avg10": 2.0, "browsers": [{"name": "x"} for _ in range(20)]},
                            at=CALL_START + timedelta(seconds=seconds))
    app = App.load(agentd_env.write_config(""), register=RULES, load_entry_points=False)
    app.timeline = timeline
    items = silent_call_items()
    read_later = isoformat(CALL_START + timedelta(days=3))  # state read days later: a moment, not a span
    items["genesys.station"] = replace(items["genesys.station"], window_start=read_later, window_end=read_later)
    first = app.correlate(report({}, items, profile="incident"))
    [history] = [e for e in first.evidence if e.kind == TIMELINE_EVIDENCE_KIND]
    samples = history.data["host_samples"]
    assert samples and all("browsers" not in s for s in samples)  # trimmed to the figures
    assert samples[0]["at"] >= at(-300) and samples[-1]["at"] <= at(900)  # the call's window, 5 min each side
    assert history.window_end == at(900)
    assert [v.code for v in first.verdicts] == ["host.resource_exhaustion"]

    # read back from JSON, without any timeline on this machine: the same verdict
    stored = Report.from_json(first.with_verdicts([]).to_json())
    app.timeline = None
    again = app.correlate(stored)
    assert [v.to_dict() for v in again.verdicts] == [v.to_dict() for v in first.verdicts]


def test_a_readiness_check_gets_no_history_attached(correlate, agentd_env, tmp_path):
    from agentd.app import App
    from .conftest import RULE_PLUGINS as RULES

    timeline = Timeline(tmp_path / "timeline.sqlite3")
    timeline.add_sample({"cpu_pct": 1.0}, at=CALL_START)
    app = App.load(agentd_env.write_config(""), register=RULES, load_entry_points=False)
    app.timeline = timeline
    checked = app.correlate(report({}, {}, profile="preshift"))
    assert checked.evidence == ()
