"""systemd/agentd-hub.service verifies and is a hardened notify service with credentials."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_the_hub_unit_verifies_and_is_hardened(tmp_path):
    text = (REPO / "systemd" / "agentd-hub.service").read_text()
    (tmp_path / "agentd-hub.service").write_text(text.replace("/usr/bin/agentd", str(Path(sys.executable).parent / "agentd")))
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:", "SYSTEMD_LOG_COLOR": "0"}
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", "agentd-hub.service"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stdout + done.stderr
    lines = [line.strip() for line in text.splitlines() if "=" in line and not line.lstrip().startswith("#")]
    for wanted in ("Type=notify", "NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=", "PrivateTmp=yes"):
        assert wanted in lines, wanted
    assert any(line.startswith("LoadCredential=hub-database-url:") for line in lines)
    assert any(line.startswith("ExecStart=/usr/bin/agentd hub serve") for line in lines)
