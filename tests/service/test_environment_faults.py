"""The daemon in a bad environment (issue 24, point 7): a non-UTF-8 kernel hostname does
not lose its reports; an SSL_CERT_FILE naming a missing file is one clear log line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from .conftest import READY_WAIT_S, DaemonProcess, Notifications

ESCAPED = "desk-\\xff\\xfe-07"
IN_UTS_NAMESPACE = r"""
import os, socket, sys
socket.sethostname(b"desk-\xff\xfe-07")  # this UTS namespace only
os.execv(sys.executable, [sys.executable, "-m", "agentd", "run"])
"""


def test_a_missing_ssl_cert_file_is_one_clear_line_in_the_daemons_log(start_daemon, tmp_path):
    missing = tmp_path / "no-such-ca.pem"
    daemon = start_daemon(extra_env={"SSL_CERT_FILE": str(missing)})
    assert daemon.notify.wait_for("READY=1", timeout_s=READY_WAIT_S) is not None, daemon.stderr()
    assert daemon.stop() == 0
    lines = [json.loads(line) for line in daemon.stderr().splitlines() if line.startswith("{") and "SSL_CERT_FILE" in line]
    assert len(lines) == 1 and lines[0]["level"] == "error", lines
    assert str(missing) in lines[0]["problem"] and "does not exist" in lines[0]["problem"]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare (a UTS namespace)")
def test_the_daemons_reports_survive_a_hostname_that_is_not_utf8(service_env, tmp_path):
    address = f"@agentd-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    notify = Notifications(address)
    err = tmp_path / "daemon.stderr"
    proc = subprocess.Popen(["unshare", "--uts", sys.executable, "-c", IN_UTS_NAMESPACE], env={**service_env.env, "NOTIFY_SOCKET": address},
                            stdout=subprocess.DEVNULL, stderr=open(err, "wb"), cwd=service_env.root)
    daemon = DaemonProcess(proc, notify, err)
    try:
        assert notify.wait_for("READY=1", timeout_s=READY_WAIT_S) is not None, daemon.stderr()
        # through the daemon (no --no-daemon): the daemon makes, spools and delivers the report
        result = service_env.run("check", "--only", "svc.pass", "--json", "--upload")
        assert result.returncode == 0, result.stderr + daemon.stderr()
        report = json.loads(result.stdout)
        assert report["agent"]["hostname"] == ESCAPED
        stored = service_env.root / "state" / "reports" / f"{report['id']}.json"
        assert stored.exists(), daemon.stderr()
        assert json.loads(stored.read_bytes())["agent"]["hostname"] == ESCAPED
        status = json.loads(service_env.run("status", "--json").stdout)
        assert status["last_report"]["id"] == report["id"]
        assert "UnicodeEncodeError" not in daemon.stderr()
        assert daemon.stop() == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        notify.close()
