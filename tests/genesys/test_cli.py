"""The commands as users run them (subprocesses) against the fake: diagnose, archive, secrets."""

from __future__ import annotations

import asyncio
import json
import sqlite3

from agentd.testing.fake_genesys import CC_CLIENT_SECRET, DROPPED_CALL_ID, INTEGRATION_INACTIVE_ID
from agentd.testing.invariants import assert_every_bad_check_explained

from .helpers import config_text

LOW_MOS_CALLS = {DROPPED_CALL_ID, "c0ffee00-1234-4abc-8def-000000000003"}  # MOS 2.71 and 3.2 in the last 24 h
SECRET_ENV = {"AGENTD_TEST_CLIENT_SECRET": CC_CLIENT_SECRET}


async def run(agentd_env, *args, **kw):
    """agentd as a subprocess, off the event loop (the fake is served on it)."""
    return await asyncio.to_thread(agentd_env.run, *args, extra_env=SECRET_ENV, **kw)


async def test_diagnose_json_names_each_source_and_its_figures(fake_genesys, agentd_env):
    agentd_env.write_config(config_text(fake_genesys))
    done = await run(agentd_env, "diagnose", DROPPED_CALL_ID, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["schema"] == "agentd.report/1" and report["conversation_id"] == DROPPED_CALL_ID
    items = {e["id"]: e for e in report["evidence"]}
    sources = {e["source"] for e in report["evidence"]}
    assert {
        "genesys.conversation",
        "genesys.call_quality",
        "genesys.webrtc_diagnostics",
        "genesys.browser_log",
        "genesys.session_fragmentation",
        "genesys.station",
        "genesys.integration",
        "genesys.dropped_calls",
    } <= sources
    assert items["genesys.call_quality"]["data"]["minMos"] == 2.71
    assert items["genesys.session_fragmentation"]["data"]["per_session_talk_s"] == [90.0, 200.0]
    assert items["genesys.dropped_calls"]["data"]["total"] == 6
    assert items[f"genesys.integration:{INTEGRATION_INACTIVE_ID}"]["data"]["reportedState"]["code"] == "INACTIVE"
    assert items["genesys.station"]["data"]["station"]["webRtcForceTurn"] is True
    assert all(e["window_start"] for e in report["evidence"] if e["status"] == "ok")
    assert {"platform.session_fragmentation", "platform.integration_inactive"} <= {v["code"] for v in report["verdicts"]}
    assert_every_bad_check_explained(report)


async def test_diagnose_without_credentials_says_so_in_one_line(agentd_env):
    agentd_env.write_config('[genesys]\nregion = "mypurecloud.com"\n')
    done = await asyncio.to_thread(agentd_env.run, "diagnose", DROPPED_CALL_ID, "--json")
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no Genesys Cloud credentials" in lines[0] and "client_id" in lines[0]


async def test_diagnose_survives_a_429_storm_a_5xx_burst_and_malformed_json(fake_genesys, agentd_env):
    agentd_env.write_config(config_text(fake_genesys))
    state = fake_genesys.state
    state.inject("^/api/v2/conversations/", status=429, times=3, retry_after="0.2")
    state.inject("^/api/v2/users/.*/station$", status=503, times=2)
    state.inject("/logcapture/browser/entries/query$", kind="malformed")
    done = await run(agentd_env, "diagnose", DROPPED_CALL_ID, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert_every_bad_check_explained(report)
    items = {e["id"]: e for e in report["evidence"]}
    assert items["genesys.conversation"]["status"] == "ok"  # after the 429s
    assert items["genesys.station"]["status"] == "ok"  # after the 503s
    assert items["genesys.browser_log"]["status"] == "error" and "not JSON" in items["genesys.browser_log"]["summary"]
    assert [r.status for r in state.requests_to("^/api/v2/conversations/")][:4] == [429, 429, 429, 200]


async def test_archive_twice_stores_each_call_once_and_resumes(fake_genesys, agentd_env):
    agentd_env.write_config(config_text(fake_genesys))
    fake_genesys.state.job_page_size = 1  # two results: two pages linked by a cursor
    first = await run(agentd_env, "archive", "--since", "24h", "--mos-below", "3.5", "--limit", "1", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["stored"] == 1  # an interrupted/limited run keeps what it did
    second = await run(agentd_env, "archive", "--since", "24h", "--mos-below", "3.5", "--json")
    third = await run(agentd_env, "archive", "--since", "24h", "--mos-below", "3.5", "--json")
    assert second.returncode == 0 and third.returncode == 0, second.stderr + third.stderr
    assert (json.loads(second.stdout)["stored"], json.loads(second.stdout)["already"]) == (1, 1)
    assert (json.loads(third.stdout)["stored"], json.loads(third.stdout)["already"]) == (0, 2)
    db = sqlite3.connect(agentd_env.root / "state" / "genesys-archive.sqlite")
    rows = db.execute("SELECT conversation_id, evidence FROM calls").fetchall()
    assert {r[0] for r in rows} == LOW_MOS_CALLS and len(rows) == 2
    evidence = json.loads(dict(rows)[DROPPED_CALL_ID])
    kinds = {e.get("kind") for e in evidence}
    assert {"genesys.conversation", "genesys.call_quality", "genesys.session_fragmentation"} <= kinds
    assert "genesys.dropped_calls" not in kinds  # per-call evidence only
    jobs = fake_genesys.state.requests_to("/details/jobs/[^/]+/results$")
    assert any("cursor" in r.query for r in jobs)  # the async job's cursor was followed
    listed = await run(agentd_env, "archive", "--list")
    assert "2 call(s)" in listed.stdout


async def test_archive_leaves_unreadable_calls_for_the_next_run(fake_genesys, agentd_env):
    agentd_env.write_config(config_text(fake_genesys))
    fake_genesys.state.inject(f"^/api/v2/(analytics/)?conversations/{DROPPED_CALL_ID}", status=404, times=20)
    done = await run(agentd_env, "archive", "--since", "24h", "--json")
    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert (result["stored"], result["failed"], result["failed_ids"]) == (1, 1, [DROPPED_CALL_ID])
    fake_genesys.state.faults.clear()
    again = await run(agentd_env, "archive", "--since", "24h", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["stored"] == 1


async def test_an_interrupted_archive_keeps_what_it_stored_and_the_next_run_finishes(fake_genesys, agentd_env):
    import signal
    import stat
    import sys

    agentd_env.write_config(config_text(fake_genesys))
    # the second call (by start time) answers slowly: the run is interrupted while waiting for it
    fake_genesys.state.inject(f"^/api/v2/conversations/{DROPPED_CALL_ID}$", kind="slow", delay_s=4.0, times=1)
    database = agentd_env.root / "state" / "genesys-archive.sqlite"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentd", "archive", "--since", "24h",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**agentd_env.env, **SECRET_ENV}, cwd=agentd_env.root,
    )
    try:
        stored = 0
        for _ in range(150):  # at most 15 s
            await asyncio.sleep(0.1)
            try:
                with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
                    stored = db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
            except sqlite3.OperationalError:
                continue  # not created yet
            if stored:
                break
        assert stored == 1 and process.returncode is None
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode != 0
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    again = await run(agentd_env, "archive", "--since", "24h", "--json")
    assert again.returncode == 0, again.stderr
    assert (json.loads(again.stdout)["stored"], json.loads(again.stdout)["already"]) == (1, 1)
    with sqlite3.connect(database) as db:
        assert {r[0] for r in db.execute("SELECT conversation_id FROM calls")} == LOW_MOS_CALLS
