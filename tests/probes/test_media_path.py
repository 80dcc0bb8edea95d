"""media.path against a real coturn on loopback: media flows, and each way it cannot.

Most cases run the check in this process (App.run_check) for speed; one runs the CLI to
prove the report and exit code end to end.
"""

from __future__ import annotations

import time

import pytest

from agentd.model import Status
from tests.probes.helpers import run_checks
from tests.probes.media_fixtures import media_check, media_config, relays_gone

pytestmark = pytest.mark.coturn


async def test_media_flows_over_udp_with_sane_figures(agentd_env, coturn):
    config = agentd_env.write_config(media_config(coturn))

    result = (await run_checks(config, "media.path"))["media.path"]

    assert result.status is Status.PASS, result.summary
    m, d = result.metrics, result.details
    assert d["transport"] == "udp" and d["server"] == coturn.turn_udp_url
    assert [(a["transport"], a["ok"], a["reason"]) for a in d["attempts"]] == [("udp", True, None)]
    # a clean path: the sequential test stops once "below 1 %" is 95 % sure (~270 legs), well before the 5 s cap
    decision = d["loss_decision"]
    assert decision["side"] == "below" and decision["stopped"] == "decided" and decision["bound_pct"] < 1.0
    assert 268 <= d["legs_tried"] < 2000 and d["legs_lost"] == 0 and d["probes_sent"] == d["probes_received"]
    assert d["loss_ci95_pct"][0] == 0.0 and 0 < d["loss_ci95_pct"][1] < 1.5
    assert m["loss_pct"] == 0.0 and d["raw_loss_pct"] == 0.0 and m["max_loss_burst"] == 0
    assert 0 < m["rtt_ms"] <= m["rtt_p95_ms"] <= m["rtt_max_ms"] and m["rtt_ms"] < 50  # loopback (a busy machine adds its own)
    assert m["mos"] > 4.5
    # the call set up through the relay and carried real audio both ways (not silence)
    assert d["call"]["connected"] is True, d["call"]
    for direction in ("a_to_b", "b_to_a"):
        audio = d["audio"][direction]
        assert audio["frames_received"] > 0 and audio["peak_level"] > 0.05, audio
    assert len(d["series"]) == d["probes_sent"] and d["series"][0]["rtt_ms"] is not None
    assert m["upstream_loss_pct"] is None and m["downstream_loss_pct"] is None  # not separable here
    assert await relays_gone(coturn) == [], "a TURN allocation was left open"


async def test_full_profile_probes_for_its_fixed_time(agentd_env, coturn):
    config = agentd_env.write_config(media_config(coturn, media="full_duration_s = 1.0\nstreams = 1\n"))

    result = (await run_checks(config, "media.path", profile="full"))["media.path"]

    d = result.details
    assert d["loss_decision"]["stopped"] == "duration", d["loss_decision"]
    assert d["probes_sent"] == 100  # 1 s, one stream each way, every 20 ms


async def test_wrong_credentials_fail_with_auth_on_every_transport(agentd_env, coturn):
    config = agentd_env.write_config(media_config(coturn, password="not-the-password"))

    started = time.monotonic()
    result = (await run_checks(config, "media.path"))["media.path"]

    assert result.status is Status.FAIL
    assert "401" in result.summary and "credential" in result.summary
    assert result.details["reason"] == "auth"
    assert [(a["transport"], a["reason"]) for a in result.details["attempts"]] == [("udp", "auth"), ("tcp", "auth"), ("tls", "auth")]
    assert time.monotonic() - started < 2.0
    assert "not-the-password" not in repr(result)


async def test_tls_only_with_the_private_ca_carries_media_over_tls(agentd_env, coturn):
    config = agentd_env.write_config(media_config(coturn, urls=[coturn.turns_url], media="duration_s = 0.5\n"))

    result = (await run_checks(config, "media.path"))["media.path"]

    assert result.details["transport"] == "tls", result.summary
    assert result.status is Status.WARN and "over TLS" in result.summary  # a TCP relay adds delay
    assert "losses show as delay" in result.summary
    assert result.details["not_configured"] == ["udp", "tcp"]
    assert result.details["probes_received"] == result.details["probes_sent"] > 0


async def test_untrusted_certificate_is_named(agentd_env, coturn):
    config = agentd_env.write_config(media_config(coturn, urls=[coturn.turns_url], trust_ca=False))

    result = (await run_checks(config, "media.path"))["media.path"]

    assert result.status is Status.FAIL
    (attempt,) = result.details["attempts"]
    assert attempt["reason"] == "tls_untrusted" and "agentd test turn" in attempt["error"]


async def test_blackholed_relay_fails_within_its_deadline_and_nothing_hangs(agentd_env, coturn, silent_server):
    host, port = silent_server.host, silent_server.port
    config = agentd_env.write_config(
        media_config(coturn, urls=[f"turn:{host}:{port}?transport=udp", f"turn:{host}:{port}?transport=tcp"])
    )

    started = time.monotonic()
    found = await run_checks(config, "media.path")
    elapsed = time.monotonic() - started
    result = found["media.path"]

    assert result.status is Status.FAIL and result.details["reason"] == "timeout", result.summary
    assert result.details["transport"] is None
    assert [a["transport"] for a in result.details["attempts"]] == ["udp", "tcp"]
    # both allocations wait at once, under [ice] timeout_s (2 s): not aioice's 63.5 s, not 2 x 2 s
    assert elapsed < 3.0, elapsed
    blocked = [v for v in found["_report"].verdicts if v.code == "network.media_blocked"]
    assert blocked and "check:media.path" in blocked[0].evidence


async def test_a_dead_tls_relay_does_not_delay_media_over_a_good_udp_one(agentd_env, coturn, silent_server):
    urls = [coturn.turn_udp_url, f"turns:{silent_server.host}:{silent_server.port}?transport=tcp"]
    config = agentd_env.write_config(media_config(coturn, urls=urls, media="duration_s = 0.5\n"))

    result = (await run_checks(config, "media.path"))["media.path"]

    assert result.status is Status.PASS and result.details["transport"] == "udp", result.summary
    assert [a["transport"] for a in result.details["attempts"]] == ["udp"]
    # not waiting for the TLS allocation's 2 s deadline before probing over UDP
    assert result.details["setup_ms"] < 1500, result.details["setup_ms"]


async def test_closed_port_fails_fast_as_refused(agentd_env, coturn, closed_port):
    config = agentd_env.write_config(media_config(coturn, urls=[f"turn:127.0.0.1:{closed_port}?transport=tcp"]))

    started = time.monotonic()
    result = (await run_checks(config, "media.path"))["media.path"]

    assert result.status is Status.FAIL and result.details["reason"] == "refused"
    assert time.monotonic() - started < 1.0


async def test_no_turn_url_is_a_skip(agentd_env, coturn):
    config = agentd_env.write_config(media_config(coturn, urls=[coturn.stun_url]))

    result = (await run_checks(config, "media.path"))["media.path"]

    assert result.status is Status.SKIP and result.details["reason"] == "not_configured"


@pytest.mark.floor
def test_cli_report_exit_code_and_no_secret(agentd_env, coturn):
    agentd_env.write_config(media_config(coturn, media="duration_s = 0.5\n"))

    row, proc = media_check(agentd_env.run)

    assert proc.returncode == 0, proc.stderr[-2000:]
    assert row["status"] == "pass" and row["details"]["transport"] == "udp"
    assert set(row["metrics"]) >= {"rtt_ms", "rtt_p95_ms", "rtt_max_ms", "jitter_ms", "loss_pct", "max_loss_burst", "mos", "r_factor"}
    assert coturn.password not in proc.stdout + proc.stderr


async def test_call_without_a_relay_candidate_fails_at_once_instead_of_hanging_in_new(coturn, silent_server):
    """Below the allocations: aiortc alone would wait in "new" for ever."""
    import asyncio

    from agentd_plugins.media.engine import RelayTarget, run_call

    hold = asyncio.Event()
    hold.set()
    wrong = RelayTarget("turn:wrong", "udp", "127.0.0.1", coturn.port, coturn.username, "wrong-password")
    started = time.monotonic()
    call = await run_call(wrong, connect_timeout_s=2.0, connect_max_s=2.0, hold=hold)
    assert not call.connected and call.reason == "protocol" and "no relay candidate" in call.error
    assert time.monotonic() - started < 1.5

    silent = RelayTarget("turn:silent", "udp", silent_server.host, silent_server.port, "agent", "x")
    started = time.monotonic()
    call = await run_call(silent, connect_timeout_s=1.0, connect_max_s=1.0, hold=hold)
    assert not call.connected and call.reason == "timeout" and "within 1 s" in call.error
    assert time.monotonic() - started < 2.5  # the deadline, plus closing bounded to 1 s
