"""turn.tcp / turn.tls on a line that loses SYNs: slow because of loss, not blocked.

In the lab: the router drops TCP SYNs to the TURN server in a fixed pattern (nftables'
``numgen inc``), so the outcome is known: every other SYN lost means the first of the
racing connections is lost and the second gets through within a few hundred ms (not
after the kernel's 1 s retransmission, nor after a 2 s deadline), and the summary says
the path loses packets; every SYN lost is a blocked port, with the attempts counted.
"""

from __future__ import annotations

import json

import pytest

from agentd.testing.invariants import assert_every_bad_check_explained
from agentd.testing.netlab import TABLE
from tests.probes.media_fixtures import lab_runner, media_config

pytestmark = [pytest.mark.lab, pytest.mark.coturn]

SYN = "tcp flags & (syn | ack) == syn"


def turn_tcp_row(netlab, agentd_env) -> dict:
    proc = lab_runner(netlab, agentd_env.env)("check", "--only", "turn.tcp", "--json", "--no-daemon", timeout=60)
    assert proc.stdout.strip(), proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert_every_bad_check_explained(report)
    [row] = [c for c in report["checks"] if c["id"] == "turn.tcp"]
    return row


def test_a_lost_syn_costs_one_racing_connection_not_the_deadline(netlab, lab_coturn, agentd_env):
    agentd_env.write_config(media_config(lab_coturn, ice="timeout_s = 2.0\n"))
    netlab.nft(netlab.router, f'add rule inet {TABLE} faults iifname "lan" {SYN} numgen inc mod 2 == 0 drop\n')

    row = turn_tcp_row(netlab, agentd_env)

    assert row["status"] == "pass", row["summary"]
    [allocation] = row["details"]["allocations"]
    assert allocation["connect_winner"] == 2 and allocation["connect_attempts"] >= 2 and allocation["connected"] is True
    assert allocation["connect_ms"] < 1000  # the second connection, not the first one's 1 s retransmission
    assert "slow because the path loses packets" in row["summary"] and "SYN or its answer was lost" in row["summary"]


def test_a_port_that_answers_no_syn_is_blocked_with_the_attempts_counted(netlab, lab_coturn, agentd_env):
    agentd_env.write_config(media_config(lab_coturn, ice="timeout_s = 2.0\n"))
    netlab.nft(netlab.router, f'add rule inet {TABLE} faults iifname "lan" {SYN} drop\n')

    row = turn_tcp_row(netlab, agentd_env)

    assert row["status"] == "fail" and row["details"]["reason"] == "timeout"
    assert "none of 8 TCP connections was answered" in row["summary"]
    [allocation] = row["details"]["allocations"]
    assert allocation.get("connected") is None and allocation["connect_attempts"] == 8
