"""The daemon on its own user, the agent's login handed over by `agentd login`, and the
softphone's own STUN/TURN servers in the daemon's scheduled pre-shifts.

Real users and processes (the helpers of test_daemon_login.py), the fake Genesys on
loopback whose extdisco hands out a REAL coturn checking TURN REST credentials
(``--use-auth-secret``). One daemon, never restarted: after the agent's login its
scheduled pre-shift runs stun, nat, turn.*, udp.ports and media.path against the servers
the fake handed out, each row naming Genesys; after `agentd logout` the next scheduled
pre-shift cannot (its rows say to run `agentd login`) and the monitor's subscription ends.

Scheduled runs come from ``[schedule]`` itself: a SIGHUP reload sets a slot a few seconds
ahead (``times`` plus this install's ``spread_s`` offset, computed from its install id),
so the scheduler starts the run on its own, without a test clock or a minute's wait.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest

from agentd.control import ControlClient
from agentd.schedule import spread_offset_s
from agentd.testing import coturn as coturn_mod
from agentd.testing.coturn import Coturn
from agentd.testing.fake_genesys import AGENT_USER_ID, LOGIN_CLIENT_ID
from agentd.testing.fake_genesys.streaming import streaming_hub

from .test_daemon_login import Box, Daemon, agent_login, box, subscribed_users, until  # noqa: F401  (box: a fixture)

two_users = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("useradd"),
    reason="needs root, setpriv and useradd to run the daemon and the CLI as two users",
)

TURN_SECRET = "daemon-ice-rest-secret-7c1f"
ICE_CHECKS = ("stun", "nat", "turn.udp", "turn.tcp", "turn.tls", "udp.ports", "media.path")
LOGIN_HINT = "run `agentd login` to test the softphone's own STUN/TURN servers"
INSTALL_ID = "agentd-2b7f0e4c-daemon-ice-test"
# dns, https and host would look beyond loopback; every ICE check stays on
OFF_LOOPBACK_PLUGINS = ["dns", "https", "host"]


@pytest.fixture
def rest_coturn(tmp_path: Path) -> Iterator[Coturn]:
    if not coturn_mod.available():
        pytest.skip("coturn's turnserver is not installed (tests/run installs the Debian package coturn)")
    with Coturn.start(tmp_path / "turn", listen_ip="127.0.0.1", second_ip="127.0.0.2", auth_secret=TURN_SECRET) as server:
        yield server


def near_slot(install_id: str, *, earliest: datetime, latest: datetime) -> tuple[str, int]:
    """A ``[schedule]`` time "HH:MM" (UTC) and ``spread_s`` whose slot for this install lands
    in ``[earliest, latest]``: the slot is the time plus the install's fixed offset."""
    for spread in range(60, 6 * 3600):
        offset = timedelta(seconds=spread_offset_s(install_id, spread))
        base = (earliest - offset).replace(second=0, microsecond=0)
        if base + offset < earliest:
            base += timedelta(minutes=1)
        if base + offset <= latest:
            return base.strftime("%H:%M"), spread
    raise AssertionError("no spread_s puts a slot in the window")  # ~1 in 10 values does


def config(fake, turn_ca: Path, *, times: list[str], spread_s: int = 0) -> str:
    return (
        "[agentd]\n"
        f"disable_plugins = {json.dumps(OFF_LOOPBACK_PLUGINS)}\n"
        'log_level = "info"\n'
        "[genesys]\n"
        f'api_base_url = "{fake.url}"\nlogin_base_url = "{fake.url}"\nclient_id = "{LOGIN_CLIENT_ID}"\n'
        "timeout_s = 5.0\n"
        "[ice]\ntimeout_s = 5.0\n"
        f'ca_file = "{turn_ca}"\n'
        "[media]\nduration_s = 1.0\n"
        "[notifications]\nbackoff_min_s = 0.1\nbackoff_max_s = 0.5\n"
        "[websocket]\nping_count = 1\n"
        "[daemon]\nstop_timeout_s = 3.0\n"
        f"[schedule]\ntimes = {json.dumps(times)}\nspread_s = {spread_s}\ntimezone = \"UTC\"\n"
        'weekdays = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]\n'
    )


async def scheduled_run(box: Box, daemon: Daemon, fake, turn_ca: Path) -> dict:
    """Reload the daemon with a slot 1.5-2.5 s ahead; the report of the run its scheduler starts.
    (A reload that comes late still runs it: the scheduler catches up a slot since its last look.)"""
    control = ControlClient(box.root / "run" / "control.sock")
    status = await control.status()
    runs, last = status["schedule"]["runs"], (status.get("last_report") or {}).get("id")
    now = datetime.now(timezone.utc)
    at, spread = near_slot(INSTALL_ID, earliest=now + timedelta(seconds=1.5), latest=now + timedelta(seconds=2.5))
    box.config.write_text(config(fake, turn_ca, times=[at], spread_s=spread))
    os.kill(daemon.proc.pid, signal.SIGHUP)

    async def ran() -> bool:
        status = await control.status()
        return status["schedule"]["runs"] > runs and (status.get("last_report") or {}).get("id") not in (None, last)

    assert await until(ran, 90), daemon.stderr()[-3000:]
    status = await control.status()
    assert status["schedule"]["runs"] == runs + 1 and status["schedule"]["spread_s"] == spread
    report = json.loads((box.root / "svc-state" / "last-report.json").read_text())
    assert report["id"] == status["last_report"]["id"]
    return report


@two_users
async def test_the_daemons_scheduled_preshift_tests_the_agents_softphone_servers_until_logout(fake_genesys, rest_coturn, box):
    hub = streaming_hub(fake_genesys)
    hub.use_coturn(rest_coturn)
    for station in fake_genesys.state.stations.values():
        station["webRtcForceTurn"] = False  # the scenario's station forces TURN; here the softphone is not relay-only
    ca = box.root / "turn-ca.pem"  # the daemon's user reads the test CA that signed the coturn's certificate
    shutil.copyfile(rest_coturn.certs.ca, ca)
    os.chmod(ca, 0o644)
    install_id = box.root / "svc-state" / "install-id"
    install_id.write_text(INSTALL_ID + "\n")
    shutil.chown(install_id, box.svc, box.group)
    box.config.write_text(config(fake_genesys, ca, times=[]))
    os.chmod(box.config, 0o644)

    daemon = Daemon(box)
    try:
        await daemon.ready()
        done = await agent_login(box, box.agent)
        assert done.returncode == 0 and "the agentd daemon now uses this login" in done.stdout, done.stdout + done.stderr
        assert await until(lambda: subscribed_users(fake_genesys) == {AGENT_USER_ID}), daemon.stderr()

        # the scheduled pre-shift: every ICE check against what extdisco handed out, over the agent's channel
        report = await scheduled_run(box, daemon, fake_genesys, ca)
        rows = {c["id"]: c for c in report["checks"]}
        for check_id in ICE_CHECKS:
            row = rows[check_id]
            assert row["status"] == "pass", (check_id, row["summary"], daemon.stderr()[-3000:])
            assert row["details"]["ice_sources"] == ["genesys"], check_id
            assert "the softphone's servers from Genesys" in row["summary"], check_id
        assert {a["server"] for a in rows["turn.udp"]["details"]["allocations"]} == {f"turn:127.0.0.1:{rest_coturn.port}"}
        assert {a["source"] for a in rows["turn.tcp"]["details"]["allocations"]} == {"genesys"}
        assert rows["turn.tls"]["details"]["allocations"][0]["server"] == f"turns:127.0.0.1:{rest_coturn.tls_port}?transport=tcp"
        assert rows["media.path"]["details"]["server"] == f"turn:127.0.0.1:{rest_coturn.port}"
        (discovery,) = rows["stun"]["details"]["discovery"]
        assert discovery["source"] == "genesys" and discovery["ok"] and not discovery["cached"]
        # the credentials coturn accepted are the ones the fake issued to this agent's channel
        assert hub.extdisco_requests == 2 and len(hub.issued) == 1
        assert hub.authenticated_users and set(hub.authenticated_users) == {AGENT_USER_ID}
        await asyncio.sleep(0.1)
        assert hub.open_sockets() == [] and hub.presences == 0  # discovery's channels closed; never a presence
        assert subscribed_users(fake_genesys) == {AGENT_USER_ID}  # the monitor's own channel untouched
        cache = box.root / "svc-state" / "genesys-ice-servers.json"
        assert cache.exists() and cache.stat().st_mode & 0o077 == 0

        # logout: the monitor's subscription ends, and the next scheduled pre-shift cannot test them
        done = await box.run(box.agent, "logout")
        assert done.returncode == 0 and "no longer holds the login of Alex Agent" in done.stdout, done.stdout + done.stderr
        assert await until(lambda: subscribed_users(fake_genesys) == set()), daemon.stderr()
        assert not cache.exists()  # the logged-out agent's TURN credentials go with the login
        connections = hub.connections
        report = await scheduled_run(box, daemon, fake_genesys, ca)
        rows = {c["id"]: c for c in report["checks"]}
        for check_id in ICE_CHECKS:
            row = rows[check_id]
            assert row["status"] == "skip" and LOGIN_HINT in row["summary"], (check_id, row["status"], row["summary"])
        assert hub.connections == connections  # no discovery without a login
        (ws,) = [c for c in report["checks"] if c["id"] == "websocket"]
        assert not [t for t in ws["details"].get("targets", []) if t.get("genesys_channel") or t.get("xmpp")]
        assert "scheduled check" in daemon.stderr()
    finally:
        assert await daemon.stop() == 0, daemon.stderr()[-3000:]

    # no TURN credential or token anywhere but the owner-only login files
    secrets = [v for pair in hub.issued for v in pair] + list(fake_genesys.state.tokens) + list(fake_genesys.state.refresh_tokens)
    leaks = [f"{p}" for p in box.root.rglob("*") if p.is_file() and p.name != "genesys-token.json" and not p.is_socket()
             for s in secrets if s in p.read_text(errors="replace")]
    leaks += [f"CLI output {i}" for i, text in enumerate(box.outputs) for s in secrets if s in text]
    assert leaks == []


async def test_a_logout_and_another_agents_login_forget_the_cached_ice_servers(fake_genesys, agentd_env):
    """The cached list holds the agent's TURN credentials: it goes with that agent's login."""
    from agentd.testing.fake_genesys.scenario import OTHER_USER_ID
    from agentd_plugins.genesys.held_login import HeldLogin
    from agentd_plugins.genesys.softphone import cache_path

    from .helpers import settings_for
    from .test_daemon_login import _issued_login

    held = HeldLogin(settings_for(fake_genesys, client_id=LOGIN_CLIENT_ID, client_secret=None))
    cache = cache_path()

    def cached() -> None:
        cache.write_text('{"version": 1}\n')

    assert (await held.receive(_issued_login(fake_genesys, LOGIN_CLIENT_ID, refresh=True, lifetime_s=3600), {"uid": 0}))["ok"]
    cached()
    assert (await held.receive(_issued_login(fake_genesys, LOGIN_CLIENT_ID, refresh=True, lifetime_s=3600), {"uid": 0}))["ok"]
    assert cache.exists()  # the same agent again: the list is still theirs
    fake_genesys.state.clients[LOGIN_CLIENT_ID].login_user_id = OTHER_USER_ID
    answer = await held.receive(_issued_login(fake_genesys, LOGIN_CLIENT_ID, refresh=True, lifetime_s=3600), {"uid": 0})
    assert answer["ok"] and answer["login"]["user_id"] == OTHER_USER_ID and not cache.exists()
    cached()
    assert held.clear({"uid": 0})["ok"] and not cache.exists()

    # the agent's own `agentd logout` forgets the list the CLI cached
    agentd_env.write_config(f'[genesys]\napi_base_url = "{fake_genesys.url}"\nlogin_base_url = "{fake_genesys.url}"\nclient_id = "{LOGIN_CLIENT_ID}"\n')
    cached()
    done = await asyncio.to_thread(agentd_env.run, "logout", "--no-daemon")
    assert done.returncode == 0 and not cache.exists(), done.stdout + done.stderr
