"""media.path in the network lab: the agent behind a NAT router, coturn on the far side.

Real namespaces, veth pairs and nftables rules at the router (agentd/testing/netlab.py);
agentd runs as a process inside the agent namespace, as it would on the agent's PC.
"""

from __future__ import annotations

import json

import pytest

from tests.probes.media_fixtures import lab_runner, media_check, media_config

pytestmark = [pytest.mark.lab, pytest.mark.coturn]


def test_udp_dropped_at_the_router_media_runs_over_tcp_and_says_so(netlab, lab_coturn, agentd_env):
    agentd_env.write_config(media_config(lab_coturn, ice="timeout_s = 1.0\n", media="duration_s = 1.0\n"))
    netlab.drop_udp()

    row, proc = media_check(lab_runner(netlab, agentd_env.env))

    assert row["status"] == "warn", row["summary"]
    assert row["details"]["transport"] == "tcp"
    assert "over TCP" in row["summary"] and "UDP relay failed (timeout)" in row["summary"]
    udp, tcp = row["details"]["attempts"][:2]
    assert (udp["transport"], udp["ok"], udp["reason"]) == ("udp", False, "timeout")
    assert (tcp["transport"], tcp["ok"]) == ("tcp", True)
    assert row["details"]["probes_received"] > 0.9 * row["details"]["probes_sent"]
    # the UDP allocation's deadline, then a TCP connection and one second of probes
    assert row["duration_ms"] < 5000
    assert proc.returncode == 0, proc.stderr[-2000:]
    verdicts = {v["code"]: v for v in json.loads(proc.stdout)["verdicts"]}
    assert "check:media.path" in verdicts["network.turn_tcp_fallback"]["evidence"]


def test_ten_percent_udp_loss_each_way_is_the_softphones_round_trip_loss(netlab, lab_coturn, agentd_env):
    # 600 probes (3 s at 5 ms): the converted figure's standard error is about 1.2 points
    agentd_env.write_config(
        media_config(
            lab_coturn,
            urls=[lab_coturn.turn_udp_url],
            ice="timeout_s = 6.0\n",
            media="duration_s = 3.0\ninterval_ms = 5.0\nconnect_timeout_s = 25.0\n",
        )
    )
    netlab.set_loss(upstream_pct=10, downstream_pct=10, protocol="udp")

    row, proc = media_check(lab_runner(netlab, agentd_env.env), "--deadline", "40")
    print(row["status"], row["duration_ms"], row["metrics"], {k: row["details"].get(k) for k in ("raw_loss_pct", "connect_ms", "two_peer_loss_pct", "attempts")})

    assert row["details"].get("transport") == "udp", row
    metrics, details = row["metrics"], row["details"]
    assert details["probes_sent"] == 600
    # softphone: one crossing each way, 1 - 0.9^2 = 19 %; the raw echo crosses four times: 1 - 0.9^4 = 34 %
    assert 12.0 <= metrics["loss_pct"] <= 27.0, (metrics, details["raw_loss_pct"])
    assert 26.0 <= details["raw_loss_pct"] <= 43.0
    assert metrics["max_loss_burst"] >= 2
    assert metrics["mos"] < 3.5 and row["status"] == "fail"  # 19 % loss is not a usable call
    assert proc.returncode == 1
