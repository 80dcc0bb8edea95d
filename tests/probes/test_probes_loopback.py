"""stun, nat, turn.* and udp.ports against a real coturn on loopback, a closed port and a
server that never answers: each case ends in the right status with the right reason, and
within its deadline."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentd.config import Secret
from agentd.model import Status
from agentd.testing.invariants import assert_every_bad_check_explained
from agentd_plugins.ice import IceEndpoint
from agentd_plugins.ice.probes import open_allocation
from agentd_plugins.ice.urls import parse_ice_url

from .helpers import MEDIA_CHECKS, checks_of, config_text, report_of, run_checks
from .media_fixtures import relay_ports

pytestmark = pytest.mark.coturn

PER_CHECK_LIMIT_MS = 3000  # the bound for a dead or blackholed server


def _ice_for(host: str, port: int) -> str:
    return (
        "[[ice.servers]]\n"
        f'urls = ["stun:{host}:{port}"]\n'
        "[[ice.servers]]\n"
        f'urls = ["turn:{host}:{port}?transport=udp", "turn:{host}:{port}?transport=tcp", "turns:{host}:{port}"]\n'
        'username = "agent"\ncredential = "whatever"\n'
    )


@pytest.mark.floor
async def test_all_good(agentd_env, coturn):
    config = agentd_env.write_config(config_text(coturn.ice_toml(extra='media_port_range = "40000-40999"\n')))
    found = await run_checks(config)
    for check_id in MEDIA_CHECKS:
        assert found[check_id].status is Status.PASS, (check_id, found[check_id].summary)
    stun = found["stun"]
    bindings = stun.details["bindings"]
    assert {(b["server"], b["transport"]) for b in bindings} == {
        (coturn.stun_url, "udp"), (coturn.stun_url, "tcp"), (coturn.stun_alt_url, "udp"), (coturn.stun_alt_url, "tcp"),
    }
    assert all(b["ok"] and b["mapped"].startswith("127.0.0.1:") and b["rtt_ms"] >= 0 for b in bindings)
    assert stun.metrics["rtt_ms"] is not None
    nat = found["nat"]
    assert nat.details["mapping"] == "endpoint-independent"
    assert len(nat.details["mapped_addresses"]) == 2 and len(set(nat.details["mapped_addresses"].values())) == 1
    assert nat.details["nat"] is False  # loopback: the mapped address is the local one
    assert {"private_only", "ipv6", "vpn_interfaces"} <= set(nat.details)
    for transport in ("udp", "tcp", "tls"):
        turn = found[f"turn.{transport}"]
        assert turn.details["relay"].startswith("127.0.0.1:")
        assert turn.details["server"] in coturn.turn_urls
        assert turn.metrics["alloc_ms"] > 0
    ports = found["udp.ports"]
    assert ports.metrics == {"answered_pct": 100.0, "ports_tried": 12}
    assert all(40000 <= row["local_port"] <= 40999 for row in ports.details["sample"])
    assert ports.details["answered"] == 12 and ports.details["range"] == "40000-40999"


async def test_wrong_password_is_auth_and_names_the_verdict(agentd_env, coturn):
    config = agentd_env.write_config(config_text(coturn.ice_toml(password="not-the-password")))
    found = await run_checks(config, "turn.udp", "turn.tcp", "turn.tls")
    for transport in ("udp", "tcp", "tls"):
        turn = found[f"turn.{transport}"]
        assert turn.status is Status.FAIL
        assert turn.details["reason"] == "auth"
        assert "401" in turn.summary and "not-the-password" not in turn.summary
        assert turn.duration_ms < 1000  # a 401 comes back at once; no waiting for a deadline
    report = found["_report"]
    codes = {v.code for v in report.verdicts}
    assert "config.turn_auth_failed" in codes
    assert "not-the-password" not in str(report.to_dict())


async def test_closed_port_is_refused_fast(agentd_env, closed_port):
    config = agentd_env.write_config(config_text(_ice_for("127.0.0.1", closed_port)))
    found = await run_checks(config, "stun", "turn.udp", "turn.tcp", "turn.tls", "udp.ports")
    for check_id in ("stun", "turn.udp", "turn.tcp", "turn.tls", "udp.ports"):
        check = found[check_id]
        assert check.status is Status.FAIL, (check_id, check.summary)
        assert check.details["reason"] == "refused", (check_id, check.details)
        # connected UDP sockets turn ICMP port-unreachable into an error at once
        assert check.duration_ms < 1000, (check_id, check.duration_ms)
    assert all(b["reason"] == "refused" for b in found["stun"].details["bindings"])


async def test_silent_server_is_timeout_within_the_deadline(agentd_env, silent_server):
    config = agentd_env.write_config(config_text(_ice_for(silent_server.host, silent_server.port)))
    found = await run_checks(config)
    for check_id in ("stun", "turn.udp", "turn.tcp", "turn.tls", "udp.ports"):
        check = found[check_id]
        assert check.status is Status.FAIL, (check_id, check.summary)  # not "error": it ended by its own deadline
        assert check.details["reason"] == "timeout", (check_id, check.details)
        assert check.duration_ms < PER_CHECK_LIMIT_MS, (check_id, check.duration_ms)
    nat = found["nat"]
    assert nat.status is Status.SKIP and nat.details["mapping"] == "unknown" and nat.details["reason"] == "timeout"
    assert nat.duration_ms < PER_CHECK_LIMIT_MS


async def test_untrusted_certificate_names_its_subject(agentd_env, coturn):
    config = agentd_env.write_config(config_text(coturn.ice_toml(trust_ca=False)))
    found = await run_checks(config, "turn.udp", "turn.tcp", "turn.tls")
    tls = found["turn.tls"]
    assert tls.status is Status.FAIL
    assert tls.details["reason"] == "tls_untrusted"
    assert tls.details["certificate"]["subject"] == coturn.certs.subject
    assert coturn.certs.subject in tls.summary
    assert tls.details["server"] == coturn.turns_url
    assert found["turn.udp"].status is Status.PASS and found["turn.tcp"].status is Status.PASS


async def _relays_gone(server, limit_s: float = 3.0) -> list[int]:
    """Wait (bounded) for coturn to free relays; it frees a deleted UDP allocation on its 1 s timer."""
    end = time.monotonic() + limit_s
    while (left := relay_ports(server)) and time.monotonic() < end:
        await asyncio.sleep(0.1)
    return left


async def test_every_allocation_is_released(agentd_env, coturn):
    """An allocation holds a relay socket on the server while open; released, the socket goes
    (an unreleased one would stay for its 600 s lifetime)."""
    for url in coturn.turn_urls:
        endpoint = IceEndpoint(parse_ice_url(url), coturn.username, Secret(coturn.password))
        async with open_allocation(endpoint, timeout_s=2, ca_file=coturn.certs.ca) as relay:
            assert int(relay.relayed.rpartition(":")[2]) in relay_ports(coturn)
        assert await _relays_gone(coturn) == [], url
    config = agentd_env.write_config(config_text(coturn.ice_toml()))
    found = await run_checks(config, "turn.udp", "turn.tcp", "turn.tls")
    assert all(found[f"turn.{t}"].status is Status.PASS for t in ("udp", "tcp", "tls"))
    assert await _relays_gone(coturn) == []


def test_preshift_with_every_server_blackholed_ends_within_8s(agentd_env, silent_server):
    agentd_env.write_config(config_text(_ice_for(silent_server.host, silent_server.port)))
    started = time.monotonic()
    proc = agentd_env.run("check", "--profile", "preshift", "--json", timeout=30)
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    report = report_of(proc.stdout)
    checks = checks_of(report)
    for check_id in ("stun", "turn.udp", "turn.tcp", "turn.tls", "udp.ports", "media.path"):
        assert checks[check_id]["status"] == "fail" and checks[check_id]["details"]["reason"] == "timeout"
    explained = assert_every_bad_check_explained(report)
    assert all("network.media_blocked" in explained[c] for c in ("stun", "turn.udp", "udp.ports", "media.path"))
    # each probe ends at its own 2 s deadline; the process's wall time (< 8 s) is a benchmark
    # figure (benchmarks/preshift.py, benchmarks/media_loss.py), not an assertion on a busy machine
    durations = {k: v["duration_ms"] for k, v in checks.items()}
    assert max(durations.values()) < 4000, durations
    assert elapsed < 20.0, f"the pre-shift profile took {elapsed:.1f} s with every ICE server blackholed"


async def test_unresolvable_server_is_dns(agentd_env):
    # names under .invalid never resolve (RFC 6761)
    config = agentd_env.write_config(config_text(_ice_for("turn.agentd-test.invalid", 3478)))
    found = await run_checks(config, "stun", "turn.udp", "turn.tcp", "turn.tls", "udp.ports")
    for check_id in ("stun", "turn.udp", "turn.tcp", "turn.tls", "udp.ports"):
        assert found[check_id].status is Status.FAIL, (check_id, found[check_id].summary)
        assert found[check_id].details["reason"] == "dns", (check_id, found[check_id].details)
        assert "turn.agentd-test.invalid" in found[check_id].summary


async def test_server_speaking_another_protocol_is_protocol(agentd_env):
    """A TCP server that answers like a web server, not TURN."""

    async def http_like(reader, writer):
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(http_like, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        config = agentd_env.write_config(
            config_text(f'[[ice.servers]]\nurls = ["turn:127.0.0.1:{port}?transport=tcp"]\nusername = "u"\ncredential = "p"\n')
        )
        found = await run_checks(config, "turn.tcp")
    finally:
        server.close()
    turn = found["turn.tcp"]
    assert turn.status is Status.FAIL and turn.details["reason"] == "protocol", turn.details
    assert turn.duration_ms < 1000


async def test_stun_answer_without_mapped_address_is_protocol(agentd_env):
    """A UDP server that answers every Binding with a success that lacks the mapped address,
    and sends a datagram of garbage first (ignored, not an answer)."""
    from aioice import stun

    class Broken(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            request = stun.parse_message(data)
            self.transport.sendto(b"\x01\x01\x00\x04garbage-garbage!!", addr)
            answer = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=request.transaction_id)
            self.transport.sendto(bytes(answer), addr)

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Broken, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        config = agentd_env.write_config(config_text(f'[ice]\nstun_tcp = false\n[[ice.servers]]\nurls = ["stun:127.0.0.1:{port}"]\n'))
        found = await run_checks(config, "stun", unexplained_ok=("stun",))  # a broken STUN server: no rule knows one
    finally:
        transport.close()
    stun_check = found["stun"]
    assert stun_check.status is Status.FAIL
    assert stun_check.details["reason"] == "protocol", stun_check.details
    assert "mapped address" in stun_check.summary


async def test_stuns_binding_over_tls_uses_the_configured_ca(agentd_env, coturn):
    stuns = f'[[ice.servers]]\nurls = ["stuns:127.0.0.1:{coturn.tls_port}"]\n'
    config = agentd_env.write_config(config_text(f'[ice]\nca_file = "{coturn.certs.ca}"\n' + stuns))
    trusted = (await run_checks(config, "stun"))["stun"]
    assert trusted.status is Status.PASS, trusted.summary
    assert [(b["transport"], b["ok"]) for b in trusted.details["bindings"]] == [("tls", True)]
    config = agentd_env.write_config(config_text(stuns))
    untrusted = (await run_checks(config, "stun", unexplained_ok=("stun",)))["stun"]
    assert untrusted.status is Status.FAIL and untrusted.details["reason"] == "tls_untrusted"


async def test_an_allocation_the_server_answered_is_given_patience_a_silent_one_is_not():
    """The deadline follows what the path shows (plugins/ice/probes.py: _race's ``more``)."""
    from agentd_plugins.ice.probes import _race

    never = asyncio.get_running_loop().create_future()
    # still retransmitting after the deadline, but the server has answered: waited for
    assert await _race(asyncio.sleep(0.3, result="allocated"), never, 0.05, patience_s=5.0, more=lambda: 5.0) == "allocated"
    # nothing ever answered: the deadline stands
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await _race(asyncio.sleep(5.0), never, 0.05, patience_s=5.0, more=lambda: 0.0)
    assert time.monotonic() - started < 2.0
    # patience is bounded too
    with pytest.raises(TimeoutError):
        await _race(asyncio.sleep(5.0), never, 0.05, patience_s=0.1, more=lambda: 5.0)
    never.cancel()
