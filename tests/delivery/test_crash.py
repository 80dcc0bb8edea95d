"""The delivery promise, end to end with real processes: nothing lost, nothing twice.

agentd runs as its own process (``python -m agentd``) and uploads to a real HTTP
collector on loopback that is first down (connection refused), then answers 503, then
stores a report but holds the answer back while the test SIGKILLs agentd mid-upload;
restarted, agentd delivers everything and the collector holds each report once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from .collector import Collector

TOKEN = "collector-token-5f2a9c"


@pytest.fixture
def collector():
    c = Collector(token=TOKEN)
    yield c
    c.close()


def config(collector: Collector) -> str:
    return f"""
[genesys]
region = "agentd-test.invalid"

[sinks.http]
url = "{collector.url}"
token = {{ env = "AGENTD_TEST_COLLECTOR_TOKEN" }}
retries = 1
backoff_s = 0.05
timeout_s = 5
"""


def upload(agentd_env) -> tuple[str, subprocess.CompletedProcess]:
    result = agentd_env.run("check", "--only", "host", "--no-daemon", "--json", "--upload",
                            extra_env={"AGENTD_TEST_COLLECTOR_TOKEN": TOKEN})
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)["id"], result


def pending(agentd_env) -> list[dict]:
    result = agentd_env.run("reports", "list", "--json", extra_env={"AGENTD_TEST_COLLECTOR_TOKEN": TOKEN})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["pending"]


def test_sigkill_during_upload_to_a_collector_that_is_down_loses_nothing_and_sends_nothing_twice(agentd_env, collector):
    agentd_env.write_config(config(collector))
    spool = agentd_env.root / "state" / "spool"

    # 1. the collector is down: the report is kept, the file sink already has it
    first, result = upload(agentd_env)
    assert "kept in the spool" in result.stderr and "delivered to file" in result.stderr
    assert TOKEN not in result.stderr
    assert [(p["id"], p["waiting_for"]) for p in pending(agentd_env)] == [(first, ["http"])]

    # 2. it answers 503: still kept, and both reports wait
    collector.set("unavailable")
    second, result = upload(agentd_env)
    assert "503" in result.stderr
    assert [p["id"] for p in pending(agentd_env)] == [first, second]

    # 3. it stores the run's own report (a new report goes first) but holds the answer; agentd is killed mid-upload
    collector.set("store_then_hang")
    env = {**agentd_env.env, "AGENTD_TEST_COLLECTOR_TOKEN": TOKEN}
    victim = subprocess.Popen(
        [sys.executable, "-m", "agentd", "check", "--only", "host", "--no-daemon", "--json", "--upload"],
        env=env, cwd=agentd_env.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert collector.in_flight.wait(30), "agentd never reached the collector"
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait(10)
    assert victim.returncode == -signal.SIGKILL
    waiting = pending(agentd_env)
    assert len(waiting) == 3 and [p["id"] for p in waiting][:2] == [first, second]
    third = waiting[2]["id"]  # the killed run's own report was spooled before the upload began
    assert set(collector.stored) == {third}  # stored, but agentd never heard so

    # 4. the collector is up; a restarted agentd delivers its own report, then the older ones
    collector.set("up")
    fourth, result = upload(agentd_env)
    assert "done" in result.stderr, result.stderr

    everything = {first, second, third, fourth}
    assert set(collector.stored) == everything
    assert all(collector.stores[key] == 1 for key in everything)  # exactly once
    assert collector.posts[third] >= 2  # it was sent again, and the key made it harmless
    assert collector.rejected == []
    assert pending(agentd_env) == []
    assert not list(spool.glob("*.json")) and not list(spool.glob("*.ack.*"))
    stored_files = sorted(p.name for p in (agentd_env.root / "state" / "reports").glob("*.json"))
    assert stored_files == sorted(f"{key}.json" for key in everything)
    for key in everything:
        assert json.loads(collector.stored[key])["id"] == key


def test_repeated_kills_at_random_moments_of_a_flush(agentd_env, collector):
    """Kill ``agentd reports flush`` at different moments while a slow collector takes
    reports; every report arrives once in the end."""
    collector.set("up")
    agentd_env.write_config(config(collector).replace('region = "agentd-test.invalid"',
                                                      'region = "agentd-test.invalid"\n[sinks.file]\nenabled = false'))
    collector.set("down")
    ids = [upload(agentd_env)[0] for _ in range(3)]
    collector.set("store_then_hang")
    env = {**agentd_env.env, "AGENTD_TEST_COLLECTOR_TOKEN": TOKEN}
    for delay in (0.0, 0.2, 0.5, 0.9):  # bounded: four kills, each within seconds
        collector.in_flight.clear()
        proc = subprocess.Popen([sys.executable, "-m", "agentd", "reports", "flush"], env=env, cwd=agentd_env.root,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if delay > 0.5:
            collector.in_flight.wait(20)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    collector.set("up")
    collector.release.set()
    result = agentd_env.run("reports", "flush", extra_env={"AGENTD_TEST_COLLECTOR_TOKEN": TOKEN})
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(collector.stored) == set(ids)
    assert all(collector.stores[key] == 1 for key in ids)
    assert pending(agentd_env) == []
