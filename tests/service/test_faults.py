"""Faults a PC really meets (issue 14), against a real daemon: hostile control requests,
typos in --only, a daemon that dies mid-check, a reader that leaves a pipe, clock steps."""

from __future__ import annotations

import json
import os
import re
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
    assert daemon.notify.wait_for("READY=1", timeout_s=60.0) is not None, daemon.stderr()  # a loaded CI machine


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
        # The daemon accepts them in its own time: ask until it says busy (bounded), rather
        # than trusting a fixed sleep, which a busy machine outran.
        deadline = time.monotonic() + 15
        while True:
            answers = _ask(path, b'{"op":"status"}\n')
            if (answers and answers[0]["ok"] is False) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
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
    assert not _unhandled_tracebacks(daemon.stderr())


def _unhandled_tracebacks(stderr: str) -> list[str]:
    """Lines that carry a traceback at error level or outside agentd's JSON log. A fresh-clone
    CI run once logged a client's broken pipe below error level, with its traceback, in this
    test; not reproduced since, and a handled broken pipe is no fault of the daemon's."""
    found = []
    for line in stderr.splitlines():
        if "Traceback" not in line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            found.append(line)
            continue
        if not isinstance(event, dict) or event.get("level") in ("error", "critical", None):
            found.append(line)
    return found


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


# -- the timeline's retention and clock jumps ----------------------------------------------

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
needs_faketime = pytest.mark.skipif(not FAKETIME_LIB.exists(), reason="Debian's faketime is not installed")


def _faked(env: dict, faketime: str) -> dict:
    return {**env, "LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME": faketime, "FAKETIME_DONT_RESET": "1"}


@needs_faketime
def test_a_jump_forward_of_15_days_deletes_nothing_newer_than_retention(tmp_path):
    from agentd.timeline import Timeline

    path = tmp_path / "timeline.sqlite3"
    timeline = Timeline(path)
    now = time.time()
    for age_days in (20, 10, 0.01):
        timeline.add_sample({"age": age_days}, at=now - age_days * 86400)
        timeline.record("mute", {"age": age_days}, at=now - age_days * 86400)
    timeline.close()
    # the daemon starts again with the wall clock 15 days ahead: it opens (and prunes) the file
    reopen = f"from agentd.timeline import Timeline; t = Timeline({str(path)!r}); t.add_sample({{'age': -15}}); t.close()"
    done = subprocess.run([sys.executable, "-c", reopen], env=_faked(dict(os.environ), "+15d"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "far ahead" in done.stdout + done.stderr
    kept = Timeline(path, readonly=True)
    # 20 days old by any clock: gone; 10 days and minutes old by witnessed time: kept
    assert sorted(s["age"] for s in kept.host_samples()) == [-15, 0.01, 10]
    assert sorted(e["data"]["age"] for e in kept.events()) == [0.01, 10]
    kept.close()


def test_a_jump_forward_while_running_ages_rows_by_the_steady_clock(tmp_path, monkeypatch):
    from agentd import timeline as timeline_mod

    timeline = timeline_mod.Timeline(tmp_path / "t.sqlite3")
    now = time.time()
    timeline.record("mute", {"age": 10}, at=now - 10 * 86400)
    real_time = time.time
    with monkeypatch.context() as patched:  # the wall clock alone jumps 15 days; the steady one does not
        patched.setattr(timeline_mod.time, "time", lambda: real_time() + 15 * 86400)
        timeline.prune()
    assert [e["data"]["age"] for e in timeline.events()] == [10]
    timeline.close()


@needs_faketime
def test_a_clock_stepped_back_2_hours_and_a_restart_keeps_the_next_slot_on_time(start_daemon, service_env):
    from agentd.control import ControlClient
    import asyncio

    service_env.write_config(base_config(
        service_env.plugin_dir, '[schedule]\ntimes = ["07:45"]\nweekdays = ["mon"]\nspread_s = 0\ntimezone = "UTC"\n'))
    # a daemon whose clock ran 2 h ahead (Monday 09:44) saves the last slot it looked at
    ahead = start_daemon(extra_env=_faked({}, "@2026-11-30 09:44:00"))
    _ready(ahead)
    assert ahead.stop() == 0
    saved = json.loads((service_env.root / "state" / "schedule.json").read_text())["last_seen"]
    assert saved.startswith("2026-11-30T09:4")
    # NTP steps the clock back to the true 07:44:40 and the daemon starts again: 07:45 runs on time
    daemon = start_daemon(extra_env={**_faked({}, "@2026-11-30 07:44:40"), "SVC_SLOW_S": "0.1"})
    _ready(daemon)
    client = ControlClient(service_env.root / "run" / "control.sock")
    status = asyncio.run(client.status())
    assert status["schedule"]["next"].startswith(("2026-11-30T07:45:00", "2026-12-07T07:45:00")), status["schedule"]
    # about 2 h back (less the seconds the first daemon ran and the second took to start)
    assert [-7300 < s["by_s"] < -6900 for s in status["clock_steps"]] == [True], status["clock_steps"]
    shown = service_env.run("status", timeout=60)
    assert re.search(r"clock: moved back (1 h 5\d|2 h \d+) min", shown.stdout), shown.stdout
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status = asyncio.run(client.status())
        if status["last_report"]:
            break
        time.sleep(1)
    assert status["schedule"]["runs"] == 1 and status["last_report"], status
    assert status["last_report"]["created"].startswith("2026-11-30T07:45"), status["last_report"]
    assert daemon.stop() == 0


# -- full disks ---------------------------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")


@pytest.fixture
def small_disk():
    """``mount(path, mb)``: a small tmpfs over ``path`` (unmounted at the end); ``fill(path)``
    writes a file until the disk is full and returns it."""
    mounted: list[Path] = []

    def mount(path: Path, mb: int = 4) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mb}m,mode=0700", "tmpfs", str(path)], check=True)
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb") as out:
        try:
            for _ in range(100000):  # bounded: a tmpfs of a few MB fills long before
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    return filler


@pytest.fixture
def collector():
    from delivery.collector import Collector

    c = Collector()
    c.set("up")
    yield c
    c.close()


def _upload_config(service_env, collector, extra: str = "") -> None:
    service_env.write_config(base_config(service_env.plugin_dir, f'[sinks.http]\nurl = "{collector.url}"\ntimeout_s = 3.0\n{extra}'))


@needs_root
def test_a_full_state_disk_through_the_daemon_costs_a_warning_not_the_report(start_daemon, service_env, small_disk, collector, tmp_path):
    state = small_disk(service_env.root / "state", mb=4)
    _upload_config(service_env, collector, f'[spool]\npath = "{tmp_path / "spool"}"\n')
    daemon = start_daemon()
    _ready(daemon)
    filler = fill(state)
    done = service_env.run("check", "--json", "--upload", "--only", "svc.pass", timeout=120)
    assert done.returncode == 3, done.stderr  # made, printed, delivered, but not kept
    report = json.loads(done.stdout)
    assert report["checks"][0]["id"] == "svc.pass"
    assert "warning:" in done.stderr and "not recorded in the timeline" in done.stderr, done.stderr
    assert collector.stores[report["id"]] == 1 and collector.posts[report["id"]] == 1
    # space returns: the timeline takes the next report
    filler.unlink()
    again = service_env.run("check", "--json", "--upload", "--only", "svc.pass", timeout=120)
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)["id"]
    assert collector.stores[second] == 1
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.stderr()
    from agentd.timeline import Timeline

    timeline = Timeline(state / "timeline.sqlite3", readonly=True)
    recorded = [e["data"]["id"] for e in timeline.events(kinds=["check.report"])]
    timeline.close()
    assert second in recorded and report["id"] not in recorded


@needs_root
def test_a_full_disk_in_process_still_prints_and_delivers_once(service_env, small_disk, collector, tmp_path):
    # the state folder (and the spool and file store under it) full
    state = small_disk(service_env.root / "state", mb=2)
    _upload_config(service_env, collector)
    fill(state)
    done = service_env.run("check", "--no-daemon", "--json", "--upload", "--only", "svc.pass", timeout=120)
    assert done.returncode == 3, done.stderr
    report = json.loads(done.stdout)
    assert "warning:" in done.stderr and "not spooled" in done.stderr, done.stderr
    assert collector.stores[report["id"]] == 1 and collector.posts[report["id"]] == 1
    # a spool on its own full disk, the state folder with room
    spool = small_disk(tmp_path / "spool", mb=1)
    fill(spool)
    _upload_config(service_env, collector, f'[spool]\npath = "{spool}"\n[sinks.file]\npath = "{tmp_path / "store"}"\n')
    done = service_env.run("check", "--no-daemon", "--json", "--upload", "--only", "svc.pass", timeout=120)
    assert done.returncode == 3, done.stderr
    report = json.loads(done.stdout)
    assert collector.stores[report["id"]] == 1 and collector.posts[report["id"]] == 1
    assert (tmp_path / "store" / f"{report['id']}.json").exists()  # the file sink got it directly too
    assert "Traceback" not in done.stderr


# -- a stalling collector ----------------------------------------------------------------------

def test_a_stalling_collector_costs_a_foreground_upload_only_its_own_budget(service_env, collector, tmp_path):
    # an older report waits in the spool for the collector
    from agentd.spool import Spool
    from delivery.test_spool import make_report

    old = make_report(7)
    Spool(tmp_path / "spool").put(old.id, old.to_json().encode())
    _upload_config(service_env, collector, f'[spool]\npath = "{tmp_path / "spool"}"\nsink_timeout_s = 6\n')
    collector.stall_s = 60
    collector.set("stall")
    started = time.monotonic()
    done = service_env.run("check", "--no-daemon", "--json", "--upload", "--only", "svc.pass", timeout=120)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr  # kept in the spool: not a failure to keep
    report = json.loads(done.stdout)
    assert "kept in the spool" in done.stderr
    # its own delivery (6 s budget, one 3 s request) and the process's start; not 60 s, not the old report's turn too
    assert took < 40, took
    assert collector.posts[report["id"]] == 1  # one post for one Idempotency-Key, no pile of retries
    assert collector.posts[old.id] == 0  # the stalled collector was not asked for the older one as well


def test_200_clients_with_unterminated_4_mib_lines_leave_the_daemon_small(start_daemon, service_env):
    import asyncio

    from agentd.testing.hostile_http import flood_unterminated

    daemon = start_daemon()
    _ready(daemon)
    answered, closed = asyncio.run(flood_unterminated(str(service_env.root / "run" / "control.sock"), 200, 4 * 2**20))
    status = Path(f"/proc/{daemon.proc.pid}/status").read_text()
    peak_mb = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024
    assert peak_mb < 150, peak_mb  # 903 MB before the bounds; ~63 MB measured with them
    assert answered == 200, (answered, closed)  # each one told, in one line, why not
    assert service_env.run("status", timeout=60).returncode == 0  # and it still serves
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.stderr()


def test_the_daemon_delivers_older_reports_in_the_background_after_a_check(start_daemon, service_env, collector, tmp_path):
    from agentd.spool import Spool
    from delivery.test_spool import make_report

    old = make_report(8)
    Spool(tmp_path / "spool").put(old.id, old.to_json().encode())
    _upload_config(service_env, collector, f'retries = 0\n[spool]\npath = "{tmp_path / "spool"}"\n')
    collector.set("down")  # the daemon's flush at start cannot deliver it
    daemon = start_daemon()
    _ready(daemon)
    time.sleep(3)  # its one refused attempt is over
    assert old.id not in collector.stored
    collector.set("up")
    done = service_env.run("check", "--json", "--upload", "--only", "svc.pass", timeout=120)
    assert done.returncode == 0, done.stderr
    own = json.loads(done.stdout)["id"]
    assert collector.stores[own] == 1
    deadline = time.monotonic() + 60  # not the 15-minute flush interval: right after the check
    while time.monotonic() < deadline and old.id not in collector.stored:
        time.sleep(0.5)
    assert collector.stores[old.id] == 1
    assert daemon.stop() == 0


def test_a_stalling_collector_costs_a_check_through_the_daemon_only_its_own_budget(start_daemon, service_env, collector, tmp_path):
    _upload_config(service_env, collector, f'retries = 0\n[spool]\npath = "{tmp_path / "spool"}"\nsink_timeout_s = 6\n')
    collector.stall_s = 60
    collector.set("stall")
    daemon = start_daemon()
    _ready(daemon)
    started = time.monotonic()
    done = service_env.run("check", "--json", "--upload", "--only", "svc.pass", timeout=120)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert "(by the daemon)" in done.stderr and "kept in the spool" in done.stderr, done.stderr
    assert took < 40, took  # its own 6 s budget and the CLI's start, not the collector's 60 s
    assert collector.posts[report["id"]] == 1
    assert daemon.stop(timeout_s=30) == 0
