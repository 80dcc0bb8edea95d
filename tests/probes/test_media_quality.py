"""The pure figures of media.path against values computed by hand (no network)."""

from __future__ import annotations

import statistics

import pytest

from agentd.model import Status
from agentd_plugins.media import MediaSettings, max_burst, measured_outcome, stream_jitter, thin_series
from agentd_plugins.media.engine import AudioFlow, CallResult
from agentd_plugins.media.quality import decide_loss, e_model, interarrival_jitter, mean_jitter, percentile, send_offsets_ms, udp_relay_race_lost, wilson_interval
from agentd_plugins.media.relay_echo import EchoRecord, EchoRun


@pytest.mark.parametrize(
    ("rtt_ms", "jitter_ms", "loss_pct", "r_factor", "mos"),
    [
        # eff = 0/2 + 0 + 10 = 10; R = 93.2 - 10/40 = 92.95
        # MOS = (1 + 3.25325 + 7e-6 * 92.95 * 32.95 * 7.05) * 5/4.5 = 4.40439 * 1.1111
        (0.0, 0.0, 0.0, 92.95, 4.893772),
        # eff = 50 + 10 + 10 = 70; R = 93.2 - 1.75 - 2.5*2 = 86.45
        # MOS = (1 + 3.02575 + 7e-6 * 86.45 * 26.45 * 13.55) * 5/4.5 = 4.24263 * 1.1111
        (100.0, 5.0, 2.0, 86.45, 4.714038),
        # eff = 200 + 40 + 10 = 250 >= 160: R = 93.2 - (250 - 120)/10 = 80.2
        # MOS = (1 + 2.807 + 7e-6 * 80.2 * 20.2 * 19.8) * 5/4.5 = 4.03154 * 1.1111
        (400.0, 20.0, 0.0, 80.2, 4.479486),
        # eff = 160 exactly takes the second branch: 93.2 - 40/10 = 89.2 (the branches meet there)
        (300.0, 0.0, 0.0, 89.2, None),
        # 50 % loss: R = 92.95 - 125 < 0 counts as 0; MOS = 1 * 5/4.5
        (0.0, 0.0, 50.0, 0.0, 5.0 / 4.5),
    ],
)
def test_e_model_matches_hand_computed_values(rtt_ms, jitter_ms, loss_pct, r_factor, mos):
    quality = e_model(rtt_ms, jitter_ms, loss_pct)
    assert quality.r_factor == pytest.approx(r_factor, abs=1e-9)
    if mos is not None:
        assert quality.mos == pytest.approx(mos, abs=1e-5)


def test_mos_falls_as_each_impairment_grows():
    base = e_model(40, 2, 0).mos
    assert e_model(400, 2, 0).mos < base
    assert e_model(40, 40, 0).mos < base
    assert e_model(40, 2, 5).mos < base


def test_wilson_interval_against_hand_computed_values():
    # 0 of 100: the upper end is z^2 / (n + z^2) = 3.8415 / 103.8415
    assert wilson_interval(0, 100) == (0.0, pytest.approx(3.841459 / 103.841459, rel=1e-5))
    # 10 of 100: centre (0.1 + 1.9207/100) / 1.038415, half 1.96 sqrt(0.0009 + 0.00009604) / 1.038415
    low, high = wilson_interval(10, 100)
    assert low == pytest.approx(0.05523, abs=1e-4) and high == pytest.approx(0.17437, abs=1e-4)
    assert wilson_interval(5, 5)[1] == 1.0 and wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(6, 5)


def test_loss_decision_needs_enough_legs_and_a_side_95_percent_sure():
    # none lost: the one-sided 95 % bound 2.706 / (n + 2.706) passes 1 % at n = 268
    assert decide_loss(0, 260, threshold=0.01, precision=0.025).side == "undecided"
    clean = decide_loss(0, 270, threshold=0.01, precision=0.025)
    assert clean.side == "below" and clean.done and clean.bound < 0.01
    # 19 % lost: clearly above, but the interval is wider than +-2.5 points until ~1040 legs
    lossy = decide_loss(38, 200, threshold=0.01, precision=0.025)
    assert lossy.side == "above" and not lossy.precise and not lossy.done
    assert not decide_loss(190, 1000, threshold=0.01, precision=0.025).done  # +-2.5 at the 21.5 % end needs ~1040
    assert decide_loss(209, 1100, threshold=0.01, precision=0.025).done
    # 17 of 323 (5.3 %) looks precise by its own width (4.9 points), but a truth at its upper
    # end (8.3 %) would be wider: not yet (stopping there biased low estimates at 5 % loss)
    assert not decide_loss(17, 323, threshold=0.01, precision=0.025).precise
    # at the threshold itself: never sure of either side
    assert decide_loss(10, 1000, threshold=0.01, precision=0.025).side == "undecided"
    # too few legs decide nothing, however clean
    assert decide_loss(0, 50, threshold=0.5, precision=0.5, min_tried=100).side == "undecided"


def test_percentile_interpolates():
    assert percentile([4, 1, 3, 2], 50) == 2.5
    assert percentile(list(range(1, 101)), 95) == pytest.approx(95.05)
    assert percentile([7], 95) == 7
    with pytest.raises(ValueError):
        percentile([], 50)


def test_interarrival_jitter_is_rfc3550():
    # D = 2, 2, 4: J = 2/16 = 0.125; + (2 - 0.125)/16 = 0.2421875; + (4 - 0.2421875)/16
    assert interarrival_jitter([10, 12, 10, 14]) == pytest.approx(0.2421875 + (4 - 0.2421875) / 16)
    assert interarrival_jitter([5]) == 0.0
    assert interarrival_jitter([5, 5, 5]) == 0.0


def _flow() -> AudioFlow:
    return AudioFlow(frames_received=50, peak_level=0.2, packets_sent=50, packets_lost=0, rtcp_rtt_ms=1.0, rtcp_jitter_ms=0.1)


def _run(count: int, *, lost_every: int = 0, leg_ms: float = 20.0, transport: str = "udp", streams: int = 2) -> EchoRun:
    """``count`` probes round-robin over 2 x ``streams`` streams; every ``lost_every``-th loses its first leg."""
    records = []
    for k in range(count):
        lost = bool(lost_every) and k % lost_every == 0
        records.append(EchoRecord(k % (2 * streams), k // (2 * streams), k * 0.005, None if lost else leg_ms, None if lost else leg_ms))
    tried = count + sum(1 for r in records if r.forward_ms is not None)
    lost_legs = sum(1 for r in records if r.forward_ms is None)
    decision = decide_loss(lost_legs, tried, threshold=0.01, precision=0.025)
    return EchoRun(transport, f"turn:relay.example:3478?transport={transport}", streams, tuple(records), decision, "decided", 30.0, 700.0)


def _call(transport: str = "udp", connected: bool = True) -> CallResult:
    if not connected:
        return CallResult(transport, False, None, "ICE checking, DTLS/SRTP connecting", reason="timeout", error="call not connected within 3.0 s")
    return CallResult(transport, True, 120.0, "ICE completed, DTLS/SRTP connected", audio_a_to_b=_flow(), audio_b_to_a=_flow())


def test_measured_outcome_counts_legs_and_gives_the_interval():
    attempts = [{"transport": "udp", "server": "turn:relay.example:3478", "ok": True}]
    outcome = measured_outcome(_run(100, lost_every=5), _call(), attempts, MediaSettings())
    m, d = outcome.metrics, outcome.details
    # 20 first legs lost of 100; the 80 that arrived were echoed and all came back: 20 of 180 legs
    assert d["legs_tried"] == 180 and d["legs_lost"] == 20 and d["probes_sent"] == 100 and d["probes_received"] == 80
    assert m["loss_pct"] == pytest.approx(100 * 20 / 180, abs=0.01)
    low, high = wilson_interval(20, 180)
    assert d["loss_ci95_pct"] == [round(low * 100, 2), round(high * 100, 2)]
    assert d["raw_loss_pct"] == 20.0  # the echo: 80 of 100 came back
    assert d["loss_decision"]["side"] == "above" and d["loss_decision"]["threshold_pct"] == 1.0
    assert m["rtt_ms"] == 20.0 and d["echo_rtt_ms"]["median"] == 40.0
    # every 5th probe of 4 round-robin streams: stream 0 loses seq 0, 5, 10, ...; never two in a row
    assert m["max_loss_burst"] == 1
    expected = e_model(20.0, 0.0, m["loss_pct"])
    assert m["mos"] == pytest.approx(expected.mos, abs=0.01) and m["r_factor"] == pytest.approx(expected.r_factor, abs=0.1)
    assert outcome.status is Status.WARN  # 11 % loss: MOS 3.7, below warn_mos 4.0, above fail_mos 3.5
    assert d["call"]["connected"] is True and d["audio"]["a_to_b"]["frames_received"] == 50


def test_tcp_after_a_failed_udp_is_a_warning_that_carries_the_udp_figures():
    attempts = [
        {"transport": "udp", "server": "turn:r:3478?transport=udp", "ok": False, "reason": "timeout", "error": "none of 75 packets crossed"},
        {"transport": "tcp", "server": "turn:r:3478?transport=tcp", "ok": True},
    ]
    udp = {"ok": False, "reason": "timeout", "legs_tried": 75, "legs_lost": 75, "loss_pct": 100.0}
    outcome = measured_outcome(_run(300, transport="tcp"), _call("tcp"), attempts, MediaSettings(), udp=udp)
    assert outcome.status is Status.WARN
    assert outcome.summary.startswith("UDP relay failed (timeout: 75 of 75 packets lost); media over TCP")
    assert "losses show as delay" in outcome.summary  # not a clean 0 % line
    assert outcome.details["transport"] == "tcp" and outcome.details["attempts"] == attempts
    assert outcome.details["udp"] == udp


def test_clean_udp_passes_heavy_loss_fails_and_a_call_that_did_not_connect_warns():
    attempts = [{"transport": "udp", "server": "x", "ok": True}]
    assert measured_outcome(_run(300), _call(), attempts, MediaSettings()).status is Status.PASS
    assert measured_outcome(_run(300, lost_every=2), _call(), attempts, MediaSettings()).status is Status.FAIL
    no_call = measured_outcome(_run(300), _call(connected=False), attempts, MediaSettings())
    assert no_call.status is Status.WARN and "the call did not connect (timeout" in no_call.summary
    assert no_call.details["call"]["reason"] == "timeout" and no_call.details["audio"]["a_to_b"] is None


def test_jitter_per_stream_and_bursts_per_stream():
    # one stream, transits 10, 12, 10, 14 ms on the first legs, echo legs flat: the mean |D| over every pair
    records = [EchoRecord(0, i, i * 0.02, t, 5.0) for i, t in enumerate([10, 12, 10, 14])]
    assert stream_jitter(records) == pytest.approx((2 + 2 + 4 + 0 + 0 + 0) / 6)
    lost = [EchoRecord(0, i, i * 0.02, None if i in (1, 2, 3) else 10.0, None) for i in range(6)]
    other = [EchoRecord(1, i, i * 0.02, None if i == 4 else 10.0, None) for i in range(6)]
    interleaved = [r for pair in zip(lost, other) for r in pair]
    assert max_burst(interleaved) == 3  # three in a row on stream 0, even though stream 1 arrived between


def test_series_is_thinned_for_charts_and_keeps_every_loss():
    records = _run(1000, lost_every=7).records
    series = thin_series(records)
    assert len(series) <= 300
    assert sum(p["lost"] for p in series) == sum(1 for r in records if r.forward_ms is None)
    assert series[0]["t_ms"] == 0.0 and series[1]["t_ms"] == pytest.approx(20.0)  # groups of 4 probes, 5 ms apart
    short = thin_series(records[:10])
    assert len(short) == 10 and short[0]["rtt_ms"] is None and short[0]["lost"] == 1 and "lost" not in short[1]


def test_fail_mos_above_warn_mos_is_a_configuration_error_naming_the_key(agentd_env):
    from tests.conftest import OFFLINE_GENESYS

    agentd_env.write_config(OFFLINE_GENESYS + "[media]\nfail_mos = 4.2\nwarn_mos = 4.0\n")
    proc = agentd_env.run("check", "--only", "media.path", "--no-daemon")
    assert proc.returncode == 2
    assert "media.fail_mos" in proc.stderr and "Traceback" not in proc.stderr


def test_legs_read_while_the_process_was_held_up_leave_delay_but_not_loss():
    records = [EchoRecord(0, i, i * 0.02, 5.0, 5.0) for i in range(50)]
    records[10] = EchoRecord(0, 10, 0.2, 400.0, 5.0, stalled=True)  # read 400 ms late: this process, not the network
    attempts = [{"transport": "udp", "server": "x", "ok": True}]
    run = EchoRun("udp", "x", 1, tuple(records), decide_loss(0, 100, threshold=0.01, precision=0.025), "cap", 10.0, 1000.0)
    outcome = measured_outcome(run, _call(), attempts, MediaSettings())
    assert outcome.metrics["rtt_max_ms"] == 5.0 and outcome.metrics["jitter_ms"] == 0.0
    assert outcome.details["stalled_probes"] == 1 and outcome.details["legs_tried"] == 100
    # busy all along (every arrival read late) and the rest lost: the figures still come out
    busy = [EchoRecord(0, i, i * 0.02, None, None) if i % 2 else EchoRecord(0, i, i * 0.02, 30.0, 30.0, stalled=True) for i in range(50)]
    run = EchoRun("udp", "x", 1, tuple(busy), decide_loss(25, 75, threshold=0.01, precision=0.025), "cap", 10.0, 1000.0)
    assert measured_outcome(run, _call(), attempts, MediaSettings()).metrics["rtt_ms"] == 30.0


def test_libwebrtc_stun_retransmissions_leave_at_250_ms_doubling_to_8_s():
    # STUN_INITIAL_RTO 250 ms, doubled per send, capped at STUN_MAX_RTO 8 s; 9 sends in all
    assert send_offsets_ms() == [0, 250, 750, 1750, 3750, 7750, 15750, 23750, 31750]


@pytest.mark.parametrize("loss", [0.0, 0.01, 0.0975, 0.19, 0.36])
def test_udp_relay_loses_the_race_when_any_allocation_packet_is_lost_and_tcp_is_fast(loss):
    # TCP connected after 60 ms (< 250 ms): the UDP allocation wins only with its four
    # packets (two requests, two answers; each transaction's round trip loses `loss`) all through
    lost = udp_relay_race_lost(loss, udp_rtt_ms=2.0, tcp_ready_ms=60.0)
    assert lost == pytest.approx(1 - (1 - loss) ** 2, abs=1e-9)


def test_a_slow_tcp_path_leaves_time_for_one_udp_retransmission():
    # TCP ready after 400 ms: one retransmission (250 ms) in either transaction still wins;
    # losing means two lost sends in one transaction, or one lost in each (250 + 250 > 400 - 4)
    loss = 0.19
    q = 1 - loss
    won = q * q * (1 + 2 * loss)  # no retransmission, or one in exactly one of the two transactions
    assert udp_relay_race_lost(loss, udp_rtt_ms=2.0, tcp_ready_ms=400.0) == pytest.approx(1 - won, abs=1e-9)
    # a UDP path slower than the TCP one loses even without loss
    assert udp_relay_race_lost(0.0, udp_rtt_ms=50.0, tcp_ready_ms=60.0) == 1.0
    with pytest.raises(ValueError, match="loss must be within 0..1"):
        udp_relay_race_lost(1.5, udp_rtt_ms=1.0, tcp_ready_ms=1.0)


def test_measured_udp_names_the_chance_a_relayed_softphone_call_goes_over_tcp():
    attempts = [{"transport": "udp", "server": "turn:relay.example:3478", "ok": True}]
    run = _run(600, lost_every=5, leg_ms=2.0)  # 11.1 % of legs lost
    outcome = measured_outcome(run, _call(), attempts, MediaSettings(), fallback=("tcp", 30.0))
    race = outcome.details["relay_race"]
    loss = outcome.metrics["loss_pct"] / 100
    assert race["fallback"] == "tcp" and race["fallback_ready_ms"] == 34.0  # allocated in 30 ms, a check through the relay and back
    assert race["tcp_chance_pct"] == pytest.approx(100 * (1 - (1 - loss) ** 2), abs=0.1)
    low, high = outcome.details["loss_ci95_pct"]
    assert race["tcp_chance_ci95_pct"] == [pytest.approx(100 * (1 - (1 - low / 100) ** 2), abs=0.1), pytest.approx(100 * (1 - (1 - high / 100) ** 2), abs=0.1)]
    assert f"would go over TCP in ~{race['tcp_chance_pct']:.0f}% of calls" in outcome.summary
    # a failing MOS is named beside the MOS, not after the race's sentence
    heavy = measured_outcome(_run(600, lost_every=3, leg_ms=2.0), _call(), attempts, MediaSettings(), fallback=("tcp", 30.0))
    assert heavy.status is Status.FAIL and f"MOS {heavy.metrics['mos']:.2f} (below 3.5); a relayed softphone call" in heavy.summary
    # a clean line: the chance is 0 and the summary does not mention it; no TCP relay: nothing to race
    clean = measured_outcome(_run(300, leg_ms=2.0), _call(), attempts, MediaSettings(), fallback=("tcp", 30.0))
    assert clean.details["relay_race"]["tcp_chance_pct"] == 0.0 and "would go over" not in clean.summary
    assert "relay_race" not in measured_outcome(run, _call(), attempts, MediaSettings()).details
    # measured over TCP already: no race to report
    assert "relay_race" not in measured_outcome(_run(300, transport="tcp"), _call("tcp"), attempts, MediaSettings(), fallback=("tcp", 30.0)).details


def test_mean_jitter_is_unbiased_where_the_running_estimate_has_not_converged():
    import random

    rng = random.Random(3)
    # a clean pre-shift's ~270 legs over 16 leg streams: 17 packets each, one-way delays uniform
    # 0-18 ms: RFC 3550 jitter 18 / 3 = 6 ms
    streams = [[rng.uniform(0, 18) for _ in range(17)] for _ in range(16)]
    assert mean_jitter(streams) == pytest.approx(6.0, rel=0.1)
    running = statistics.fmean(interarrival_jitter(s) for s in streams)
    assert running < 0.8 * mean_jitter(streams)  # starts at 0: after 17 packets 1 - (15/16)^16 = 64 % of the way
    assert mean_jitter([[5.0]]) is None and mean_jitter([]) is None


def test_jitter_above_the_limit_warns_and_the_summary_says_so():
    attempts = [{"transport": "udp", "server": "x", "ok": True}]
    records = [EchoRecord(i % 2, i // 2, i * 0.01, 20.0 + (6.0 if (i // 2) % 2 else 0.0), 20.0) for i in range(200)]
    run = EchoRun("udp", "x", 1, tuple(records), decide_loss(0, 400, threshold=0.01, precision=0.025), "decided", 10.0, 1000.0)
    quiet = measured_outcome(run, _call(), attempts, MediaSettings())
    assert quiet.status is Status.PASS and quiet.metrics["jitter_ms"] == 3.0  # |D| 6 ms on the first legs, 0 on the echoes
    loud = measured_outcome(run, _call(), attempts, MediaSettings(), jitter_limit_ms=2.0)
    assert loud.status is Status.WARN and "jitter 3.0 ms (above 2 ms)" in loud.summary
    assert loud.details["jitter_limit_ms"] == 2.0 and loud.details["jitter_running_ms"] > 0


def test_kernel_receive_stamp_is_when_the_datagram_arrived_not_when_it_was_read():
    import socket
    import sys
    import time

    from agentd.osdeps import rxstamp

    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("127.0.0.1", 0))
        enabled = rxstamp.enable(receiver)
        if not sys.platform.startswith("linux"):
            assert not enabled and rxstamp.last_arrival(receiver) is None
            return
        assert enabled
        time.sleep(0.05)  # the kernel turns its receive stamps on from a work queue, a moment later
        sent = time.monotonic()
        sender.sendto(b"probe", receiver.getsockname())
        time.sleep(0.2)  # a busy process reads it late
        reading = time.monotonic()
        receiver.recv(64)
        arrived = rxstamp.last_arrival(receiver)
        assert arrived is not None and sent - 0.005 <= arrived <= reading - 0.15  # the arrival, not the read 200 ms later
    finally:
        receiver.close()
        sender.close()
