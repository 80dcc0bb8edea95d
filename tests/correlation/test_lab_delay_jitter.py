"""Delay, jitter and lossy lines in the lab: media.path's figures against the truth the delay
stage recorded (agentd/testing/impair.py, on the router's upstream), and the verdicts.

One run each, with bands a single run holds; benchmarks/jitter.py judges the same cases
over 20 runs (benchmarks/README.md).
"""

from __future__ import annotations

import pytest

from agentd.testing.invariants import assert_every_bad_check_explained
from tests.conftest import OFFLINE_GENESYS
from tests.probes.conftest import lab_coturn, lab_unavailable, netlab  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.lab, pytest.mark.coturn]

ALL = ("stun", "turn.udp", "turn.tcp", "turn.tls", "udp.ports", "media.path", "host")


def lab_config(turn, thresholds: str = "") -> str:
    return OFFLINE_GENESYS + turn.ice_toml() + "\n[media]\nconnect_timeout_s = 20.0\n" + (f"\n[thresholds]\n{thresholds}" if thresholds else "")


def checked_in_namespace_with(config_file: str, only: list[str]) -> dict:
    """The checks ``only`` as ``agentd check`` runs them (rules included), in this namespace."""
    import asyncio
    from pathlib import Path

    from agentd.app import App

    app = App.load(Path(config_file))
    return asyncio.run(app.run_check("preshift", only=tuple(only))).to_dict()


def test_jitter_reads_true_and_is_named_as_jitter(netlab, lab_coturn, agentd_env):  # noqa: F811
    # the line: each packet an independent uniform 0-18 ms on one crossing, RFC 3550 jitter 6 ms
    config = agentd_env.write_config(lab_config(lab_coturn, "jitter_ms = 4.0\n"))
    # a second measurement only when the first read off the truth: a test worker beside this
    # one can stall agentd's reads for 100 ms (seen at load 10: rtt_p95 106 ms, jitter 13 ms
    # against 5.6 applied); an estimator that is wrong reads off the truth both times
    for _attempt in range(2):
        with netlab.impair("up", delay_ms=20, jitter_ms=18) as stage:
            report = netlab.call_in_agent(checked_in_namespace_with, str(config), ["media.path", "host"], timeout=120)
            truth = stage.stats()
        [media] = [c for c in report["checks"] if c["id"] == "media.path"]
        applied = truth.jitter_ms(min_packets=10)
        if abs(media["metrics"]["jitter_ms"] - applied) <= 0.3 * applied:
            break

    assert media["details"]["transport"] == "udp", media["summary"]
    # 18 / 3 = 6 while a stream's packets stay 20 ms apart; a loaded machine's bunched sends
    # wait for the packet ahead (no reordering) and bring it lower: the truth is what was applied
    assert 2.5 < applied < 7.5
    assert abs(media["metrics"]["jitter_ms"] - applied) <= 0.3 * applied, (media["metrics"], applied)
    # the running estimate from 0 reads low on a short pre-shift; it is kept beside
    assert media["details"]["jitter_running_ms"] < media["metrics"]["jitter_ms"]
    # the lab's own leg RTT is under a millisecond: the truth is the delay the stage applied
    assert abs(media["metrics"]["rtt_ms"] - truth.delay_median_ms) <= 5.0 + 0.05 * truth.delay_median_ms
    assert media["status"] == "warn" and "(above 4 ms)" in media["summary"]
    assert_every_bad_check_explained(report)
    codes = {v["code"]: v for v in report["verdicts"]}
    assert "network.jitter" in codes and "network.packet_loss" not in codes
    assert codes["network.jitter"]["summary"].startswith("Jitter on the agent's path")


def test_delay_with_loss_is_congestion(netlab, lab_coturn, agentd_env):  # noqa: F811
    config = agentd_env.write_config(lab_config(lab_coturn))
    netlab.set_loss(5, 5, protocol="udp")
    with netlab.impair("up", delay_ms=200):
        report = netlab.call_in_agent(checked_in_namespace_with, str(config), ["media.path", "host"], timeout=120)

    [media] = [c for c in report["checks"] if c["id"] == "media.path"]
    assert media["details"]["transport"] == "udp", media["summary"]
    assert abs(media["metrics"]["rtt_ms"] - 200.0) <= 15.0
    assert_every_bad_check_explained(report)
    assert "network.isp_congestion" in {v["code"] for v in report["verdicts"]}


def test_a_line_losing_every_protocol_never_blames_the_tcp_fallback(netlab, lab_coturn, agentd_env):  # noqa: F811
    config = agentd_env.write_config(lab_config(lab_coturn))
    for protocol in ("udp", "tcp"):
        netlab.set_loss(20, 20, protocol=protocol)

    report = netlab.call_in_agent(checked_in_namespace_with, str(config), list(ALL), timeout=120)

    assert_every_bad_check_explained(report)
    codes = {v["code"] for v in report["verdicts"]}
    assert "network.turn_fallback_blocked" not in codes, report["verdicts"]
    checks = {c["id"]: c for c in report["checks"]}
    for cid in ("turn.tcp", "turn.tls"):
        # at 20 % each way most runs see a lost SYN on one of them; when one does, it says so
        assert checks[cid]["status"] in ("pass", "fail"), checks[cid]
        if checks[cid]["status"] == "fail":
            assert "network.packet_loss" in codes or "network.isp_congestion" in codes
