"""The pure figures of media.path against values computed by hand (no network)."""

from __future__ import annotations

import math

import pytest

from agentd.model import Status
from agentd_plugins.media import MediaSettings, measured_outcome, thin_series
from agentd_plugins.media.engine import AudioFlow, PathRun, ProbeRecord
from agentd_plugins.media.quality import e_model, interarrival_jitter, longest_run, one_crossing_loss, percentile


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


def test_one_crossing_loss_undoes_two_independent_crossings():
    assert one_crossing_loss(0.0) == 0.0
    assert one_crossing_loss(1.0) == 1.0
    # 10 % per crossing: the echo through the relay survives 0.9^4 = 65.61 %; one crossing each way 0.9^2
    assert one_crossing_loss(1 - 0.9**4) == pytest.approx(1 - 0.9**2)
    assert one_crossing_loss(0.36) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="between 0 and 1"):
        one_crossing_loss(1.5)


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


def test_longest_run():
    assert longest_run([False, True, True, False, True, True, True]) == 3
    assert longest_run([]) == 0
    assert longest_run([False, False]) == 0


def _flow() -> AudioFlow:
    return AudioFlow(frames_received=50, peak_level=0.2, packets_sent=50, packets_lost=0, rtcp_rtt_ms=1.0, rtcp_jitter_ms=0.1)


def _run(count: int, *, lost_every: int = 0, echo_ms: float = 40.0, transport: str = "udp") -> PathRun:
    records = []
    for seq in range(count):
        lost = lost_every and seq % lost_every == 0
        records.append(ProbeRecord(seq, seq * 0.02, None if lost else echo_ms / 2, None if lost else echo_ms))
    return PathRun(transport, f"turn:relay.example:3478?transport={transport}", 30.0, tuple(records), _flow(), _flow())


def test_measured_outcome_converts_loss_and_rtt_to_the_softphones_path():
    attempts = [{"transport": "udp", "server": "turn:relay.example:3478", "ok": True}]
    outcome = measured_outcome(_run(100, lost_every=5), attempts, MediaSettings())
    m, d = outcome.metrics, outcome.details
    assert d["raw_loss_pct"] == 20.0 and d["probes_received"] == 80
    assert m["loss_pct"] == pytest.approx(100 * (1 - math.sqrt(0.8)), abs=0.01)  # 10.56
    assert m["rtt_ms"] == 20.0 and m["max_loss_burst"] == 1
    expected = e_model(20.0, 0.0, m["loss_pct"])
    assert m["mos"] == pytest.approx(expected.mos, abs=0.01) and m["r_factor"] == pytest.approx(expected.r_factor, abs=0.1)
    assert outcome.status is Status.WARN  # MOS 3.8: below warn_mos 4.0, above fail_mos 3.5


def test_tcp_after_a_failed_udp_is_a_warning_that_says_so():
    attempts = [
        {"transport": "udp", "server": "turn:r:3478?transport=udp", "ok": False, "reason": "timeout", "error": "no answer"},
        {"transport": "tcp", "server": "turn:r:3478?transport=tcp", "ok": True},
    ]
    outcome = measured_outcome(_run(50, transport="tcp"), attempts, MediaSettings())
    assert outcome.status is Status.WARN
    assert outcome.summary.startswith("UDP relay failed (timeout); media over TCP")
    assert outcome.details["transport"] == "tcp" and outcome.details["attempts"] == attempts


def test_clean_udp_passes_and_heavy_loss_fails():
    attempts = [{"transport": "udp", "server": "x", "ok": True}]
    assert measured_outcome(_run(50), attempts, MediaSettings()).status is Status.PASS
    assert measured_outcome(_run(50, lost_every=2), attempts, MediaSettings()).status is Status.FAIL


def test_series_is_thinned_for_charts_and_keeps_every_loss():
    records = _run(1000, lost_every=7).records
    series = thin_series(records)
    assert len(series) <= 300
    assert sum(p["lost"] for p in series) == sum(1 for r in records if r.echo_rtt_ms is None)
    assert series[0]["t_ms"] == 0.0 and series[1]["t_ms"] == pytest.approx(80.0)  # groups of 4 probes
    short = thin_series(records[:10])
    assert len(short) == 10 and "lost" not in short[1] and short[0]["rtt_ms"] is None


def test_fail_mos_above_warn_mos_is_a_configuration_error_naming_the_key(agentd_env):
    from tests.conftest import OFFLINE_GENESYS

    agentd_env.write_config(OFFLINE_GENESYS + "[media]\nfail_mos = 4.2\nwarn_mos = 4.0\n")
    proc = agentd_env.run("check", "--only", "media.path", "--no-daemon")
    assert proc.returncode == 2
    assert "media.fail_mos" in proc.stderr and "Traceback" not in proc.stderr
