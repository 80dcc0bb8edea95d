"""Fixtures of the service tests: a real ``agentd run`` process with a NOTIFY_SOCKET the
test listens on, and a drop-in plugin of deterministic checks (one slow)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# A drop-in plugin: checks whose statuses do not depend on the machine, one that takes a
# while (to see progress stream and a run cut short by SIGTERM), and daemon hooks that
# leave traces a test can see.
TEST_PLUGIN = '''
import asyncio, os
from pathlib import Path
from agentd import hookimpl
from agentd.checks import Check, Outcome

async def fast_pass(ctx):
    return Outcome.passed("fine", metrics={"rtt_ms": 1.0})

async def fast_warn(ctx):
    return Outcome.warned("meh")

async def fast_fail(ctx):
    return Outcome.failed("broken", details={"reason": "refused"})

async def slow(ctx):
    ctx.note("half way")
    await asyncio.sleep(float(os.environ.get("SVC_SLOW_S", "1.0")))
    return Outcome.passed("slow but fine")

@hookimpl
def agentd_collect_checks(plan):
    return [
        Check("svc.pass", "passes", fast_pass, order=1),
        Check("svc.warn", "warns", fast_warn, order=2),
        Check("svc.fail", "fails", fast_fail, order=3),
        Check("svc.slow", "slow", slow, timeout_s=120, order=4),
    ]

@hookimpl
def agentd_daemon_start(daemon):
    async def ticker():
        while True:
            await asyncio.sleep(3600)
    daemon.spawn(ticker(), name="svc.ticker")
    daemon.timeline.record("svc.started", {"pid": os.getpid()})
    if os.environ.get("SVC_HANG_START"):
        return asyncio.sleep(3600)  # a hung start-up hook: the daemon must go on without it

@hookimpl
def agentd_daemon_stop(daemon):
    async def stop():
        Path(os.environ["SVC_STOP_MARK"]).write_text("stopped")
    return stop()
'''

SVC_CHECKS = ("svc.pass", "svc.warn", "svc.fail", "svc.slow")
# How long a test waits for READY=1. Generous on purpose: on a loaded 2-core machine a
# start took over 3 s; how fast READY comes is measured in benchmarks/, not asserted here.
READY_WAIT_S = 20.0


def base_config(plugin_dir: Path, extra: str = "") -> str:
    return f"""
[agentd]
plugin_dir = "{plugin_dir}"
log_level = "info"

[genesys]
region = "agentd-test.invalid"

[timeline]
interval_s = 1.0
{extra}
"""


class Notifications:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
        self.received: list[str] = []

    def wait_for(self, line: str, timeout_s: float) -> float | None:
        """Seconds until a datagram containing ``line`` arrived, or None."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if any(line in msg.splitlines() for msg in self.received):
                return time.monotonic() - started
            self.sock.settimeout(max(0.01, timeout_s - (time.monotonic() - started)))
            try:
                self.received.append(self.sock.recv(65536).decode())
            except (TimeoutError, socket.timeout):
                break
        return (time.monotonic() - started) if any(line in m.splitlines() for m in self.received) else None

    def close(self) -> None:
        self.sock.close()


@dataclass
class DaemonProcess:
    proc: subprocess.Popen
    notify: Notifications
    stderr_path: Path
    started: float = field(default_factory=time.monotonic)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise


@pytest.fixture
def service_env(agentd_env, tmp_path, monkeypatch):
    """agentd_env plus the test plugin in a drop-in folder and a stop marker path."""
    plugin_dir = tmp_path / "plugins.d"
    plugin_dir.mkdir()
    (plugin_dir / "svctest.py").write_text(TEST_PLUGIN)
    agentd_env.plugin_dir = plugin_dir
    agentd_env.stop_mark = tmp_path / "stop-mark"
    agentd_env.env["SVC_STOP_MARK"] = str(agentd_env.stop_mark)
    monkeypatch.setenv("SVC_STOP_MARK", str(agentd_env.stop_mark))
    agentd_env.write_config(base_config(plugin_dir))
    return agentd_env


@pytest.fixture
def start_daemon(service_env, tmp_path):
    """Start ``agentd run``; every daemon started is stopped (SIGKILL at worst) at the end."""
    started: list[DaemonProcess] = []

    def start(*, abstract: bool = True, extra_env: dict | None = None) -> DaemonProcess:
        address = f"@agentd-test-{os.getpid()}-{uuid.uuid4().hex[:8]}" if abstract else str(tmp_path / f"notify-{len(started)}.sock")
        notify = Notifications(address)
        env = {**service_env.env, "NOTIFY_SOCKET": address, **(extra_env or {})}
        err = tmp_path / f"daemon-{len(started)}.stderr"
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentd", "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(err, "wb"),
            cwd=service_env.root,
        )
        daemon = DaemonProcess(proc, notify, err)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait(timeout=5)
        daemon.notify.close()


@pytest.fixture(scope="session")
def agentd_deb(tmp_path_factory) -> Path:
    """The .deb of this checkout, built once per session by packaging/build-deb.sh."""
    import shutil

    if not all(shutil.which(t) for t in ("dpkg-deb", "fakeroot", "dpkg")) or not Path("/usr/bin/python3").exists():
        pytest.skip("needs dpkg-deb, fakeroot and Debian's python3")
    repo = Path(__file__).resolve().parents[2]
    out = tmp_path_factory.mktemp("deb")
    done = subprocess.run(
        # no compression: the contents are what is tested, and xz of ~150 MB costs a minute
        [str(repo / "packaging" / "build-deb.sh"), "--out", str(out), "--compress", "none"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = out.glob("agentd_*.deb")
    return path
