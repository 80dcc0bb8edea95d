"""The host timeline: samples and events in SQLite, the FINDINGS.md interface, retention,
the size bound, read-only opening; and a scheduled run inside a real Daemon."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from datetime import datetime, timedelta, timezone

import pytest

from agentd.timeline import Timeline, open_existing
from agentd_plugins.host.sample import take_sample

from .test_schedule import ManualClock


def test_samples_and_events_round_trip_through_the_findings_interface(tmp_path):
    timeline = Timeline(tmp_path / "t.sqlite3")
    base = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
    sample = take_sample(12.5).to_dict()  # a real sample of this machine
    for i in range(10):
        timeline.add_sample({**sample, "cpu_pct": float(i)}, at=base + timedelta(seconds=5 * i))
    timeline.record("ws.drop", {"close_code": 1006}, at=base + timedelta(seconds=12))
    timeline.record("check.report", {"id": "r1", "ready": True}, at=base + timedelta(seconds=40))

    window = timeline.host_samples(base + timedelta(seconds=10), "2026-11-23T09:00:20Z")
    assert [s["cpu_pct"] for s in window] == [2.0, 3.0, 4.0]
    assert window[0]["at"] == "2026-11-23T09:00:10.000Z"
    assert window[0]["mem_used_pct"] == sample["mem_used_pct"] and "browsers" in window[0] and "vpn_interfaces" in window[0]
    assert timeline.events(base, base + timedelta(minutes=1), kinds=["ws.drop"]) == [
        {"at": "2026-11-23T09:00:12.000Z", "kind": "ws.drop", "data": {"close_code": 1006}}
    ]
    assert [e["kind"] for e in timeline.events(base, base + timedelta(minutes=1))] == ["ws.drop", "check.report"]
    assert timeline.stats()["samples"] == 10
    timeline.close()


def test_retention_deletes_what_is_older_than_14_days(tmp_path):
    timeline = Timeline(tmp_path / "t.sqlite3")
    now = time.time()
    for age_days in (20, 15, 13, 1):
        timeline.add_sample({"cpu_pct": float(age_days)}, at=now - age_days * 86400)
        timeline.record("mute", {"age": age_days}, at=now - age_days * 86400)
    deleted = timeline.prune(now)
    assert deleted == 4
    assert sorted(s["cpu_pct"] for s in timeline.host_samples()) == [1.0, 13.0]
    assert sorted(e["data"]["age"] for e in timeline.events()) == [1, 13]


def test_the_size_bound_drops_the_oldest_samples_first(tmp_path):
    timeline = Timeline(tmp_path / "t.sqlite3", max_bytes=256 * 1024)
    sample = {"cpu_pct": 1.0, "padding": "x" * 1000}
    start = time.time() - 3600
    for i in range(1000):  # ~1 MB of samples
        timeline._db.execute("INSERT INTO host_samples (at, data) VALUES (?, ?)", (start + i, json.dumps({**sample, "i": i})))
    timeline.record("call.start", {}, at=start + 999)
    assert timeline.size_bytes() > 256 * 1024
    timeline.prune()
    kept = timeline.host_samples()
    assert timeline.size_bytes() <= 256 * 1024
    assert 0 < len(kept) < 1000
    assert kept[-1]["i"] == 999 and kept[0]["i"] == 1000 - len(kept)  # the newest survive
    assert timeline.events()  # events are small and worth more: they stay
    assert (tmp_path / "t.sqlite3").stat().st_size < 1024 * 1024


def test_read_only_opening_sees_the_writer_and_cannot_write(tmp_path):
    path = tmp_path / "t.sqlite3"
    assert open_existing(path) is None
    writer = Timeline(path)
    writer.add_sample({"cpu_pct": 50.0})
    reader = open_existing(path)
    assert reader is not None and [s["cpu_pct"] for s in reader.host_samples()] == [50.0]
    writer.add_sample({"cpu_pct": 60.0})  # the writer goes on while the reader is open
    assert [s["cpu_pct"] for s in reader.host_samples()] == [50.0, 60.0]
    with pytest.raises(sqlite3.OperationalError):
        reader._db.execute("DELETE FROM host_samples")
    reader.close()
    writer.close()


async def test_a_scheduled_check_runs_in_the_daemon_and_its_report_is_delivered(service_env, tmp_path):
    """A real Daemon in this process with a clock the test controls: the slot comes at once."""
    from agentd.app import App
    from agentd.daemon import Daemon
    from agentd.paths import install_id, state_dir
    from agentd.schedule import spread_offset_s

    now = datetime.now(timezone.utc)
    slot = (now + timedelta(minutes=2)).astimezone()
    service_env.write_config(
        (service_env.config_file.read_text())
        + f'\n[schedule]\ntimes = ["{slot:%H:%M}"]\nweekdays = ["mon","tue","wed","thu","fri","sat","sun"]\nspread_s = 0\n'
    )
    app = App.load(service_env.config_file)
    clock = ManualClock(now)
    daemon = Daemon(app, clock=clock, control_path=tmp_path / "c.sock")
    serving = asyncio.create_task(daemon.serve())
    reports = state_dir() / "reports"
    try:
        async with asyncio.timeout(20):
            while not (reports.is_dir() and any(reports.glob("*.json"))):
                await asyncio.sleep(0.05)
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(serving, 10) == 0
    assert spread_offset_s(install_id(), 0) == 0
    (delivered,) = reports.glob("*.json")
    report = json.loads(delivered.read_text())
    assert report["profile"] == "preshift" and {c["id"] for c in report["checks"]} >= {"svc.pass", "svc.fail"}
    assert report["id"] == daemon.last_report.id
    history = Timeline(state_dir() / "timeline.sqlite3")
    assert [e["data"]["trigger"] for e in history.events(kinds=["check.report"])] == ["schedule"]
    history.close()


@pytest.mark.skipif(__import__("os").geteuid() != 0 or not __import__("shutil").which("setpriv"), reason="needs root and setpriv")
def test_a_group_member_reads_the_live_timeline_of_the_service(tmp_path):
    """As packaged: the service writes with UMask 0027 into a 0750 folder; an agent in the
    group (here: nobody with a throw-away group) opens it read-only while it is written."""
    import grp
    import os
    import subprocess
    import sys
    import uuid
    from pathlib import Path

    group = f"agentdt{uuid.uuid4().hex[:8]}"
    folder = Path(f"/tmp/agentd-tl-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    subprocess.run(["groupadd", group], check=True)
    old_umask = os.umask(0o027)
    try:
        gid = grp.getgrnam(group).gr_gid
        folder.mkdir(mode=0o750)
        os.chown(folder, 0, gid)
        writer = Timeline(folder / "timeline.sqlite3")
        writer.add_sample({"cpu_pct": 42.0})
        writer.record("ws.drop", {"close_code": 1006})
        for path in folder.iterdir():
            os.chown(path, 0, gid)
        assert oct((folder / "timeline.sqlite3").stat().st_mode & 0o777) == "0o640"
        probe = (
            "import json, sys; from pathlib import Path; from agentd.timeline import open_existing; "
            "t = open_existing(Path(sys.argv[1])); "
            "print(json.dumps([[s['cpu_pct'] for s in t.host_samples()], [e['kind'] for e in t.events()]]))"
        )
        argv = [sys.executable, "-c", probe, str(folder / "timeline.sqlite3")]
        member = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", f"--groups={gid}", *argv],
                                capture_output=True, text=True, timeout=30, cwd="/")
        assert member.returncode == 0 and json.loads(member.stdout) == [[42.0], ["ws.drop"]], member.stderr
        stranger = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv],
                                  capture_output=True, text=True, timeout=30, cwd="/")
        assert stranger.returncode != 0  # not in the group: cannot open it
        writer.close()
    finally:
        os.umask(old_umask)
        __import__("shutil").rmtree(folder, ignore_errors=True)
        subprocess.run(["groupdel", group], check=False)


DIAGNOSTICS = {"entities": [
    {"type": "ICEConnectionStateChange", "timestamp": "2026-11-20T09:00:00.000Z", "details": {"state": "connected"}},
    {"type": "RtcStats", "timestamp": "2026-11-20T09:01:00.000Z", "details": {"packetsLost": 0, "roundTripTime": 0.05, "audioLevel": 0.0}},
    {"type": "ICEConnectionStateChange", "timestamp": "2026-11-20T09:02:00.000Z", "details": {"state": "disconnected"}},
]}


def test_in_process_diagnose_reads_the_daemons_timeline(agentd_env, tmp_path):
    """No daemon runs; `agentd diagnose` opens the timeline it left, read-only, and the
    report carries the PC's own minutes around the call."""
    from agentd.paths import state_dir
    from agentd.timeline import default_path

    from tests.conftest import OFFLINE_GENESYS

    agentd_env.write_config(OFFLINE_GENESYS)
    history = Timeline(default_path())
    for i in range(10):
        history.add_sample({"cpu_pct": 97.0, "mem_used_pct": 95.0}, at=f"2026-11-20T09:00:{i * 5:02d}Z")
    history.add_sample({"cpu_pct": 5.0}, at="2026-11-19T09:00:00Z")  # a day earlier: outside the window
    history.record("ws.drop", {"close_code": 1006}, at="2026-11-20T09:01:30Z")
    history.close()
    before = default_path().stat().st_mtime_ns
    export = tmp_path / "diagnostics.json"
    export.write_text(json.dumps(DIAGNOSTICS))

    done = agentd_env.run("diagnose", "conv-1", "--diagnostics-file", str(export), "--json", timeout=60)
    report = json.loads(done.stdout)
    (local,) = [e for e in report["evidence"] if e["kind"] == "local.timeline"]
    assert local["status"] == "ok"
    assert [s["cpu_pct"] for s in local["data"]["host_samples"]] == [97.0] * 10
    assert [e["kind"] for e in local["data"]["events"]] == ["ws.drop"]
    assert default_path().stat().st_mtime_ns == before  # read-only: the file was not touched
    assert state_dir() == agentd_env.root / "state"


def test_samples_older_than_a_day_are_thinned_to_one_a_minute(tmp_path):
    timeline = Timeline(tmp_path / "t.sqlite3")
    now = time.time()
    day_ago = now - 86400
    # two hours at 5 s: the first hour older than a day, the second within it
    for i in range(1440):
        timeline.add_sample({"i": i}, at=day_ago - 3600 + i * 5)
    timeline.prune(now)
    kept = timeline.host_samples()
    older = [s for s in kept if s["i"] < 720]
    newer = [s for s in kept if s["i"] >= 720]
    assert len(newer) == 720  # the last day untouched
    assert 59 <= len(older) <= 61  # one an hour's minute
    stamps = [datetime.fromisoformat(s["at"].replace("Z", "+00:00")).timestamp() for s in older]
    # minute buckets are the clock's: the first one may be cut, the others are a minute apart
    assert all(55 <= b - a <= 65 for a, b in zip(stamps[1:], stamps[2:]))
