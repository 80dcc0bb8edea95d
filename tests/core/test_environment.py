"""Bad environments a PC meets end in one clear line, never "internal error" (issue 24,
points 7 and 8): an unwritable HOME, an SSL_CERT_FILE naming a missing file, a kernel
hostname that is not UTF-8, a configuration file with a byte order mark, a Windows PC
with its performance counters off."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest
import structlog.testing

from agentd.model import Report
from tests.conftest import OFFLINE_GENESYS

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (setpriv to another user, a UTS namespace)")


# -- an unwritable HOME ------------------------------------------------------------------------


@ROOT_ONLY
@pytest.mark.parametrize("command", [["reports", "list"], ["reports", "flush"], ["archive"], ["hub", "enroll-key", "list"]])
def test_an_unwritable_home_is_one_line_naming_the_folder_and_exit_2(command):
    """A service account whose HOME is /nonexistent (nobody's), no AGENTD_STATE_DIR: the
    state folder cannot be made. Run as nobody: root writes anywhere."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent", "NO_COLOR": "1"}  # no config file: the defaults
    result = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-m", "agentd", *command],
                            capture_output=True, text=True, env=env, timeout=60, cwd="/")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "internal error" not in lines[0], result.stderr
    assert "/nonexistent" in lines[0] and "Permission denied" in lines[0] and "AGENTD_STATE_DIR" in lines[0]


# -- SSL_CERT_FILE naming a file that is not there -------------------------------------------------


def test_a_missing_ssl_cert_file_is_named_by_login_with_exit_2(agentd_env, tmp_path):
    agentd_env.write_config('[genesys]\nregion = "mypurecloud.com"\nclient_id = "abc"\n')
    missing = tmp_path / "no-such-ca.pem"
    result = agentd_env.run("login", "--no-browser", "--port", "0", "--timeout", "5", extra_env={"SSL_CERT_FILE": str(missing)})
    assert result.returncode == 2, result.stderr
    assert "SSL_CERT_FILE" in result.stderr and str(missing) in result.stderr and "does not exist" in result.stderr
    assert "internal error" not in result.stderr and "oauth/authorize" not in result.stderr  # said before the browser


async def test_a_missing_ssl_cert_file_is_named_at_every_report_and_the_report_waits(agentd_env, tmp_path, monkeypatch):
    from agentd.app import App
    from agentd.delivery import deliver_report, open_spool

    missing = tmp_path / "no-such-ca.pem"
    app = App.load(agentd_env.write_config(OFFLINE_GENESYS + '[sinks.http]\nurl = "https://127.0.0.1:9/reports"\n'
                                           '[hub]\nurl = "https://127.0.0.1:9"\nenrollment_key = "k"\nconnect = false\n'))
    monkeypatch.setenv("SSL_CERT_FILE", str(missing))
    from correlation.scenarios import AGENT

    report = Report(id="20260514T100001Z-000000000001", created="2026-05-14T10:00:01.000Z", agent=AGENT, profile="preshift")
    with structlog.testing.capture_logs() as logged:
        outcome = await deliver_report(app, report)
    assert outcome.delivered == ("file",)
    for sink in ("http", "hub"):
        assert "SSL_CERT_FILE" in outcome.failed[sink] and str(missing) in outcome.failed[sink], outcome.failed
        assert "FileNotFoundError" not in outcome.failed[sink]
    assert [e.report_id for e in open_spool(app.config).entries()] == [report.id]  # kept for when it is fixed
    assert any("SSL_CERT_FILE" in str(e.get("failed")) for e in logged if e["log_level"] == "warning")


def test_a_missing_ssl_cert_file_makes_the_tls_checks_name_it_without_a_traceback(agentd_env, tmp_path):
    agentd_env.write_config(OFFLINE_GENESYS)
    missing = tmp_path / "no-such-ca.pem"
    result = agentd_env.run("check", "--no-daemon", "--json", "--only", "https", "--only", "websocket",
                            extra_env={"SSL_CERT_FILE": str(missing)})
    assert result.returncode == 1, result.stderr
    for row in json.loads(result.stdout)["checks"]:
        assert row["status"] == "error" and row["summary"].startswith("the environment variable SSL_CERT_FILE names " + str(missing)), row
    assert "Traceback" not in result.stderr


def test_trust_problem_names_the_variable_and_the_file(tmp_path, monkeypatch):
    from agentd.tls import trust_problem

    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "gone.pem"))
    assert "SSL_CERT_FILE" in trust_problem() and "gone.pem" in trust_problem()
    (tmp_path / "junk.pem").write_text("not a certificate")
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "junk.pem"))
    assert "no usable certificate" in trust_problem()
    monkeypatch.delenv("SSL_CERT_FILE")
    assert trust_problem() is None


# -- a kernel hostname that is not UTF-8 ----------------------------------------------------------

UTS_CHECK = r"""
import socket, subprocess, sys
socket.sethostname(b"desk-\xff\xfe-07")  # in this UTS namespace only
result = subprocess.run([sys.executable, "-m", "agentd", *sys.argv[1:]], capture_output=True)
sys.stdout.buffer.write(result.stdout)
sys.stderr.buffer.write(result.stderr)
sys.exit(result.returncode)
"""


@ROOT_ONLY
def test_a_hostname_that_is_not_utf8_is_reported_escaped_and_the_report_kept(agentd_env):
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    agentd_env.write_config(OFFLINE_GENESYS)
    result = subprocess.run(["unshare", "--uts", sys.executable, "-c", UTS_CHECK, "check", "--only", "host", "--no-daemon", "--json", "--upload"],
                            capture_output=True, env=agentd_env.env, timeout=90, cwd=agentd_env.root)
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode in (0, 1), stderr
    report = json.loads(result.stdout)
    assert report["agent"]["hostname"] == "desk-\\xff\\xfe-07"
    assert "delivered to file" in stderr and "internal error" not in stderr
    stored = agentd_env.root / "state" / "reports" / f"{report['id']}.json"
    assert json.loads(stored.read_bytes())["agent"]["hostname"] == "desk-\\xff\\xfe-07"
    # the terminal rendering too
    shown = agentd_env.run("reports", "show", report["id"])
    assert shown.returncode == 0 and "desk-\\xff\\xfe-07" in shown.stdout


def test_any_undecodable_text_in_a_report_is_escaped_not_fatal():
    from correlation.scenarios import AGENT

    from agentd.model import CheckResult, Status

    agent = dataclasses.replace(AGENT, hostname="pc-\udcff")
    report = Report(id="20260514T100002Z-000000000002", created="2026-05-14T10:00:02.000Z", agent=agent, profile="preshift",
                    checks=(CheckResult(id="host", status=Status.PASS, summary="iface eth\udce90"),))
    text = report.to_json()
    text.encode("utf-8")  # would raise on a lone surrogate
    back = Report.from_json(text)
    assert back.agent.hostname == "pc-\\xff" and back.checks[0].summary == "iface eth\\xe90"


# -- a configuration file with a UTF-8 byte order mark --------------------------------------------


def test_a_configuration_file_with_a_byte_order_mark_is_read(agentd_env, tmp_path):
    secret = tmp_path / "collector-token"
    secret.write_bytes(b"\xef\xbb\xbfs3cret-token\r\n")  # Notepad's way
    path = agentd_env.write_config("")
    path.write_bytes(b"\xef\xbb\xbf" + (OFFLINE_GENESYS + f'[host]\ncpu_warn_pct = 77.0\n[sinks.http]\nurl = "https://c.example/r"\n'
                                         f'token = {{ file = "{secret}" }}\n').replace("\n", "\r\n").encode())
    result = agentd_env.run("config", "show")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["host"]["cpu_warn_pct"] == 77.0
    from agentd.app import App

    config = App.load(path).config
    assert config.section("sinks.http").token.reveal() == "s3cret-token"


# -- a Windows PC with its performance counters off ------------------------------------------------


async def test_host_passes_with_what_it_could_read_when_the_platform_refuses_a_figure(agentd_env, monkeypatch):
    """What psutil raises on Windows when performance counters are off (Wine has none):
    its swap figure reads a PDH counter. The load average's read fails too here."""
    import psutil

    from agentd.app import App

    def no_counters():
        raise RuntimeError("PdhAddEnglishCounterW failed. Performance counters may be disabled.")

    def no_load():
        raise OSError("the load average is not readable here")

    monkeypatch.setattr(psutil, "swap_memory", no_counters)
    monkeypatch.setattr(os, "getloadavg", no_load)
    app = App.load(agentd_env.write_config(OFFLINE_GENESYS + "[host]\ncpu_warn_pct = 100\nmem_warn_pct = 100\n"))
    report = await app.run_check("preshift", only=["host"])
    host = report.check("host")
    assert host.status.value == "pass", host.summary
    assert "not readable here: load average, swap" in host.summary and "memory" in host.summary
    assert "PdhAddEnglishCounterW" in host.details["unreadable"]["swap"]
    assert host.details["swap_used_pct"] is None and host.metrics["mem_used_pct"] > 0
    assert report.ready
