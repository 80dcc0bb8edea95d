"""The systemd units pass ``systemd-analyze verify`` and carry what operations rely on."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = ("agentd.service", "agentd-archive.service", "agentd-archive.timer")

pytestmark = pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")


def _installed_copy(folder: Path, drop_in_extra: str = "") -> Path:
    """The units with ExecStart pointing at this venv's agentd (verify wants an executable)."""
    agentd = Path(sys.executable).parent / "agentd"
    assert os.access(agentd, os.X_OK), agentd
    for name in UNITS:
        text = (REPO / "systemd" / name).read_text()
        (folder / name).write_text(text.replace("/usr/bin/agentd", str(agentd)))
    drop_in = folder / "agentd.service.d"
    drop_in.mkdir()
    (drop_in / "local.conf").write_text((REPO / "systemd" / "agentd.service.d" / "local.conf.example").read_text() + drop_in_extra)
    (drop_in / "credentials.conf").write_text((REPO / "systemd" / "agentd.service.d" / "credentials.conf.example").read_text())
    return folder


def _verify(folder: Path) -> subprocess.CompletedProcess:
    # SYSTEMD_UNIT_PATH: verify by name, so the drop-in folder beside the unit is read too
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{folder}:", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *UNITS], cwd=folder, env=env, capture_output=True, text=True, timeout=60
    )


def test_units_verify_without_a_warning(tmp_path):
    done = _verify(_installed_copy(tmp_path))
    assert done.returncode == 0 and done.stdout.strip() == "" and done.stderr.strip() == "", done.stdout + done.stderr


def test_verify_would_catch_a_mistake(tmp_path):
    # the same check on a drop-in with a typo: proves the test above can fail
    done = _verify(_installed_copy(tmp_path, "WatchdogSecs=10s\n"))
    assert "Unknown key" in done.stderr and "WatchdogSecs" in done.stderr


def _directives(name: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (REPO / "systemd" / name).read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_service_is_a_hardened_notify_service():
    unit = _directives("agentd.service")
    expected = {
        "Type": "notify", "Restart": "on-failure", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes", "StateDirectory": "agentd", "ConfigurationDirectory": "agentd",
        "RuntimeDirectory": "agentd", "ExecStart": "/usr/bin/agentd run", "User": "agentd",
    }
    for key, value in expected.items():
        assert unit.get(key) == [value], key
    assert unit["WatchdogSec"]
    # no credential a fresh install lacks (systemd 252 would refuse to start: 243/CREDENTIALS);
    # the secret comes with the documented drop-in
    assert "LoadCredential" not in unit and "LoadCredential" not in _directives("agentd-archive.service")
    drop_in = (REPO / "systemd" / "agentd.service.d" / "credentials.conf.example").read_text()
    assert "\nLoadCredential=client-secret:/etc/agentd/credentials/client-secret\n" in drop_in
    # reload through the control socket: no /bin/kill (procps) on a minimal Debian
    assert unit["ExecReload"] == ["/usr/bin/agentd reload"]
    assert set(unit["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    assert unit["SystemCallFilter"] == ["@system-service", "~@privileged @resources"] and unit["SystemCallErrorNumber"] == ["EPERM"]
    archive = _directives("agentd-archive.service")
    assert archive["ExecStart"] == ["/usr/bin/agentd archive --since 24h --mos-below 3.5"]
    timer = _directives("agentd-archive.timer")
    assert timer["Persistent"] == ["true"] and timer["OnCalendar"]
