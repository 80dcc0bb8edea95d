"""The single-file HTML report, opened in a real headless Chromium.

The page's own script marks the <html> element when it has run (``data-rendered``),
counts the SVG charts that have marks and a laid-out size (``data-charts-drawn``) and
records any uncaught error (``data-errors``); Chromium's console log must stay empty
(a Content-Security-Policy violation, that is a network fetch, would show there).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentd.model import Report, Severity, Status, Verdict
from agentd.report_html import render_html, write_html
from correlation.scenarios import (
    clean_checks,
    clean_evidence,
    evidence,
    host_samples,
    patched,
    report,
    rtc_stats,
    series,
    with_data,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (tests/run installs the Debian package)")


@dataclass
class Rendered:
    dom: str
    console: list[str]

    def attr(self, name: str) -> str | None:
        match = re.search(rf'<html[^>]*\s{name}="([^"]*)"', self.dom)
        return match.group(1) if match else None


def open_in_chromium(page: Path, tmp_path: Path) -> Rendered:
    completed = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri(),
        ],
        capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    console = [line for line in completed.stderr.splitlines() if ":CONSOLE" in line]
    return Rendered(completed.stdout, console)


def check_mode_report() -> Report:
    checks = clean_checks()
    checks["media.path"] = patched(checks["media.path"], status=Status.WARN, series=series(240, rtt=160.0, lost_every=9),
                                   metrics={"loss_pct": 11.0, "rtt_ms": 162.0})
    checks["turn.udp"] = patched(checks["turn.udp"], status=Status.FAIL, summary="no answer </td><script>alert(1)</script>", reason="timeout")
    return report(checks).with_verdicts([
        Verdict("network.isp_congestion", Severity.WARNING, 0.75, "Loss 11% with RTT 162 ms <b>on the line</b>.",
                ("check:media.path",), "Move to a wired connection.", {"loss_pct": 1.0, "rtt_ms": 150.0}),
    ])


def incident_report(with_history: bool) -> Report:
    items = clean_evidence()
    stats = [(t, 0, 0.03, 0.4) for t in range(10, 300, 20)] + [(t, 0, 0.03, 0.0) for t in range(300, 420, 20)]
    items["genesys.webrtc_diagnostics"] = with_data(items["genesys.webrtc_diagnostics"], rtc_stats=rtc_stats(stats))
    if with_history:
        items["local.timeline"] = evidence("local.timeline", {"host_samples": host_samples(cpu=70, mem=97, psi=35), "events": []})
    return report({}, items, profile="incident")


@needs_chromium
def test_check_report_renders_with_its_chart_and_no_console_output(tmp_path):
    page = tmp_path / "report.html"
    write_html(check_mode_report(), page)
    rendered = open_in_chromium(page, tmp_path)
    assert rendered.attr("data-rendered") == "ok"
    assert rendered.attr("data-errors") is None
    assert rendered.console == []
    assert rendered.attr("data-charts") == "1" and rendered.attr("data-charts-drawn") == "1"
    assert 'id="chart-media-path"' in rendered.dom
    assert rendered.dom.count('data-series="lost probe"') == len([i for i in range(240) if i % 9 == 0])
    # verdicts come first, with the next step; the checks are a table with one row each
    assert rendered.dom.index('data-code="network.isp_congestion"') < rendered.dom.index('id="checks"')
    assert "Move to a wired connection." in rendered.dom
    assert len(re.findall(r'<tr id="check-', rendered.dom)) == len(clean_checks())
    # text from the report is text, never markup
    assert "<script>alert(1)</script>" not in rendered.dom and "&lt;b&gt;on the line&lt;/b&gt;" in rendered.dom


@needs_chromium
@pytest.mark.parametrize("with_history, charts", [(True, 3), (False, 2)])
def test_incident_report_puts_the_call_next_to_the_pc(tmp_path, with_history, charts):
    page = tmp_path / "incident.html"
    write_html(incident_report(with_history).with_verdicts([]), page)
    rendered = open_in_chromium(page, tmp_path)
    assert rendered.attr("data-rendered") == "ok" and rendered.console == []
    # the media path chart needs the media.path check, which an incident without checks lacks
    expected = charts - 1
    assert rendered.attr("data-charts") == str(expected) and rendered.attr("data-charts-drawn") == str(expected)
    assert 'id="chart-call-quality"' in rendered.dom
    assert rendered.dom.count('data-series="audio level 0"') == 6
    if with_history:
        assert 'id="chart-host-pressure"' in rendered.dom and 'data-series="memory used %"' in rendered.dom
    else:
        assert "no local host history" in rendered.dom


def test_the_page_is_self_contained_and_carries_the_report():
    text = render_html(check_mode_report())
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "@import" not in text and "url(" not in text
    data = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S).group(1)
    assert Report.from_json(data.replace("<\\/", "</")).to_dict() == check_mode_report().to_dict()


def test_cli_writes_the_html_report(agentd_env, tmp_path):
    page = tmp_path / "out" / "check.html"
    agentd_env.write_config('[genesys]\nregion = "agentd-test.invalid"\n')
    result = agentd_env.run("check", "--only", "host", "--no-daemon", "--json", "--html", str(page))
    assert result.returncode in (0, 1), result.stderr
    report_id = json.loads(result.stdout)["id"]
    text = page.read_text(encoding="utf-8")
    assert report_id in text and 'id="check-host"' in text
