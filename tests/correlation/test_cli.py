"""End to end through the installed plugins: a seed-format diagnostics export becomes a verdict."""

from __future__ import annotations

import json

from agentd.testing.invariants import assert_every_bad_check_explained

DIAGNOSTICS = {"entities": [
    {"type": "ICEConnectionStateChange", "timestamp": "2026-05-14T10:00:00Z", "details": {"state": "checking"}},
    {"type": "ICEConnectionStateChange", "timestamp": "2026-05-14T10:00:01Z", "details": {"state": "connected"}},
    {"type": "RtcStats", "timestamp": "2026-05-14T10:05:00Z", "details": {"packetsLost": 10, "jitterBufferDelay": 0.1, "roundTripTime": 0.05, "audioLevel": 0.4}},
    {"type": "RtcStats", "timestamp": "2026-05-14T10:05:20Z", "details": {"packetsLost": 1450, "jitterBufferDelay": 1.45, "roundTripTime": 0.85, "audioLevel": 0.3}},
    {"type": "ICEConnectionStateChange", "timestamp": "2026-05-14T10:05:22Z", "details": {"state": "disconnected"}},
]}


def test_diagnose_names_isp_congestion_from_a_diagnostics_export(agentd_env, tmp_path):
    agentd_env.write_config('[genesys]\nregion = "agentd-test.invalid"\n')
    export = tmp_path / "diag.json"
    export.write_text(json.dumps(DIAGNOSTICS))
    page = tmp_path / "incident.html"
    result = agentd_env.run("diagnose", "c-42", "--diagnostics-file", str(export), "--json", "--html", str(page), "--upload")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert_every_bad_check_explained(report)
    [verdict] = report["verdicts"]
    assert verdict["code"] == "network.isp_congestion"
    assert verdict["evidence"] == ["evidence:genesys.webrtc_diagnostics:file"]
    assert verdict["thresholds"]["rtt_ms"] == 150.0 and verdict["next_step"]
    html = page.read_text()
    assert 'id="chart-call-quality"' in html
    # the incident's header says what was found, not READY (the call already failed)
    assert '<span class="badge warning" id="headline">found network.isp_congestion (warning)</span>' in html
    assert "READY" not in html.split("<h2>", 1)[0]
    assert (agentd_env.root / "state" / "reports" / f"{report['id']}.json").exists()
    assert "delivered to file (done)" in result.stderr


def test_diagnose_in_the_terminal_heads_with_the_finding(agentd_env, tmp_path):
    agentd_env.write_config('[genesys]\nregion = "agentd-test.invalid"\n')
    export = tmp_path / "diag.json"
    export.write_text(json.dumps(DIAGNOSTICS))
    result = agentd_env.run("diagnose", "c-42", "--diagnostics-file", str(export))
    assert result.returncode == 0, result.stderr
    title = result.stdout.splitlines()[0]
    assert "found network.isp_congestion (warning)" in title and "READY" not in title
    # nothing found is said as such, not as READY either
    export.write_text(json.dumps({"entities": DIAGNOSTICS["entities"][:2]}))
    calm = agentd_env.run("diagnose", "c-42", "--diagnostics-file", str(export))
    assert "no cause found" in calm.stdout.splitlines()[0] and "READY" not in calm.stdout.splitlines()[0]
