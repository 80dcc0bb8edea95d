"""Faults a PC really meets (issue 14), against a real daemon: hostile control requests,
typos in --only, a daemon that dies mid-check, a reader that leaves a pipe, clock steps."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from agentd.control import MAX_CLIENTS, MAX_REQUEST

from .conftest import base_config


def _ready(daemon) -> None:
    assert daemon.notify.wait_for("READY=1", timeout_s=10.0) is not None, daemon.stderr()


def _ask(path: Path, data: bytes, *, close_write: bool = True, timeout_s: float = 10.0) -> list[dict]:
    """Send raw bytes, read every answer line until the daemon closes."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout_s)
        sock.connect(str(path))
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon answered and closed before taking it all: the answer is still there
        if close_write:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return [json.loads(line) for line in b"".join(chunks).splitlines() if line.strip()]


MALFORMED = [
    (b"x" * (MAX_REQUEST + 10) + b"\n", "longer than"),
    (b'{"op":"check","config":123}\n', "'config' must be a file path"),
    (b'{"op":"check","deadline_s":"x"}\n', "'deadline_s' must be a number"),
    (b'{"op":"check","only":"host"}\n', "'only' must be a list"),
    (b'{"op":"check","upload":"yes"}\n', "'upload' must be true or false"),
    (b"[" * 20000 + b"]" * 20000 + b"\n", "nested too deeply"),
    (b'{"op":' * 9000 + b"\n", "bad request"),
    (b"[1,2]\n", "a request is a JSON object"),
    (b'{"op": {"nested": 1}}\n', "unknown op"),
    (b"\xff\xfe\n", "not JSON"),
    (b'{"op":"status"}', "not finished"),  # no newline, then the client stops sending
]


def test_every_malformed_request_gets_a_one_line_answer_and_no_traceback(start_daemon, service_env):
    daemon = start_daemon()
    _ready(daemon)
    path = service_env.root / "run" / "control.sock"
    for data, expected in MALFORMED:
        answers = _ask(path, data)
        assert len(answers) == 1, (data[:40], answers)
        assert answers[0]["ok"] is False and expected in answers[0]["error"], (data[:40], answers)
        assert "\n" not in answers[0]["error"]
    # still serving, and nothing in its log looks like a crash
    assert _ask(path, b'{"op":"status"}\n')[0]["ok"] is True
    assert daemon.stop() == 0
    log = daemon.stderr()
    assert "Traceback" not in log and "exception" not in log.lower(), log[-3000:]


def test_connections_beyond_the_bound_are_told_busy(start_daemon, service_env):
    daemon = start_daemon()
    _ready(daemon)
    path = service_env.root / "run" / "control.sock"
    silent = []
    try:
        for _ in range(MAX_CLIENTS):  # each holds its slot by not finishing its request line
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(10)
            sock.connect(str(path))
            sock.sendall(b'{"op":')
            silent.append(sock)
        time.sleep(0.5)  # let the daemon accept them all
        answers = _ask(path, b'{"op":"status"}\n')
        assert answers and answers[0]["ok"] is False and "busy" in answers[0]["error"], answers
    finally:
        for sock in silent:
            sock.close()
    deadline = time.monotonic() + 10  # their slots free again
    while time.monotonic() < deadline:
        answers = _ask(path, b'{"op":"status"}\n')
        if answers and answers[0]["ok"]:
            break
        time.sleep(0.2)
    assert answers[0]["ok"] is True, answers
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.stderr()


def test_only_with_an_unknown_id_is_a_usage_error_listing_the_ids(start_daemon, service_env):
    in_process = service_env.run("check", "--no-daemon", "--only", "turn_udp", timeout=60)
    assert in_process.returncode == 2, in_process.stderr
    assert "turn_udp" in in_process.stderr and "known:" in in_process.stderr and "svc.pass" in in_process.stderr
    assert in_process.stdout == ""
    daemon = start_daemon()
    _ready(daemon)
    through = service_env.run("check", "--only", "turn_udp", timeout=60)
    assert through.returncode == 2, through.stderr
    assert "turn_udp" in through.stderr and "svc.pass" in through.stderr
    assert "Traceback" not in through.stderr
    # a known id still runs through the daemon
    ok = service_env.run("check", "--json", "--only", "svc.pass", timeout=60)
    assert ok.returncode == 0 and json.loads(ok.stdout)["checks"][0]["id"] == "svc.pass", ok.stderr
    assert daemon.stop() == 0


def test_a_daemon_that_dies_mid_check_gives_its_own_exit_code(start_daemon, service_env):
    daemon = start_daemon(extra_env={"SVC_SLOW_S": "60"})
    _ready(daemon)
    cli = subprocess.Popen(
        [sys.executable, "-m", "agentd", "check", "--only", "svc.slow", "--only", "svc.pass"],
        env=service_env.env, cwd=service_env.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30  # wait until the daemon runs it
        while time.monotonic() < deadline and "running a preshift check" not in "".join(daemon.notify.received):
            daemon.notify.wait_for("never", timeout_s=0.2)
        daemon.proc.send_signal(signal.SIGKILL)
        out, err = cli.communicate(timeout=30)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 4, err
    assert "the daemon stopped during the check" in err and "--no-daemon" in err


def test_a_reader_that_leaves_the_pipe_ends_agentd_quietly(service_env):
    # `agentd config show | head -1`
    shell = subprocess.run(
        f"'{sys.executable}' -m agentd config show | head -1; echo \"exit=${{PIPESTATUS[0]}}\"",
        shell=True, executable="/bin/bash", capture_output=True, text=True, env=service_env.env, timeout=60,
        cwd=service_env.root,
    )
    assert shell.stdout.splitlines()[0] == "{"
    assert "internal error" not in shell.stderr and "BrokenPipe" not in shell.stderr, shell.stderr
    # 0 when it all fitted in the pipe before head left, 141 when head left first
    assert shell.stdout.strip().rsplit("exit=", 1)[1] in ("0", "141"), shell.stdout
    # a reader gone before the first byte: deterministic
    proc = subprocess.Popen([sys.executable, "-m", "agentd", "config", "show"], env=service_env.env, cwd=service_env.root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141, err
    assert b"internal error" not in err and b"BrokenPipe" not in err and b"Traceback" not in err, err


# -- the schedule and the wall clock -----------------------------------------------------

def _scheduler(tmp_path: Path, now: datetime):
    from agentd.schedule import Schedule, Scheduler, ScheduleSettings

    schedule = Schedule.from_settings(ScheduleSettings(times=("07:45",), weekdays=("mon",), spread_s=0, timezone="UTC"), "install-1")
    return Scheduler(schedule, state_file=tmp_path / "schedule.json", now=now)


def test_a_last_slot_from_the_future_is_not_trusted(tmp_path):
    monday_0700 = datetime(2026, 11, 30, 7, 0, tzinfo=timezone.utc)
    ahead = _scheduler(tmp_path, monday_0700 + timedelta(hours=2))  # a run with the clock 2 h ahead saved this
    assert json.loads((tmp_path / "schedule.json").read_text())["last_seen"].startswith("2026-11-30T09:00")
    restarted = _scheduler(tmp_path, monday_0700)  # the true time
    assert restarted.last_seen == monday_0700
    assert [round(s.by_s) for s in restarted.clock_steps] == [-7200]
    assert restarted.poll(monday_0700 + timedelta(minutes=44)) is None
    due = restarted.poll(monday_0700 + timedelta(minutes=45, seconds=1))
    assert due is not None and due.slot == datetime(2026, 11, 30, 7, 45, tzinfo=timezone.utc)
    del ahead


def test_a_step_back_while_running_re_plans_from_now_and_forward_runs_one_missed_slot(tmp_path):
    monday_0900 = datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc)
    scheduler = _scheduler(tmp_path, monday_0900)
    assert scheduler.poll(monday_0900 + timedelta(seconds=30)) is None
    back = monday_0900 - timedelta(hours=2)  # NTP steps the clock back to 07:00
    assert scheduler.poll(back) is None
    assert scheduler.last_seen == back
    due = scheduler.poll(back + timedelta(minutes=46))  # 07:46: the 07:45 slot runs on time
    assert due is not None and due.missed == 1
    # forward a week and a bit: one run for the one slot within catch-up, not one per slot
    due = scheduler.poll(datetime(2026, 12, 7, 8, 0, tzinfo=timezone.utc))
    assert due is not None and due.missed == 1


async def test_the_scheduler_notices_wall_clock_steps(tmp_path):
    from agentd.clocks import StepWatch

    watch = StepWatch()
    assert watch.observe(1000.0, 50.0) is None
    assert watch.observe(1030.0, 80.0) is None  # both moved 30 s
    step = watch.observe(1030.0 + 30 - 7200, 110.0)  # 30 s later the wall clock is 2 h behind
    assert step is not None and round(step.by_s) == -7200
    assert "moved back 2 h 0 min" in step.describe()
