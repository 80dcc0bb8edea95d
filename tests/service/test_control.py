"""The control socket: progress streams, the report equals the in-process one, and only
the daemon's user and group get in."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from agentd.control import ControlClient
from agentd.runner import CheckFinished, CheckNote, CheckStarted

from .conftest import READY_WAIT_S, SVC_CHECKS, base_config

ONLY = [a for c in ("svc.pass", "svc.warn", "svc.fail", "svc.slow", "dns") for a in ("--only", c)]


def _ready(daemon) -> None:
    assert daemon.notify.wait_for("READY=1", timeout_s=READY_WAIT_S) is not None, daemon.stderr()


async def test_check_through_the_socket_streams_progress_before_the_report(start_daemon, service_env):
    daemon = start_daemon(extra_env={"SVC_SLOW_S": "1.0"})
    _ready(daemon)
    client = ControlClient(service_env.root / "run" / "control.sock")
    seen: list[tuple[float, object]] = []
    started = time.monotonic()
    report = await client.check(
        profile="preshift", only=list(SVC_CHECKS), deadline_s=None, config=str(service_env.config_file),
        on_event=lambda e: seen.append((time.monotonic() - started, e)),
    )
    done_at = time.monotonic() - started
    kinds = [type(e) for _, e in seen]
    assert kinds.count(CheckStarted) == 4 and kinds.count(CheckFinished) == 4 and CheckNote in kinds
    first_finish = min(t for t, e in seen if isinstance(e, CheckFinished))
    # the fast checks' results arrived while the slow one still ran: a stream, not a batch
    assert first_finish < 0.8 <= done_at, (first_finish, done_at)
    assert {c.id: c.status.value for c in report.checks} == {
        "svc.pass": "pass", "svc.warn": "warn", "svc.fail": "fail", "svc.slow": "pass"}
    assert not report.ready
    assert daemon.stop() == 0


def test_agentd_check_gives_the_same_report_through_the_daemon_and_in_process(start_daemon, service_env):
    in_process = service_env.run("check", "--json", "--no-daemon", *ONLY, timeout=60)
    daemon = start_daemon(extra_env={"SVC_SLOW_S": "0.2"})
    _ready(daemon)
    through = service_env.run("check", "--json", *ONLY, timeout=60)
    assert in_process.returncode == through.returncode == 1, through.stderr
    a, b = json.loads(in_process.stdout), json.loads(through.stdout)
    assert [(c["id"], c["status"], c["summary"]) for c in a["checks"]] == [(c["id"], c["status"], c["summary"]) for c in b["checks"]]
    assert [v["code"] for v in a["verdicts"]] == [v["code"] for v in b["verdicts"]]
    assert a["ready"] == b["ready"] is False
    assert a["id"] != b["id"]
    # it really went through the daemon: the daemon holds it as its last report, in its timeline too
    import asyncio

    status = asyncio.run(ControlClient(service_env.root / "run" / "control.sock").status())
    assert status["last_report"]["id"] == b["id"]
    assert status["timeline"]["events"] >= 2  # svc.started + check.report
    # and the last report can be asked for
    answer = asyncio.run(ControlClient(service_env.root / "run" / "control.sock").request({"op": "last_report"}))
    assert answer["report"]["id"] == b["id"]
    assert daemon.stop() == 0


def test_a_daemon_with_another_config_file_is_not_used(start_daemon, service_env, tmp_path):
    daemon = start_daemon()
    _ready(daemon)
    other = tmp_path / "other.toml"
    other.write_text(base_config(service_env.plugin_dir))
    done = service_env.run("check", "--json", "--config", str(other), "--only", "svc.pass", timeout=60)
    assert done.returncode == 0, done.stderr
    import asyncio

    status = asyncio.run(ControlClient(service_env.root / "run" / "control.sock").status())
    assert status["last_report"] is None  # ran in-process, not in the daemon
    assert daemon.stop() == 0


def test_unknown_and_malformed_requests_get_a_clear_error(start_daemon, service_env):
    import asyncio

    daemon = start_daemon()
    _ready(daemon)
    client = ControlClient(service_env.root / "run" / "control.sock")
    assert "unknown op" in asyncio.run(client.request({"op": "reboot"}))["error"]
    # mute is delegated to the plugin command `agentd mute`: here it has no credentials (exit 2)
    answer = asyncio.run(client.request({"op": "mute", "args": ["on"]}))
    assert answer["ok"] is True and answer["exit_code"] == 2 and answer["error"], answer
    answer = asyncio.run(client.request({"op": "mute", "args": ["sideways"]}))
    assert answer["ok"] is False and "invalid choice" in answer["error"], answer
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(client.path))
        sock.sendall(b"this is not json\n")
        assert b"bad request" in sock.recv(4096)
    assert daemon.proc.poll() is None
    assert daemon.stop() == 0


# -- who may connect -----------------------------------------------------------------------

PROBE = """
import asyncio, json, sys
from pathlib import Path
from agentd.control import ControlClient
from agentd.errors import ControlError
try:
    print(json.dumps(asyncio.run(ControlClient(Path(sys.argv[1])).request({"op": "status"}))))
except ControlError as exc:
    print(json.dumps({"client_error": str(exc)}))
"""


@pytest.fixture
def open_runtime_dir():
    """A runtime dir others can traverse (pytest's tmp folders are 0700: a refusal there
    would prove nothing about the socket itself)."""
    path = Path(f"/tmp/agentd-svc-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def throwaway_group():
    name = f"agentdt{uuid.uuid4().hex[:8]}"
    subprocess.run(["groupadd", name], check=True)
    import grp

    yield name, grp.getgrnam(name).gr_gid
    subprocess.run(["groupdel", name], check=False)


def _as_nobody(socket_path: Path, groups: str | None = None) -> dict:
    group_args = [f"--groups={groups}"] if groups else ["--clear-groups"]
    done = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", *group_args, sys.executable, "-c", PROBE, str(socket_path)],
        capture_output=True, text=True, timeout=30, cwd="/",
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv to act as another user")
def test_another_user_without_group_access_is_refused(start_daemon, service_env, open_runtime_dir, throwaway_group):
    group, gid = throwaway_group
    service_env.write_config(base_config(service_env.plugin_dir, f'[daemon]\ncontrol_group = "{group}"\n'))
    service_env.env["AGENTD_RUNTIME_DIR"] = str(open_runtime_dir)
    daemon = start_daemon()
    _ready(daemon)
    sock = open_runtime_dir / "control.sock"
    st = sock.stat()
    assert oct(st.st_mode & 0o777) == "0o660" and st.st_gid == gid

    # a stranger: the kernel refuses at connect()
    refused = _as_nobody(sock)
    assert "permission denied" in refused["client_error"]
    # the same stranger in the socket's group gets in
    allowed = _as_nobody(sock, groups=str(gid))
    assert allowed["ok"] is True and allowed["status"]["pid"] == daemon.proc.pid

    # second line of defence: even if the file mode were opened up, the peer check refuses
    os.chmod(sock, 0o666)
    answer = _as_nobody(sock)
    assert answer == {"ok": False, "error": "permission denied: not the daemon's user or group"}
    assert "control connection refused" in daemon.stderr()
    assert daemon.stop() == 0


def test_check_upload_through_the_daemon_is_delivered_once_by_the_daemon(start_daemon, service_env):
    daemon = start_daemon()
    _ready(daemon)
    done = service_env.run("check", "--json", "--upload", "--only", "svc.pass", timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    said = [line for line in done.stderr.splitlines() if line.startswith("agentd: report")]
    assert len(said) == 1 and report["id"] in said[0] and said[0].endswith("(by the daemon)"), done.stderr
    # the default file sink (in the state directory) holds it: delivered by the daemon
    stored = [p for p in (service_env.root / "state").rglob(f"*{report['id']}*") if "spool" not in p.parts]
    assert stored, sorted(str(p) for p in (service_env.root / "state").rglob("*"))
    assert daemon.stop() == 0


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv to act as another user")
def test_agentd_check_by_a_refused_user_runs_in_its_own_process(start_daemon, service_env, open_runtime_dir):
    import pwd

    from .conftest import TEST_PLUGIN

    # everything the other user needs to read lies in the open folder; the daemon's socket is 0660 root
    plugins = open_runtime_dir / "plugins.d"
    plugins.mkdir(mode=0o755)
    (plugins / "svctest.py").write_text(TEST_PLUGIN)
    config = open_runtime_dir / "agentd.toml"
    config.write_text(base_config(plugins))
    run_dir, state = open_runtime_dir / "run", open_runtime_dir / "state-nobody"
    run_dir.mkdir(mode=0o755)
    state.mkdir()
    os.chown(state, pwd.getpwnam("nobody").pw_uid, -1)
    for path in (plugins, plugins / "svctest.py", config, run_dir):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    service_env.env.update(AGENTD_CONFIG=str(config), AGENTD_RUNTIME_DIR=str(run_dir))
    daemon = start_daemon()
    _ready(daemon)
    env = {**service_env.env, "AGENTD_STATE_DIR": str(state), "HOME": str(state)}
    done = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         sys.executable, "-m", "agentd", "check", "--json", "--only", "svc.pass"],
        capture_output=True, text=True, timeout=60, env=env, cwd="/",
    )
    assert done.returncode == 0, done.stderr
    assert "permission denied" in done.stderr and "running the check in this process instead" in done.stderr
    report = json.loads(done.stdout)
    assert [c["id"] for c in report["checks"]] == ["svc.pass"]
    import asyncio

    assert asyncio.run(ControlClient(run_dir / "control.sock").status())["last_report"] is None  # not the daemon's run
    assert daemon.stop() == 0
