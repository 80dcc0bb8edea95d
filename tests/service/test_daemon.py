"""``agentd run`` as systemd sees it: READY, WATCHDOG, STOPPING, SIGTERM, SIGHUP."""

from __future__ import annotations

import json
import signal
import time

from .conftest import READY_WAIT_S, base_config


def _status(service_env) -> dict:
    """The daemon's status over its socket (in-process: polling through the CLI costs a start-up each)."""
    import asyncio

    from agentd.control import ControlClient

    return asyncio.run(ControlClient(service_env.root / "run" / "control.sock").status())


def test_agentd_status_prints_the_daemon_state(start_daemon, service_env):
    daemon = start_daemon()
    assert daemon.notify.wait_for("READY=1", timeout_s=READY_WAIT_S) is not None, daemon.stderr()
    done = service_env.run("status", timeout=20)
    assert done.returncode == 0, done.stderr
    assert f"pid {daemon.proc.pid}" in done.stdout and "schedule: none" in done.stdout and "timeline:" in done.stdout
    as_json = json.loads(service_env.run("status", "--json", timeout=20).stdout)
    assert as_json["pid"] == daemon.proc.pid and as_json["config"] == str(service_env.config_file)
    # the host timeline samples while the daemon runs ([timeline] interval_s = 1 here)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _status(service_env)["timeline"]["samples"] < 2:
        time.sleep(0.2)
    timeline = _status(service_env)["timeline"]
    assert timeline["samples"] >= 2 and timeline["last_sample"], timeline
    assert daemon.stop() == 0


def test_ready_and_sigterm_exits_0_within_5s(start_daemon, service_env):
    daemon = start_daemon(abstract=True)
    took = daemon.notify.wait_for("READY=1", timeout_s=READY_WAIT_S)
    assert took is not None, f"no READY=1 within {READY_WAIT_S} s; got {daemon.notify.received}; stderr:\n{daemon.stderr()}"
    assert any(line.startswith("STATUS=") for m in daemon.notify.received for line in m.splitlines())
    status = _status(service_env)
    assert "svc.ticker" in status["tasks"] and "timeline.sampler" in status["tasks"]

    sent = time.monotonic()
    daemon.signal(signal.SIGTERM)
    # one SIGTERM only: daemon.stop() would send a second, which means "stop now" and skips
    # the plugins' stop hooks when it lands before them
    code = daemon.proc.wait(timeout=5.0)
    assert code == 0, daemon.stderr()
    assert time.monotonic() - sent < 5.0
    assert daemon.notify.wait_for("STOPPING=1", timeout_s=0.5) is not None
    assert service_env.stop_mark.read_text() == "stopped"  # the plugin's stop hook was awaited
    assert not (service_env.root / "run" / "control.sock").exists()


def test_ready_on_a_path_socket_and_watchdog_at_half_the_interval(start_daemon):
    daemon = start_daemon(abstract=False, extra_env={"WATCHDOG_USEC": "400000"})
    assert daemon.notify.wait_for("READY=1", timeout_s=READY_WAIT_S) is not None, daemon.stderr()
    daemon.notify.received.clear()
    started = time.monotonic()
    count = 0
    while time.monotonic() - started < 2.0:
        if daemon.notify.wait_for("WATCHDOG=1", timeout_s=0.5) is not None:
            count += sum(1 for m in daemon.notify.received if "WATCHDOG=1" in m.splitlines())
            daemon.notify.received.clear()
    # at half of 0.4 s over 2 s: about 10 (at the full interval it would be 5 at most)
    assert 7 <= count <= 12, count
    assert daemon.stop() == 0


def test_a_hung_start_hook_does_not_stop_the_daemon_getting_ready(start_daemon, service_env):
    service_env.write_config(base_config(service_env.plugin_dir, "[daemon]\nhook_timeout_s = 0.5\n"))
    daemon = start_daemon(extra_env={"SVC_HANG_START": "1"})
    assert daemon.notify.wait_for("READY=1", timeout_s=READY_WAIT_S) is not None, daemon.stderr()
    assert "plugin daemon hook timed out" in daemon.stderr()
    assert daemon.stop() == 0


def test_sigterm_during_a_check_cancels_it_within_the_bound_and_exits_0(start_daemon, service_env):
    service_env.write_config(base_config(service_env.plugin_dir, "[daemon]\nstop_timeout_s = 2.0\n"))
    daemon = start_daemon(extra_env={"SVC_SLOW_S": "60"})
    assert daemon.notify.wait_for("READY=1", timeout_s=READY_WAIT_S) is not None, daemon.stderr()
    import subprocess
    import sys

    client = subprocess.Popen(
        [sys.executable, "-m", "agentd", "check", "--json", "--only", "svc.slow", "--only", "svc.pass"],
        env=service_env.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _status(service_env).get("running"):
            time.sleep(0.1)
        assert _status(service_env)["running"]["trigger"] == "control"
        sent = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=5.0) == 0, daemon.stderr()  # one SIGTERM: a second would force
        assert time.monotonic() - sent < 5.0
    finally:
        out, err = client.communicate(timeout=20)
    # the run was cut short, and its report still came out: the slow check is an error row
    report = json.loads(out)
    statuses = {c["id"]: c["status"] for c in report["checks"]}
    assert statuses == {"svc.pass": "pass", "svc.slow": "error"}, err


def test_sighup_with_a_broken_config_keeps_the_old_one(start_daemon, service_env):
    good = base_config(service_env.plugin_dir, '[schedule]\ntimes = ["07:45"]\n')
    service_env.write_config(good)
    daemon = start_daemon()
    assert daemon.notify.wait_for("READY=1", timeout_s=READY_WAIT_S) is not None, daemon.stderr()
    assert _status(service_env)["schedule"]["times"] == ["07:45"]

    # a time the types accept but the schedule does not, then a key no plugin knows
    for broken, named in (
        (base_config(service_env.plugin_dir, '[schedule]\ntimes = ["25:99"]\n'), "schedule.times[0]"),
        (base_config(service_env.plugin_dir, '[schedule]\ntimes = ["08:00"]\nnonsense = 1\n'), "schedule.nonsense"),
    ):
        service_env.write_config(broken)
        daemon.signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not _status(service_env)["last_reload_error"]:
            time.sleep(0.1)
        status = _status(service_env)
        assert named in status["last_reload_error"], status
        assert status["schedule"]["times"] == ["07:45"]  # the old configuration is in force
        assert status["reloads"] == 0
        assert daemon.proc.poll() is None
    assert "configuration reload rejected; keeping the previous configuration" in daemon.stderr()

    service_env.write_config(base_config(service_env.plugin_dir, '[schedule]\ntimes = ["08:15"]\n'))
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _status(service_env)["reloads"] == 0:
        time.sleep(0.1)
    status = _status(service_env)
    assert status["reloads"] == 1 and status["schedule"]["times"] == ["08:15"]
    assert status["last_reload_error"] is None
    assert daemon.stop() == 0


def test_status_without_a_daemon_says_so(service_env):
    done = service_env.run("status")
    assert done.returncode == 1
    assert "no daemon is running" in done.stdout


def test_a_second_daemon_on_the_same_socket_is_refused(start_daemon, service_env):
    first = start_daemon()
    assert first.notify.wait_for("READY=1", timeout_s=READY_WAIT_S) is not None
    second = start_daemon()
    assert second.proc.wait(timeout=10) != 0
    assert "already listens" in second.stderr()
    assert _status(service_env)["pid"] == first.proc.pid
    assert first.stop() == 0
