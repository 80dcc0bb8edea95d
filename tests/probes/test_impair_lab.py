"""The lab's delay and jitter stage (agentd/testing/impair.py): a userspace NFQUEUE stage on
the lab router, measured from the agent namespace with RTP-shaped packets and a UDP echo.

What is checked: the delay a packet really gets is what the stage says it applied (its
truth), the stage's jitter truth is the RFC 3550 figure of what the packets met, an RTP
stream is never reordered, two streams on one socket are delayed independently, loss
drops packets, and wrong input fails with a message. Bands are wide where the machine's
scheduling shows; benchmarks/jitter.py judges the distributions.
"""

from __future__ import annotations

import socket
import statistics
import struct
import sys
import threading
import time

import pytest

from agentd.testing.impair import ImpairError, Impairment, stream_key
from agentd.testing.netlab import SERVER_IP

pytestmark = [pytest.mark.lab]

ECHO_PORT = 9999
ECHO = (
    "import os, socket\n"
    # a real-time priority like the stage's: the machine's load is not what is measured
    "os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(5))\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    f"s.bind(('0.0.0.0', {ECHO_PORT}))\n"
    "while True:\n"
    "    d, a = s.recvfrom(2048)\n"
    "    s.sendto(d, a)\n"
)


def rtp_echo(count: int, interval_s: float, ssrcs: tuple[int, ...] = (0x1234,)) -> list[tuple[int, int, float]]:
    """In the agent namespace: ``count`` RTP packets per SSRC every ``interval_s`` to the echo;
    (ssrc, seq, round trip ms) in arrival order. Arrivals are the kernel's receive stamps
    (agentd.osdeps.rxstamp), so a busy test machine reading late is not measured."""
    from agentd.osdeps import rxstamp

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rxstamp.enable(sock)
    sock.settimeout(0.5)
    sock.connect((SERVER_IP, ECHO_PORT))
    sent: dict[tuple[int, int], float] = {}
    got: list[tuple[int, int, float]] = []
    done = threading.Event()

    def receive() -> None:
        while not done.is_set():
            try:
                data = sock.recv(2048)
            except (socket.timeout, OSError):
                continue
            now = rxstamp.last_arrival(sock) or time.monotonic()
            seq, ssrc = struct.unpack_from("!H", data, 2)[0], struct.unpack_from("!I", data, 8)[0]
            got.append((ssrc, seq, (now - sent[(ssrc, seq)]) * 1000.0))

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    start = time.monotonic()
    for seq in range(count):
        for k, ssrc in enumerate(ssrcs):
            at = start + seq * interval_s + k * interval_s / len(ssrcs)
            time.sleep(max(0.0, at - time.monotonic()))
            sent[(ssrc, seq)] = time.monotonic()
            sock.send(struct.pack("!BBHII", 0x80, 111, seq, seq * 960, ssrc) + bytes(80))
    time.sleep(1.0)
    done.set()
    reader.join(2.0)
    sock.close()
    return got


@pytest.fixture
def echo_lab(netlab):
    netlab.popen_in(netlab.server, [sys.executable, "-c", ECHO])
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and not netlab.call_in_agent(rtp_echo, 1, 0.01):
        time.sleep(0.1)
    return netlab


def mean_abs_d(values: list[float]) -> float:
    return statistics.mean(abs(b - a) for a, b in zip(values, values[1:]))


def test_delay_and_jitter_are_applied_and_the_truth_is_what_packets_met(echo_lab):
    base = statistics.median(r for _, _, r in echo_lab.call_in_agent(rtp_echo, 30, 0.02))
    with echo_lab.impair("up", delay_ms=80, jitter_ms=18) as stage:
        got = echo_lab.call_in_agent(rtp_echo, 150, 0.02)
        truth = stage.stats()
    rtts = [r for _, _, r in got]
    assert len(rtts) == 150 and truth.packets == 150 and truth.dropped == 0
    # the delay measured end to end is the delay the stage says it applied
    assert abs(statistics.median(rtts) - base - truth.delay_median_ms) < 2.0, (statistics.median(rtts), base, truth)
    assert 80.0 <= truth.delay_median_ms <= 98.0 + 2.0
    # 0-18 ms on a 20 ms stream: the delays stay independent, RFC 3550 jitter = 18 / 3
    assert 4.5 < truth.jitter_ms() < 7.5, truth
    assert abs(mean_abs_d(rtts) - truth.jitter_ms()) < 0.2 * truth.jitter_ms() + 0.3
    # no reordering within the stream
    assert [seq for _, seq, _ in got] == sorted(seq for _, seq, _ in got)


def test_two_streams_on_one_socket_are_delayed_independently_each_in_order(echo_lab):
    ssrcs = (0x5A6E0000, 0x5A6E0001)
    with echo_lab.impair("up", jitter_ms=60) as stage:
        got = echo_lab.call_in_agent(rtp_echo, 100, 0.02, ssrcs)
        truth = stage.stats()
    assert len(truth.streams) == 2 and {s.packets for s in truth.streams} == {100}
    per_stream = {ssrc: [seq for s, seq, _ in got if s == ssrc] for ssrc in ssrcs}
    for seqs in per_stream.values():
        assert seqs == sorted(seqs)  # each RTP stream in order
    # ...while the two streams overtake each other: they are not one FIFO
    arrival = [(s, seq) for s, seq, _ in got]
    overtaken = sum(1 for (s1, q1), (s2, q2) in zip(arrival, arrival[1:]) if s1 != s2 and q2 < q1)
    assert overtaken > 0
    # 0-60 ms is wider than the stream's 20 ms spacing: waiting for the packet ahead makes
    # consecutive delays alike, so the truth is below the independent 60 / 3 = 20 ms
    assert 8.0 < truth.jitter_ms() < 19.5, truth
    measured = statistics.mean(mean_abs_d([r for s, _, r in got if s == ssrc]) for ssrc in ssrcs)
    assert abs(measured - truth.jitter_ms()) < 0.2 * truth.jitter_ms()


def test_loss_and_changing_the_stage_on_the_fly(echo_lab):
    with echo_lab.impair("down", loss_pct=50, seed=7) as stage:
        got = echo_lab.call_in_agent(rtp_echo, 100, 0.005)
        first = stage.stats()
        assert first.packets == 100 and 30 <= first.dropped <= 70 and len(got) == 100 - first.dropped
        stage.set(loss_pct=0, delay_ms=30)
        stage.reset()
        got = echo_lab.call_in_agent(rtp_echo, 20, 0.02)
        second = stage.stats()
    assert len(got) == 20 and second.dropped == 0 and second.packets == 20
    assert second.delay_median_ms >= 30.0
    assert min(r for _, _, r in got) >= 30.0
    # the rule is gone with the stage: packets pass unimpaired again
    assert max(r for _, _, r in echo_lab.call_in_agent(rtp_echo, 10, 0.02)) < 25.0


def test_wrong_input_names_what_was_wrong(netlab):
    with pytest.raises(ImpairError, match="needs a link"):
        Impairment.start(netlab.router)
    with pytest.raises(ImpairError, match="protocol must be"):
        Impairment.start(netlab.router, iif="lan", protocol="sctp")
    with pytest.raises(ImpairError, match="jitter_ms out of range"):
        Impairment.start(netlab.router, iif="lan", jitter_ms=-1)
    with pytest.raises(ImpairError, match="not an interface name"):
        Impairment.start(netlab.router, iif="lan; rm")
    with pytest.raises(ValueError, match="direction"):
        with netlab.impair("sideways"):
            pass


def test_stream_key_reads_rtp_plain_and_inside_channel_data():
    def udp(payload: bytes) -> bytes:
        ip = bytes([0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0]) + bytes([10, 0, 0, 1]) + bytes([10, 0, 0, 2])
        return ip + struct.pack("!HHHH", 5000, 3478, 8 + len(payload), 0) + payload

    rtp = struct.pack("!BBHII", 0x80, 111, 1, 960, 0xABCD) + bytes(80)
    assert stream_key(udp(rtp), "stream")[-1] == 0xABCD
    assert stream_key(udp(struct.pack("!HH", 0x4000, len(rtp)) + rtp), "stream")[-1] == 0xABCD
    assert stream_key(udp(struct.pack("!HH", 0x4000, len(rtp)) + rtp), "flow")[-1] == 3478  # the 5-tuple only
    stun = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + bytes(12)
    assert stream_key(udp(stun), "stream")[-1] == 3478
    assert stream_key(b"junk", "stream") == ("other",)
