"""The CLI contract: offline behaviour, --json, --output, exit codes, help."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from agentd.model import Report

STATUSES = {"pass", "warn", "fail", "skip", "error"}


def _netns_available() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


@pytest.fixture
def offline_netns():
    """A network namespace with nothing but loopback: a PC without any network.

    ``ip netns exec`` bind-mounts /etc/netns/<name>/resolv.conf over /etc/resolv.conf,
    so the resolver asks 127.0.0.1 inside the namespace (nothing listens): no packet can
    leave for any other address.
    """
    if not _netns_available():
        pytest.skip("needs root and iproute2 to create a network namespace")
    name = f"agentd-offline-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    etc = Path("/etc/netns") / name
    if subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode != 0:
        pytest.skip("cannot create network namespaces here")
    try:
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        shutil.rmtree(etc, ignore_errors=True)


def test_offline_check_finishes_quickly_not_ready_and_says_hosts_did_not_resolve(agentd_env, offline_netns):
    started = time.monotonic()
    result = subprocess.run(
        ["ip", "netns", "exec", offline_netns, sys.executable, "-m", "agentd", "check"],
        capture_output=True, text=True, timeout=30, env=agentd_env.env,
    )
    elapsed = time.monotonic() - started
    assert elapsed < 10.0
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert "NOT READY" in out
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) >= 3 and cells[0] in ("PASS", "WARN", "FAIL", "SKIP", "ERROR"):
            rows[cells[1]] = cells
    assert rows["dns"][0] == "FAIL" and rows["dns"][2].startswith("could not resolve api.mypurecloud.com")
    assert rows["https"][0] == "FAIL" and rows["https"][2].startswith("could not resolve api.mypurecloud.com")


def test_offline_json_report_names_the_resolution_failure(agentd_env, offline_netns):
    result = subprocess.run(
        ["ip", "netns", "exec", offline_netns, sys.executable, "-m", "agentd", "check", "--json"],
        capture_output=True, text=True, timeout=30, env=agentd_env.env,
    )
    assert result.returncode == 1
    report = json.loads(result.stdout)
    dns = next(c for c in report["checks"] if c["id"] == "dns")
    assert dns["status"] == "fail"
    assert {h["reason"] for h in dns["details"]["hosts"]} == {"dns"}
    https = next(c for c in report["checks"] if c["id"] == "https")
    assert https["status"] == "fail"
    assert {e["reason"] for e in https["details"]["endpoints"]} == {"dns"}


def test_json_prints_only_the_report_and_it_matches_the_contract(agentd_env):
    agentd_env.write_config('[genesys]\nregion = "agentd-test.invalid"\n')
    result = agentd_env.run("check", "--json")
    assert result.returncode in (0, 1), result.stderr
    data = json.loads(result.stdout)  # nothing else on stdout, or this fails
    assert data["schema"] == "agentd.report/1"
    assert isinstance(data["id"], str) and data["id"]
    assert data["created"].endswith("Z")
    assert isinstance(data["agent"], dict) and data["agent"]["install_id"]
    assert isinstance(data["ready"], bool)
    assert data["ready"] == all(c["status"] not in ("fail", "error") for c in data["checks"])
    assert data["ready"] is (result.returncode == 0)
    assert {"dns", "https", "host"} <= {c["id"] for c in data["checks"]}
    for check in data["checks"]:
        assert check["status"] in STATUSES
        assert isinstance(check["summary"], str) and check["summary"]
        assert isinstance(check["duration_ms"], (int, float))
        assert isinstance(check["metrics"], dict) and isinstance(check["details"], dict)
        for name, value in check["metrics"].items():
            assert value is None or isinstance(value, (int, float)), (check["id"], name)
    assert isinstance(data["evidence"], list) and isinstance(data["verdicts"], list)
    for verdict in data["verdicts"]:
        assert {"code", "severity", "confidence", "summary", "evidence"} <= set(verdict)
    assert Report.from_dict(data).to_dict()["checks"] == data["checks"]


def test_output_file_holds_the_same_report(agentd_env, tmp_path):
    agentd_env.write_config('[genesys]\nregion = "agentd-test.invalid"\n')
    target = tmp_path / "out" / "report.json"
    result = agentd_env.run("check", "--json", "--output", str(target))
    assert json.loads(target.read_text()) == json.loads(result.stdout)


def test_only_runs_the_named_checks(agentd_env):
    agentd_env.write_config('[genesys]\nregion = "agentd-test.invalid"\n')
    result = agentd_env.run("check", "--json", "--only", "host")
    assert [c["id"] for c in json.loads(result.stdout)["checks"]] == ["host"]


def test_usage_errors_exit_2_with_one_line(agentd_env):
    result = agentd_env.run("check", "--profile", "nonsense")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr and "Traceback" not in result.stderr
    result = agentd_env.run("no-such-command")
    assert result.returncode == 2


@pytest.mark.parametrize("command", ["check", "diagnose", "plugins", "config"])
def test_every_command_has_help(agentd_env, command):
    result = agentd_env.run(command, "--help")
    assert result.returncode == 0
    assert "usage: agentd" in result.stdout


def test_version(agentd_env):
    from agentd import __version__

    result = agentd_env.run("--version")
    assert result.stdout.strip() == f"agentd {__version__}"


def test_terminal_report_shows_bracketed_text_literally():
    """Summaries name config tables like [ice.servers]; rich must not eat them as markup."""
    import io

    from rich.console import Console

    from agentd.model import AgentInfo, CheckResult, Report, Severity, Status, Verdict
    from agentd.render import render_report

    report = Report(
        id="r1", created="2026-11-21T00:00:00.000Z", profile="preshift",
        agent=AgentInfo(hostname="pc", install_id="i", version="0", platform="Linux", python="3.11"),
        checks=(CheckResult(id="stun", status=Status.SKIP, summary="no stun: url in [ice.servers]"),),
        verdicts=(Verdict("config.turn_auth_failed", Severity.WARNING, 0.9, "set [ice] credential", next_step="edit [[ice.servers]]"),),
    )
    out = io.StringIO()
    render_report(report, Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    assert "no stun: url in [ice.servers]" in text
    assert "set [ice] credential" in text
    assert "edit [[ice.servers]]" in text
