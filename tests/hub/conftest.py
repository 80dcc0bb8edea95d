"""Fixtures of the hub tests: a real ``agentd hub serve`` process on loopback (SQLite or
PostgreSQL), its admin commands, real ``agentd run`` daemons joined to it, and
Debian's PostgreSQL started in a temporary folder as an unprivileged user."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from agentd.model import AgentInfo, CheckResult, Report, Status, Verdict, Severity, isoformat, new_report_id, utcnow

# Deterministic checks for daemons joined to a hub: one passes, one notes progress and
# takes a moment (so progress is seen before the report).
HUB_TEST_PLUGIN = '''
import asyncio, os
from agentd import hookimpl
from agentd.checks import Check, Outcome

async def quick(ctx):
    return Outcome.passed("fine", metrics={"rtt_ms": 12.0})

async def slow(ctx):
    ctx.note("half way there")
    await asyncio.sleep(float(os.environ.get("HUBTEST_SLOW_S", "0.6")))
    return Outcome.failed(os.environ.get("HUBTEST_SUMMARY", "slow and broken"), details={"reason": "refused"})

@hookimpl
def agentd_collect_checks(plan):
    return [Check("hubtest.quick", "quick", quick, order=1), Check("hubtest.slow", "slow", slow, timeout_s=30, order=2)]
'''

# the built-ins that would probe the machine's network: not what these tests are about
DISABLED = ["dns", "https", "host", "websocket", "stun", "nat", "turn", "udp-ports", "media", "ice", "timeline",
            "notifications", "mute", "genesys", "genesys-settings", "path", "loaded-latency"]

PASSWORD = "helpdesk-pass-1234"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout_s: float, interval_s: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@dataclass
class HubProcess:
    proc: subprocess.Popen
    url: str
    database: str
    stderr_path: Path
    env: dict

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)


@dataclass
class Hub:
    """A hub under test: its processes, database and admin commands."""

    root: Path
    database: str
    env: dict
    processes: list[HubProcess] = field(default_factory=list)

    def admin(self, *args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "agentd", "hub", *args, "--database", self.database],
                              capture_output=True, text=True, env=self.env, input=input, timeout=timeout, cwd=self.root)

    def start(self, port: int | None = None, *, extra_args: tuple[str, ...] = (), log_level: str = "info") -> HubProcess:
        port = port or free_port()
        err = self.root / f"hub-{len(self.processes)}-{port}.stderr"
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentd", "hub", "serve", "--listen", f"127.0.0.1:{port}", "--database", self.database,
             "--log-level", log_level, *extra_args],
            env=self.env, stdout=subprocess.DEVNULL, stderr=open(err, "wb"), cwd=self.root,
        )
        process = HubProcess(proc, f"http://127.0.0.1:{port}", self.database, err, self.env)
        self.processes.append(process)

        def healthy() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"hub exited {proc.returncode}: {err.read_text()[-2000:]}")
            try:
                return httpx.get(f"{process.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 120, what="the hub to answer /healthz")  # a loaded machine starts Python slowly
        return process

    def store(self, coro_factory):
        """Run ``coro_factory(store)`` on the hub's database in this process (quicker
        than the CLI, which has its own test)."""
        return run_on_store(self.database, coro_factory)

    def enroll_key(self) -> str:
        return self.store(lambda store: store.create_enroll_key("tests")).text

    def add_user(self, name: str = "helpdesk", password: str = PASSWORD) -> tuple[str, str]:
        self.store(lambda store: store.add_user(name, password))
        return name, password


def run_on_store(database: str, coro_factory):
    import asyncio

    from agentd.hub.db import make_engine
    from agentd.hub.migrate import upgrade
    from agentd.hub.store import Store

    async def go():
        engine = make_engine(database)
        try:
            await upgrade(engine)
            return await coro_factory(Store(engine))
        finally:
            await engine.dispose()

    # in a thread of its own: playwright's sync API keeps an event loop in the test's thread
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result()


def hub_env(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTD_", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET"))}
    env.update({"AGENTD_STATE_DIR": str(root / "state"), "AGENTD_RUNTIME_DIR": str(root / "run"),
                "XDG_CONFIG_HOME": str(root / "xdg-config"), "NO_COLOR": "1"})
    return env


@pytest.fixture
def hub_factory(tmp_path):
    hubs: list[Hub] = []

    def make(database: str | None = None) -> Hub:
        root = tmp_path / f"hub{len(hubs)}"
        root.mkdir()
        hub = Hub(root, database or f"sqlite:///{root / 'hub.sqlite'}", hub_env(root))
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        for process in hub.processes:
            if process.alive():
                process.proc.terminate()
                try:
                    process.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.proc.kill()
                    process.proc.wait(timeout=5)


@pytest.fixture
def hub(hub_factory) -> Hub:
    return hub_factory()


# -- PCs ---------------------------------------------------------------------------------------


@dataclass
class PcDaemon:
    root: Path
    env: dict
    proc: subprocess.Popen | None = None

    @property
    def stderr_path(self) -> Path:
        return self.root / "daemon.stderr"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def install_id(self) -> str:
        return (self.root / "state" / "install-id").read_text().strip()

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "agentd", "run"], env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=open(self.stderr_path, "ab"), cwd=self.root)

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "agentd", *args], capture_output=True, text=True, env=self.env, timeout=timeout, cwd=self.root)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture
def pc_factory(tmp_path):
    made: list[PcDaemon] = []

    def make(hub_url: str, key: str, *, name: str | None = None, extra_env: dict | None = None, extra_config: str = "") -> PcDaemon:
        root = tmp_path / (name or f"pc{len(made)}")
        plugins = root / "plugins.d"
        plugins.mkdir(parents=True)
        (plugins / "hubtest.py").write_text(HUB_TEST_PLUGIN)
        (root / "state").mkdir()
        (root / "key").write_text(key + "\n")
        config = root / "agentd.toml"
        config.write_text(f"""
[agentd]
plugin_dir = "{plugins}"
log_level = "info"
disable_plugins = {json.dumps(DISABLED)}

[daemon]
flush_interval_s = 10

[spool]
sink_timeout_s = 10

[hub]
url = "{hub_url}"
enrollment_key = {{ file = "{root / 'key'}" }}
reconnect_min_s = 0.2
reconnect_max_s = 1.0
timeout_s = 5
{extra_config}
""")
        env = hub_env(root)
        env.update({"AGENTD_CONFIG": str(config), **(extra_env or {})})
        pc = PcDaemon(root, env)
        made.append(pc)
        return pc

    yield make
    for pc in made:
        pc.stop()


# -- reports made by the tests ------------------------------------------------------------------


def make_report(install_id: str, *, hostname: str = "pc-1", profile: str = "preshift", failed: tuple[str, ...] = (),
                passed: tuple[str, ...] = ("dns", "https"), summary: str = "fine", verdict: str | None = None,
                user: str | None = "agent.one", conversation_id: str | None = None, metrics: dict | None = None) -> Report:
    checks = [CheckResult(id=c, status=Status.PASS, summary=summary, metrics=dict(metrics or {})) for c in passed]
    checks += [CheckResult(id=c, status=Status.FAIL, summary=summary) for c in failed]
    verdicts = (Verdict(verdict, Severity.CRITICAL, 0.9, summary),) if verdict else ()
    return Report(id=new_report_id(), created=isoformat(utcnow()), profile=profile, conversation_id=conversation_id,
                  agent=AgentInfo(hostname=hostname, install_id=install_id, version="0.1.0", platform="Linux", python="3.11", user=user),
                  checks=tuple(checks), verdicts=verdicts)


def enroll(url: str, key: str, install_id: str | None = None, hostname: str = "pc-1", client: httpx.Client | None = None) -> tuple[str, str]:
    install_id = install_id or f"agentd-{uuid.uuid4()}"
    send = client.post if client is not None else httpx.post
    answer = send(f"{url}/api/v1/enroll", json={"install_id": install_id, "hostname": hostname, "user": "agent.one"},
                  headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert answer.status_code == 201, answer.text
    return install_id, answer.json()["token"]


def post_report(url: str, token: str, report: Report, *, key: str | None = None, client: httpx.Client | None = None) -> httpx.Response:
    send = client.post if client is not None else httpx.post
    return send(f"{url}/api/v1/reports", content=report.to_json().encode(),
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key or report.id, "Content-Type": "application/json"}, timeout=10)


# -- PostgreSQL -----------------------------------------------------------------------------------


@pytest.fixture
def postgres():
    """Debian's PostgreSQL in a temporary folder, run as ``nobody`` (agentd.testing.postgres)."""
    from agentd.testing import postgres as pg

    if not pg.available():
        pytest.skip("Debian's postgresql is not installed (tests/run installs it)")
    with pg.running_postgres() as running:
        yield running


# -- the hub in this process (uvicorn on loopback in a thread): the fast way for API tests --------


@dataclass
class LiveHub:
    url: str
    database: str
    app: object
    server: object

    def admin(self, coro_factory):
        """Run ``coro_factory(store)`` against the hub's database with its own engine."""
        return run_on_store(self.database, coro_factory)

    def enroll_key(self) -> str:
        return self.admin(lambda store: store.create_enroll_key("tests")).text

    def add_user(self, name: str = "helpdesk", password: str = PASSWORD) -> tuple[str, str]:
        self.admin(lambda store: store.add_user(name, password))
        return name, password


@pytest.fixture
def live_hub(tmp_path, monkeypatch):
    import asyncio
    import threading

    import uvicorn

    from agentd.hub.app import HubSettings, create_app
    from agentd.hub.db import make_engine
    from agentd.hub.migrate import upgrade

    database = f"sqlite:///{tmp_path / 'live-hub.sqlite'}"
    # buckets that barely refill (one token in 1000 s): the rate-limit test must not depend on how fast a loaded machine posts

    async def migrate():
        engine = make_engine(database)
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    settings = HubSettings(database=database, max_report_bytes=64 * 1024, ingest_burst=5, ingest_per_s=0.001, login_burst=5, login_per_s=0.001,
                           revocation_sweep_s=0.5)
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on", ws="websockets-sansio"))
    thread = threading.Thread(target=server.run, name="live-hub", daemon=True)
    thread.start()
    wait_until(lambda: server.started, 30, what="the in-process hub to start")
    yield LiveHub(f"http://127.0.0.1:{port}", database, app, server)
    server.should_exit = True
    thread.join(15)
