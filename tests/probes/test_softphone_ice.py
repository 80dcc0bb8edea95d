"""The softphone's own STUN/TURN servers, end to end: the fake Genesys hands out (over a real
XMPP-over-WebSocket streaming channel on loopback) a REAL coturn that checks TURN REST
credentials (``--use-auth-secret``), and agentd's ICE checks test exactly those."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import time
from pathlib import Path
from typing import Iterator

import pytest

from agentd.app import App
from agentd.model import Status
from agentd.testing import coturn as coturn_mod
from agentd.testing.coturn import Coturn
from agentd.testing.fake_genesys import AGENT_USER_ID, LOGIN_CLIENT_ID, agent_refresh_token
from agentd.testing.fake_genesys.streaming import jabber_id, streaming_hub
from agentd_plugins.genesys.tokens import StoredLogin, TokenStore

from agentd.testing.fake_genesys.fixtures import fake_genesys  # noqa: F401  (a fixture)

from .conftest import LOOPBACK_SECOND_IP

TURN_SECRET = "coturn-rest-secret-5b2e9d"
ICE_CHECKS = ("stun", "nat", "turn.udp", "turn.tcp", "turn.tls", "udp.ports", "media.path")
LOGIN_HINT = "run `agentd login` to test the softphone's own STUN/TURN servers"


@pytest.fixture
def rest_coturn(tmp_path: Path) -> Iterator[Coturn]:
    """A real coturn with TURN REST authentication (as Genesys' TURN servers check credentials)."""
    if not coturn_mod.available():
        pytest.skip("coturn's turnserver is not installed (tests/run installs the Debian package coturn)")
    with Coturn.start(tmp_path / "turn", listen_ip="127.0.0.1", second_ip=LOOPBACK_SECOND_IP, auth_secret=TURN_SECRET) as server:
        yield server


def log_in(fake, *, station_force_turn: bool = False) -> str:
    """What `agentd login` leaves behind: the agent's refresh token, owner-only in the state folder.
    (The scenario's station has webRtcForceTurn on; most tests want the softphone not relay-only.)"""
    for station in fake.state.stations.values():
        station["webRtcForceTurn"] = station_force_turn
    refresh = agent_refresh_token(fake.state, reused=True)  # several runs (and processes) reuse the one token
    TokenStore().save(StoredLogin(refresh_token=refresh, client_id=LOGIN_CLIENT_ID, login_base=fake.url, user_id=AGENT_USER_ID, user_name="Alex Agent"))
    return refresh


def genesys_only(fake, turn: Coturn, *, extra: str = "", streaming_base_url: str | None = None) -> str:
    """Only [genesys] (plus the test CA that signs the coturn's certificate, and short probes)."""
    return (
        "[genesys]\n"
        f'api_base_url = "{fake.url}"\nlogin_base_url = "{fake.url}"\n'
        f'streaming_base_url = "{streaming_base_url or fake.ws_url}"\n'
        f'client_id = "{LOGIN_CLIENT_ID}"\ntimeout_s = 3.0\n'
        "[ice]\ntimeout_s = 5.0\n"
        f'ca_file = "{turn.certs.ca}"\n'
        "[media]\nduration_s = 1.0\n"
        "[websocket]\nping_count = 2\nping_interval_s = 0.05\npong_timeout_s = 0.5\n"
        f"{extra}"
    )


async def run(agentd_env, text: str, *only: str, deadline_s: float = 30.0):
    app = App.load(agentd_env.write_config(text))
    return await app.run_check("preshift", only=only, deadline_s=deadline_s)


def secrets_of(fake) -> list[str]:
    """Every secret that must stay out of output, logs, spool and report."""
    hub = streaming_hub(fake)
    found = [value for pair in hub.issued for value in pair]
    found += list(fake.state.tokens) + list(fake.state.refresh_tokens)
    for token in fake.state.tokens:  # the SASL payload carries the token too
        found.append(base64.b64encode(f"\0{jabber_id(AGENT_USER_ID)}\0authKey:{token}".encode()).decode())
    return [s for s in found if s]


async def test_with_only_genesys_and_a_login_every_ice_check_tests_the_softphones_servers(fake_genesys, rest_coturn, agentd_env):
    hub = streaming_hub(fake_genesys)
    hub.use_coturn(rest_coturn)
    log_in(fake_genesys)
    agentd_env.write_config(genesys_only(fake_genesys, rest_coturn))
    args = ["check", "--json", "--no-daemon", "--upload", "--log-level", "debug", "--deadline", "30"] + [f"--only={c}" for c in (*ICE_CHECKS, "websocket")]
    done = await asyncio.to_thread(agentd_env.run, *args, timeout=90)
    report = json.loads(done.stdout)
    rows = {c["id"]: c for c in report["checks"]}
    for check_id in ICE_CHECKS:
        row = rows[check_id]
        assert row["status"] == "pass", (check_id, row["summary"], row["duration_ms"], done.stderr[-3000:])
        assert row["details"]["ice_sources"] == ["genesys"], check_id
        assert "the softphone's servers from Genesys" in row["summary"], check_id
    assert {a["server"] for a in rows["turn.udp"]["details"]["allocations"]} == {f"turn:127.0.0.1:{rest_coturn.port}"}
    assert rows["turn.tls"]["details"]["allocations"][0]["server"] == f"turns:127.0.0.1:{rest_coturn.tls_port}?transport=tcp"
    media = rows["media.path"]["details"]
    # media through Genesys' relay over UDP, as ICE picks it, and a call that connected
    assert media["server"] == f"turn:127.0.0.1:{rest_coturn.port}" and media["transport"] == "udp", media.get("attempts")
    assert media["call"]["connected"] is True and media["probes_received"] > 0 and media["attempts"][0]["source"] == "genesys"
    assert rows["media.path"]["metrics"]["mos"] >= 4.0 and "ended_early" not in media
    assert rows["nat"]["details"]["mapping"] == "endpoint-independent"  # two STUN endpoints handed out
    discovery = rows["stun"]["details"]["discovery"][0]
    assert discovery["source"] == "genesys" and discovery["ok"] and not discovery["cached"]
    # the streaming channel in the websocket check: phases and XMPP ping round trips
    (xmpp,) = [t for t in rows["websocket"]["details"]["targets"] if t.get("xmpp")]
    assert xmpp["ok"] and xmpp["xmpp_pongs_received"] == 2 and len(xmpp["xmpp_ping_rtts_ms"]) == 2
    assert all(xmpp["phases"][p] is not None for p in ("dns_ms", "tcp_ms", "upgrade_ms", "sasl_ms", "bind_ms"))
    # one discovery (two extdisco IQs), every channel closed by agentd, never a presence
    assert hub.extdisco_requests == 2
    assert hub.open_sockets() == [] and hub.client_closes == hub.connections == 2 and hub.presences == 0
    # no secret anywhere: stdout, stderr (debug logs), state (spool, reports, logs) but the two owner-only files
    secrets = secrets_of(fake_genesys)
    assert len(secrets) >= 4
    texts = {"stdout": done.stdout, "stderr": done.stderr}
    private = {"genesys-ice-servers.json", "genesys-token.json"}
    for path in agentd_env.root.rglob("*"):
        if path.is_file() and path.name not in private and "turn" not in path.parts:
            texts[str(path)] = path.read_bytes().decode("utf-8", "replace")
    assert any("spool" in name or "reports" in name for name in texts), sorted(texts)  # the spool was written and read
    for name, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret in {name}"
    for name in private:
        (path,) = agentd_env.root.rglob(name)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, name
    # a second run uses the cached list: no new discovery
    again = await run(agentd_env, genesys_only(fake_genesys, rest_coturn), "turn.udp", "stun")
    assert again.check("turn.udp").status is Status.PASS and again.check("stun").details["discovery"][0]["cached"] is True
    assert hub.extdisco_requests == 2


async def test_expired_cached_credentials_are_fetched_again_and_the_run_passes(fake_genesys, rest_coturn, agentd_env):
    hub = streaming_hub(fake_genesys)
    hub.use_coturn(rest_coturn)
    hub.credential_ttl_s = 62  # the cache keeps it until a minute before: 2 s
    log_in(fake_genesys)
    text = genesys_only(fake_genesys, rest_coturn)
    first = await run(agentd_env, text, "turn.udp")
    assert first.check("turn.udp").status is Status.PASS
    assert hub.extdisco_requests == 2
    await asyncio.sleep(2.5)
    second = await run(agentd_env, text, "turn.udp", "turn.tcp")
    assert second.check("turn.udp").status is Status.PASS and second.check("turn.tcp").status is Status.PASS
    assert second.check("turn.udp").details["discovery"][0]["cached"] is False
    assert hub.extdisco_requests == 4  # fetched once more, shared by both checks


async def test_coturn_really_refuses_expired_rest_credentials(rest_coturn):
    from agentd.config import Secret
    from agentd_plugins.ice import IceEndpoint
    from agentd_plugins.ice.probes import turn_allocation
    from agentd_plugins.ice.urls import parse_ice_url

    url = parse_ice_url(rest_coturn.turn_udp_url)
    for ttl, ok in ((-5, False), (60, True)):
        username, password = rest_coturn.rest_credentials(ttl_s=ttl)
        found = await turn_allocation(IceEndpoint(url=url, username=username, credential=Secret(password)), timeout_s=2)
        assert found.ok is ok and (ok or found.reason == "auth"), (ttl, found)


async def test_rejected_credentials_are_fetched_again_once_never_a_config_verdict(fake_genesys, rest_coturn, agentd_env):
    hub = streaming_hub(fake_genesys)
    hub.use_coturn(rest_coturn)
    hub.bad_credentials_times = 1  # the first list is signed with a secret the TURN server does not know
    log_in(fake_genesys)
    text = genesys_only(fake_genesys, rest_coturn)
    report = await run(agentd_env, text, "turn.udp", "turn.tcp", "media.path")
    for check_id in ("turn.udp", "turn.tcp", "media.path"):
        assert report.check(check_id).status is Status.PASS, (check_id, report.check(check_id).summary)
    assert all(a["refetched"] for a in report.check("turn.udp").details["allocations"])
    assert hub.extdisco_requests == 4  # once, and once more for every check together
    assert not any(v.code == "config.turn_auth_failed" for v in report.verdicts)
    # rejected every time: the rows fail, still no config verdict (agentd's configuration is not at fault)
    hub.bad_credentials_times = 10
    TokenStore().path.parent.joinpath("genesys-ice-servers.json").unlink()
    report = await run(agentd_env, text, "turn.udp")
    row = report.check("turn.udp")
    assert row.status is Status.FAIL and row.details["reason"] == "auth" and row.details["source"] == "genesys"
    assert "handed out by Genesys" in row.summary
    assert not any(v.code == "config.turn_auth_failed" for v in report.verdicts)


async def test_force_turn_is_relay_only_and_the_report_says_so(fake_genesys, rest_coturn, agentd_env):
    hub = streaming_hub(fake_genesys)
    hub.use_coturn(rest_coturn, stun=False)  # an empty STUN answer: Force TURN
    log_in(fake_genesys)
    report = await run(agentd_env, genesys_only(fake_genesys, rest_coturn), "stun", "nat", "turn.udp", "media.path")
    for check_id in ("stun", "nat"):
        row = report.check(check_id)
        assert row.status is Status.SKIP and row.details["reason"] == "relay_only" and row.details["relay_only"] is True
        assert "relay-only" in row.summary and "Force TURN" in row.summary
    media = report.check("media.path")
    assert media.status is Status.PASS and "relay-only" in media.summary and media.details["relay_only"] is True
    assert report.check("turn.udp").status is Status.PASS


async def test_the_stations_force_turn_is_relay_only_too(fake_genesys, rest_coturn, agentd_env):
    streaming_hub(fake_genesys).use_coturn(rest_coturn)  # STUN servers handed out, but the station forces TURN
    log_in(fake_genesys, station_force_turn=True)
    report = await run(agentd_env, genesys_only(fake_genesys, rest_coturn), "stun", "nat")
    for check_id in ("stun", "nat"):
        row = report.check(check_id)
        assert row.status is Status.SKIP and row.details["reason"] == "relay_only" and "webRtcForceTurn" in row.summary
    assert report.check("stun").details["discovery"][0]["station_force_turn"] is True


async def test_without_a_login_the_ice_rows_say_to_log_in(fake_genesys, rest_coturn, agentd_env):
    streaming_hub(fake_genesys).use_coturn(rest_coturn)
    report = await run(agentd_env, genesys_only(fake_genesys, rest_coturn), *ICE_CHECKS)
    for check_id in ICE_CHECKS:
        row = report.check(check_id)
        assert row.status is Status.SKIP and LOGIN_HINT in row.summary, (check_id, row.summary)
    assert streaming_hub(fake_genesys).connections == 0


async def test_sasl_refused_is_platform_auth_failed_saying_to_log_in(fake_genesys, rest_coturn, agentd_env):
    hub = streaming_hub(fake_genesys)
    hub.use_coturn(rest_coturn)
    hub.refuse_sasl = True
    log_in(fake_genesys)
    report = await run(agentd_env, genesys_only(fake_genesys, rest_coturn), "turn.udp", "stun", "websocket")
    row = report.check("turn.udp")
    assert row.status is Status.ERROR and row.details["reason"] == "auth" and "agentd login" in row.summary
    (verdict,) = [v for v in report.verdicts if v.code == "platform.auth_failed"]
    assert "agentd login" in verdict.next_step and "check:turn.udp" in verdict.evidence
    assert not any(v.code == "config.turn_auth_failed" for v in report.verdicts)
    assert not report.ready


@pytest.mark.parametrize("how", ["silent", "unreachable"])
async def test_a_silent_or_unreachable_streaming_host_ends_in_time_with_a_signaling_verdict(fake_genesys, rest_coturn, agentd_env, how):
    hub = streaming_hub(fake_genesys)
    hub.use_coturn(rest_coturn)
    log_in(fake_genesys)
    base = None
    if how == "silent":
        hub.silent = True
    else:
        base = f"ws://127.0.0.1:{coturn_mod.free_port('127.0.0.1')}"
    text = genesys_only(fake_genesys, rest_coturn, streaming_base_url=base)
    text = text.replace("[ice]\n", "[ice]\ndiscovery_timeout_s = 1.5\n").replace("[websocket]\n", "[websocket]\nconnect_timeout_s = 1.5\n")
    started = time.monotonic()
    report = await run(agentd_env, text, "turn.udp", "stun", "media.path", "websocket", deadline_s=12)
    elapsed = time.monotonic() - started
    assert elapsed < 12
    for check_id in ("turn.udp", "stun", "media.path"):
        row = report.check(check_id)
        assert row.status is Status.ERROR and row.details["reason"] == ("timeout" if how == "silent" else "refused"), (check_id, row.summary)
        assert "could not be fetched" in row.summary
    assert report.check("websocket").status is Status.FAIL
    assert any(v.code == "signaling.websocket_unreachable" for v in report.verdicts), [v.code for v in report.verdicts]


async def test_malformed_xml_is_an_error_row_without_a_traceback(fake_genesys, rest_coturn, agentd_env):
    hub = streaming_hub(fake_genesys)
    hub.use_coturn(rest_coturn)
    hub.malformed_at = "extdisco"
    log_in(fake_genesys)
    agentd_env.write_config(genesys_only(fake_genesys, rest_coturn))
    done = await asyncio.to_thread(agentd_env.run, "check", "--json", "--no-daemon", "--only=turn.udp", "--only=stun", timeout=60)
    report = json.loads(done.stdout)
    for row in report["checks"]:
        assert row["status"] == "error" and "malformed XML" in row["summary"] and row["details"]["reason"] == "protocol"
    assert "Traceback" not in done.stdout + done.stderr
    assert done.returncode == 1


async def test_both_sources_are_tested_and_each_row_names_its_source(fake_genesys, rest_coturn, agentd_env):
    hub = streaming_hub(fake_genesys)
    hub.use_coturn(rest_coturn)
    log_in(fake_genesys)
    username, password = rest_coturn.rest_credentials(user="customer", ttl_s=3600)
    own = f'[[ice.servers]]\nurls = ["{rest_coturn.turn_udp_url}"]\nusername = "{username}"\ncredential = "{password}"\n'
    text = genesys_only(fake_genesys, rest_coturn).replace("[media]\n", own + "[media]\n")
    report = await run(agentd_env, text, "turn.udp")
    row = report.check("turn.udp")
    assert row.status is Status.PASS, row.summary
    assert [a["source"] for a in row.details["allocations"]] == ["genesys", "config"]
    assert row.details["ice_sources"] == ["genesys", "config"]
    assert "the softphone's servers from Genesys and [[ice.servers]]" in row.summary
    # source = "config": only the customer's own, no discovery at all
    report = await run(agentd_env, text.replace("[ice]\n", '[ice]\nsource = "config"\n'), "turn.udp")
    assert [a["source"] for a in report.check("turn.udp").details["allocations"]] == ["config"]
    assert hub.extdisco_requests == 2


async def test_a_server_that_stops_answering_pings_is_named_within_two_pings(fake_genesys, rest_coturn, agentd_env):
    hub = streaming_hub(fake_genesys)
    log_in(fake_genesys)
    hub.pongs_left = 1  # answers the first ping, then never again
    text = genesys_only(fake_genesys, rest_coturn).replace("ping_count = 2", "ping_count = 5")
    report = await run(agentd_env, text, "websocket")
    result = report.check("websocket")
    (row,) = [t for t in result.details["targets"] if t.get("xmpp")]
    assert result.status is Status.FAIL and row["reason"] == "no_pong"
    assert row["xmpp_pings_sent"] == 3 and row["xmpp_pongs_received"] == 1 and row["missed_pongs"] == 2
    assert "stopped answering XMPP pings" in row["error"] and "too many missed pongs" in row["error"]
    assert any(v.code == "signaling.websocket_keepalive_timeout" for v in report.verdicts)
    assert hub.open_sockets() == []


async def test_in_the_daemon_discovery_closes_its_own_channel_and_the_monitor_keeps_its_own(fake_genesys, rest_coturn, agentd_env, tmp_path):
    """The daemon does not share a channel between discovery and the notifications monitor:
    each discovery opens the agent's streaming channel and closes it at once."""
    from agentd.daemon import Daemon
    from agentd.testing.fake_genesys.notifications import hub_of

    streaming = streaming_hub(fake_genesys)
    streaming.use_coturn(rest_coturn)
    log_in(fake_genesys)
    app = App.load(agentd_env.write_config(genesys_only(fake_genesys, rest_coturn, extra="[schedule]\ntimes = []\n")))
    daemon = Daemon(app, control_path=tmp_path / "control.sock")
    serving = asyncio.create_task(daemon.serve())
    try:
        for _ in range(100):  # bounded: 10 s for the monitor's channel to open
            if hub_of(fake_genesys).open_sockets():
                break
            await asyncio.sleep(0.1)
        assert len(hub_of(fake_genesys).open_sockets()) == 1
        report = await daemon.run_check("preshift", trigger="schedule", only=["stun", "turn.udp"], deadline_s=30)
        assert report.check("turn.udp").status is Status.PASS and report.check("turn.udp").details["ice_sources"] == ["genesys"]
        await asyncio.sleep(0.1)
        assert streaming.connections == 1 and streaming.client_closes == 1 and streaming.open_sockets() == []
        assert len(hub_of(fake_genesys).open_sockets()) == 1  # the monitor's own channel is untouched
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(serving, 15) == 0
