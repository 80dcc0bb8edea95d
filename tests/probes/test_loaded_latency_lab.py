"""``path.load`` in the network lab: a tbf-bloated uplink names ``network.bufferbloat`` with
its grade; a clean link names nothing. The benchmark (benchmarks/bufferbloat.py) holds the
same over 20 runs per case; these are the standing few."""

from __future__ import annotations

import json
import sys

import pytest

from agentd.testing.bloat import clear_rate, limit_rate, load_service

from .helpers import config_text

pytestmark = [pytest.mark.lab, pytest.mark.coturn, pytest.mark.slow]

CAP_MB = 16


def _run(lab, agentd_env) -> dict:
    proc = lab.run_in_agent([sys.executable, "-m", "agentd", "check", "--profile", "full", "--only", "path.load", "--json"],
                            env=agentd_env.env, cwd=agentd_env.root, timeout=90)
    assert proc.stdout, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.fixture
def lab_load(netlab, lab_coturn, agentd_env):
    with load_service(netlab, agentd_env.env) as (url, proc):
        agentd_env.write_config(config_text(lab_coturn.ice_toml(), f'[loaded_latency]\nurl = "{url}"\nupload_cap_mb = {CAP_MB}\n'))
        yield netlab


def test_a_bloated_uplink_names_bufferbloat_with_its_grade(lab_load, agentd_env):
    truth = limit_rate(lab_load, rate_kbit=4000, queue_ms=300).queue_ms
    assert truth == pytest.approx(300.0)
    added = []
    for _ in range(3):
        report = _run(lab_load, agentd_env)
        (check,) = report["checks"]
        assert check["status"] == "warn", check["summary"]
        assert check["details"]["probe_kind"] == "stun"
        assert check["details"]["grade"] in ("C", "D", "F")
        assert check["metrics"]["uploaded_bytes"] <= CAP_MB * 2**20
        (verdict,) = [v for v in report["verdicts"] if v["code"] == "network.bufferbloat"]
        assert verdict["evidence"] == ["check:path.load"] and f"grade {check['details']['grade']}" in verdict["summary"]
        assert "SQM" in verdict["next_step"] and "uploads" in verdict["next_step"]
        assert [v["code"] for v in report["verdicts"]] == ["network.bufferbloat"]  # the warn row is explained
        added.append(check["metrics"]["added_delay_ms"])
    assert sum(1 for a in added if abs(a - truth) <= 0.25 * truth) >= 2, added


def test_a_clean_link_names_nothing(lab_load, agentd_env):
    clear_rate(lab_load)
    for _ in range(2):
        report = _run(lab_load, agentd_env)
        (check,) = report["checks"]
        assert check["status"] == "pass", check["summary"]
        assert check["metrics"]["uploaded_bytes"] <= CAP_MB * 2**20
        assert not report["verdicts"]
