"""The service and the agent: the daemon runs as its own system user with its own state
folder (as under the unit's ``User=agentd``), `agentd login` runs as the agent, and the
login reaches the daemon over the control socket.

Real users (useradd), real processes (setpriv), the fake Genesys on loopback: the
daemon's notifications monitor subscribes for the agent who logged in last, a scheduled
pre-shift uses that login, `agentd logout` ends both, and no token is anywhere but in the
two owner-only login files.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from agentd.testing.fake_genesys import AGENT_USER_ID, LOGIN_CLIENT_ID
from agentd.testing.fake_genesys.notifications import hub_of
from agentd.testing.fake_genesys.scenario import OTHER_USER_ID

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("useradd"),
    reason="needs root, setpriv and useradd to run the daemon and the CLI as two users",
)

# probes that would leave loopback, or only cost time here: the websocket check stays
QUIET_PLUGINS = ["dns", "https", "host", "stun", "nat", "turn", "udp-ports", "media"]


class Box:
    """Two system users (the service and an agent, a second agent) and their folders."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.root = Path(f"/tmp/agentd-2u-{tag}")
        self.svc, self.agent, self.agent2 = f"agdsvc{tag}", f"agdagt{tag}", f"agdag2{tag}"
        self.group = self.svc  # the service's own group: its members may use the socket
        self.users: list[str] = []
        self.outputs: list[str] = []  # every CLI run's stdout and stderr (no token may be in them)

    def create(self) -> None:
        self.root.mkdir(mode=0o755)
        os.chmod(self.root, 0o755)
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", self.svc], check=True)
        self.users.append(self.svc)
        for agent in (self.agent, self.agent2):
            subprocess.run(["useradd", "--user-group", "--no-create-home", "--groups", self.group, "--shell", "/bin/sh", agent], check=True)
            self.users.append(agent)
        for name in ("svc-state", "run"):
            folder = self.root / name
            folder.mkdir(mode=0o750)
            shutil.chown(folder, self.svc, self.group)
            os.chmod(folder, 0o750)
        for agent in (self.agent, self.agent2):
            home = self.root / agent
            home.mkdir(mode=0o700)
            shutil.chown(home, agent, agent)

    def remove(self) -> None:
        for user in self.users:
            subprocess.run(["userdel", user], check=False, capture_output=True)
        subprocess.run(["groupdel", self.group], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def uid(self, user: str) -> int:
        return pwd.getpwnam(user).pw_uid

    @property
    def config(self) -> Path:
        return self.root / "agentd.toml"

    def env(self, user: str) -> dict[str, str]:
        home = self.root / ("svc-state" if user == self.svc else user)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTD_", "XDG_", "STATE_DIRECTORY", "RUNTIME_DIRECTORY", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET"))}
        env.update(
            HOME=str(home),
            AGENTD_CONFIG=str(self.config),
            AGENTD_STATE_DIR=str(home if user != self.svc else self.root / "svc-state"),
            AGENTD_RUNTIME_DIR=str(self.root / "run"),
            PYTHONDONTWRITEBYTECODE="1",
            NO_COLOR="1",
        )
        return env

    def as_user(self, user: str) -> list[str]:
        gid = pwd.getpwnam(user).pw_gid
        groups = ",".join(str(g) for g in os.getgrouplist(user, gid))
        extra = ["--clear-groups"] if user == self.svc else [f"--groups={groups}"]
        return ["setpriv", f"--reuid={self.uid(user)}", f"--regid={gid}", *extra, sys.executable, "-m", "agentd"]

    async def run(self, user: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """In a thread: the fake Genesys answers on this test's event loop meanwhile."""
        command = [*self.as_user(user), *args]
        done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=timeout, env=self.env(user), cwd=self.root)
        self.outputs.append(done.stdout + done.stderr)
        return done

    async def status(self, user: str) -> dict:
        done = await self.run(user, "status", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)


@pytest.fixture
def box():
    made = Box()
    try:
        made.create()
        yield made
    finally:
        made.remove()


def daemon_config(fake, extra: str = "") -> str:
    return (
        "[agentd]\n"
        f"disable_plugins = {json.dumps(QUIET_PLUGINS)}\n"
        'log_level = "info"\n'
        "[genesys]\n"
        f'api_base_url = "{fake.url}"\nlogin_base_url = "{fake.url}"\nclient_id = "{LOGIN_CLIENT_ID}"\n'
        "timeout_s = 5.0\n"
        "[notifications]\nbackoff_min_s = 0.1\nbackoff_max_s = 0.5\n"
        "[websocket]\nping_count = 1\n"
        "[daemon]\nstop_timeout_s = 3.0\n"
        f"{extra}"
    )


async def agent_login(box: Box, user: str) -> subprocess.CompletedProcess:
    """`agentd login` as ``user``; this test is the browser (it follows the address printed)."""
    process = await asyncio.create_subprocess_exec(
        *box.as_user(user), "login", "--no-browser", "--port", "0", "--timeout", "30",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=box.env(user), cwd=box.root,
    )
    try:
        async with asyncio.timeout(60):
            url = None
            seen = []
            while url is None:
                line = (await process.stderr.readline()).decode()
                seen.append(line)
                assert line, f"agentd login ended without printing the address: {''.join(seen)}"
                found = re.search(r"https?://\S+/oauth/authorize\?\S+", line)
                url = found.group(0) if found else None
            async with httpx.AsyncClient(follow_redirects=True, timeout=10) as browser:
                answer = await browser.get(url)
            assert answer.status_code == 200, answer.text
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    box.outputs.append(out.decode() + "".join(seen) + err.decode())
    return subprocess.CompletedProcess([], process.returncode, out.decode(), "".join(seen) + err.decode())


async def until(predicate, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = predicate()
        if asyncio.iscoroutine(found):
            found = await found
        if found:
            return True
        await asyncio.sleep(0.05)
    return False


def subscribed_users(fake) -> set[str]:
    """The users whose calls topic a connected socket listens to."""
    hub = hub_of(fake)
    found = set()
    for channel in hub.channels.values():
        if any(not ws.closed for ws in channel.sockets):
            found |= {t.split(".")[2] for t in channel.topics if t.endswith(".conversations.calls")}
    return found


class Daemon:
    def __init__(self, box: Box) -> None:
        self.box = box
        self.err = box.root / f"daemon-{uuid.uuid4().hex[:4]}.stderr"
        self.proc = subprocess.Popen(
            [*box.as_user(box.svc), "run"], env=box.env(box.svc), cwd=box.root,
            stdout=subprocess.DEVNULL, stderr=open(self.err, "wb"),
        )

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    async def ready(self) -> None:
        sock = self.box.root / "run" / "control.sock"
        assert await until(lambda: sock.exists() and "daemon ready" in self.stderr(), 20), self.stderr()

    async def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        for _ in range(200):
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait(timeout=5)


async def test_the_daemon_on_its_own_user_works_for_the_agent_who_logged_in_last(fake_genesys, box):
    box.config.write_text(daemon_config(fake_genesys))
    os.chmod(box.config, 0o644)
    daemon = Daemon(box)
    try:
        await daemon.ready()
        assert subscribed_users(fake_genesys) == set()  # no login yet: no monitor
        before = await box.status(box.agent)
        assert before["logins"]["genesys"]["held"] is False

        # the agent logs in: the daemon (another user) takes the login, its monitor subscribes
        done = await agent_login(box, box.agent)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "the agentd daemon now uses this login (as Alex Agent" in done.stdout
        assert await until(lambda: subscribed_users(fake_genesys) == {AGENT_USER_ID}), daemon.stderr()
        status = (await box.status(box.agent))["logins"]["genesys"]
        assert status["held"] and status["user_id"] == AGENT_USER_ID and status["user_name"] == "Alex Agent"
        assert status["account"] == box.agent and status["expires"]
        expires = datetime.fromisoformat(status["expires"].replace("Z", "+00:00"))
        assert timedelta(hours=23) < expires - datetime.now(timezone.utc) <= timedelta(hours=24, minutes=1)
        shown = await box.run(box.agent, "status")
        assert shown.returncode == 0 and f"login (genesys): Alex Agent ({AGENT_USER_ID}), handed over by account {box.agent}" in shown.stdout

        # both copies owner-only, each in its owner's folder; one refresher per refresh token
        held_file = box.root / "svc-state" / "genesys-token.json"
        own_file = box.root / box.agent / "genesys-token.json"
        for path, owner in ((held_file, box.svc), (own_file, box.agent)):
            st = path.stat()
            assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == box.uid(owner), path
        held, own = json.loads(held_file.read_text()), json.loads(own_file.read_text())
        assert held["refresh_token"] in fake_genesys.state.refresh_tokens and own["refresh_token"] is None
        assert held["access_token"] == own["access_token"]

        # a second agent on the same PC: the latest login wins, the monitor follows it
        fake_genesys.state.clients[LOGIN_CLIENT_ID].login_user_id = OTHER_USER_ID
        done = await agent_login(box, box.agent2)
        assert done.returncode == 0, done.stdout + done.stderr
        assert await until(lambda: subscribed_users(fake_genesys) == {OTHER_USER_ID}), daemon.stderr()
        status = (await box.status(box.agent))["logins"]["genesys"]
        assert (status["user_id"], status["account"]) == (OTHER_USER_ID, box.agent2)

        # the first agent cannot log the second one out of the daemon
        refused = await box.run(box.agent, "logout")
        assert refused.returncode == 1 and "kept its login" in refused.stderr, refused.stdout + refused.stderr
        assert subscribed_users(fake_genesys) == {OTHER_USER_ID}
    finally:
        assert await daemon.stop() == 0, daemon.stderr()

    # a scheduled pre-shift after a restart: the daemon kept the login, the run uses it
    now = datetime.now(timezone.utc)
    slot = (now - timedelta(seconds=60)).strftime("%H:%M")
    box.config.write_text(daemon_config(
        fake_genesys,
        f'[schedule]\ntimes = ["{slot}"]\nweekdays = ["mon","tue","wed","thu","fri","sat","sun"]\nspread_s = 0\ntimezone = "UTC"\n',
    ))
    schedule_state = box.root / "svc-state" / "schedule.json"
    schedule_state.write_text(json.dumps({"last_seen": (now - timedelta(minutes=3)).isoformat()}))
    shutil.chown(schedule_state, box.svc, box.group)
    daemon = Daemon(box)
    try:
        await daemon.ready()
        async def reported() -> bool:
            return bool(((await box.status(box.agent2)).get("last_report") or {}).get("id"))

        assert await until(reported, 30), daemon.stderr()
        report_id = (await box.status(box.agent2))["last_report"]["id"]
        report = json.loads((box.root / "svc-state" / "last-report.json").read_text())
        assert report["id"] == report_id and "scheduled check" in daemon.stderr()
        (ws,) = [c for c in report["checks"] if c["id"] == "websocket"]
        channel_rows = [t for t in ws["details"].get("targets", []) if t.get("genesys_channel")]
        assert channel_rows and channel_rows[0].get("subscribed") == [f"v2.users.{OTHER_USER_ID}.conversations.calls"], (ws, daemon.stderr())
        assert await until(lambda: subscribed_users(fake_genesys) == {OTHER_USER_ID}), daemon.stderr()

        # the second agent logs out: the daemon forgets the login, the monitor stops
        done = await box.run(box.agent2, "logout")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "no longer holds the login of Sam Supervisor" in done.stdout
        assert await until(lambda: subscribed_users(fake_genesys) == set()), daemon.stderr()
        assert (await box.status(box.agent2))["logins"]["genesys"]["held"] is False
        assert not (box.root / "svc-state" / "genesys-token.json").exists()
        # and a check in the daemon now has no login to use
        after = await box.run(box.agent2, "check", "--json", "--only", "websocket")
        ws_after = [c for c in json.loads(after.stdout)["checks"] if c["id"] == "websocket"]
        assert not [t for t in (ws_after[0]["details"].get("targets", []) if ws_after else []) if t.get("genesys_channel")]
    finally:
        assert await daemon.stop() == 0, daemon.stderr()

    # no token anywhere but in the owner-only login files
    secrets = set(fake_genesys.state.tokens) | set(fake_genesys.state.refresh_tokens)
    assert len(secrets) >= 3
    leaks = []
    for path in box.root.rglob("*"):
        if path.is_file() and path.name != "genesys-token.json" and not path.is_socket():
            text = path.read_text(errors="replace")
            leaks += [f"{path}: token" for s in secrets if s in text]
    leaks += [f"CLI output {i}: token" for i, text in enumerate(box.outputs) for s in secrets if s in text]
    assert len(box.outputs) >= 8 and leaks == []


def _issued_login(fake, client_id: str, *, refresh: bool, lifetime_s: float) -> dict:
    """A login as `agentd login` hands it over, with a token the fake issued just now.
    agentd believes ``expires_at`` (the token's ``expires_in``); the fake's token lives
    longer, so a loaded machine cannot make the fake refuse it before agentd's own expiry."""
    client = fake.state.clients[client_id]
    value, info = fake.state.issue_token(client, "authorization_code", client.login_user_id)
    return {
        "access_token": value,
        "refresh_token": fake.state.issue_refresh_token(info) if refresh else None,
        "expires_at": time.time() + lifetime_s,
        "client_id": client_id,
        "login_base": fake.url,
        "user_id": "claimed-by-the-sender",
        "user_name": "Not Checked",
        "grant": "pkce",
        "account": "someone-else",
    }


async def test_a_login_without_refresh_token_runs_out_once_in_the_daemon_log_and_status(fake_genesys, agentd_env):
    """Same user for daemon and CLI here: the hand-over itself is the subject."""
    from agentd.control import ControlClient
    from agentd.testing.fake_genesys import PKCE_ONLY_CLIENT_ID

    agentd_env.write_config(daemon_config(fake_genesys).replace(LOGIN_CLIENT_ID, PKCE_ONLY_CLIENT_ID))
    err = agentd_env.root / "daemon.stderr"
    process = subprocess.Popen([sys.executable, "-m", "agentd", "run"], env=agentd_env.env, cwd=agentd_env.root, stdout=subprocess.DEVNULL, stderr=open(err, "wb"))
    control = ControlClient(agentd_env.root / "run" / "control.sock")
    try:
        assert await until(lambda: "daemon ready" in err.read_text(errors="replace"), 30), err.read_text()
        login = _issued_login(fake_genesys, PKCE_ONLY_CLIENT_ID, refresh=False, lifetime_s=15)
        answer = await control.request({"op": "login", "service": "genesys", "login": login}, timeout_s=30)
        assert answer["ok"], answer
        # the daemon names whom Genesys names, and the account the socket says, not the sender's claims
        held = answer["login"]
        assert (held["user_id"], held["user_name"], held["account"]) == (AGENT_USER_ID, "Alex Agent", pwd.getpwuid(os.geteuid()).pw_name)
        assert held["refreshable"] is False and login["access_token"] not in json.dumps(answer)
        assert await until(lambda: subscribed_users(fake_genesys) == {AGENT_USER_ID}), err.read_text()
        status = (await control.status())["logins"]["genesys"]
        assert status["expired"] is False and "no refresh token" in status["summary"]

        await asyncio.sleep(max(0.0, login["expires_at"] - time.time()) + 3.0)  # past the expiry, and then some
        status = (await control.status())["logins"]["genesys"]
        assert status["expired"] is True and "EXPIRED" in status["summary"] and "run `agentd login`" in status["summary"]
        log = err.read_text(errors="replace")
        assert log.count("Genesys login expired: run `agentd login`") == 1, log
        # the monitor gave up with one line instead of retrying a login that cannot work
        assert log.count("notifications monitor stopped until the next `agentd login`") <= 1

        # a fresh login: no longer expired, and its own expiry is logged once more later
        again = _issued_login(fake_genesys, PKCE_ONLY_CLIENT_ID, refresh=False, lifetime_s=12)
        assert (await control.request({"op": "login", "service": "genesys", "login": again}, timeout_s=30))["ok"]
        assert (await control.status())["logins"]["genesys"]["expired"] is False
        await asyncio.sleep(max(0.0, again["expires_at"] - time.time()) + 2.0)
        assert err.read_text(errors="replace").count("Genesys login expired: run `agentd login`") == 2

        # an expired login is refused at the door
        stale = {**again}
        refused = await control.request({"op": "login", "service": "genesys", "login": stale}, timeout_s=30)
        assert refused["ok"] is False and "already expired" in refused["error"]
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    assert process.returncode == 0, err.read_text()[-2000:]
    tokens = set(fake_genesys.state.tokens) | set(fake_genesys.state.refresh_tokens)
    assert not [t for t in tokens if t in err.read_text()]
