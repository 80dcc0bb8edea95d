"""A real `agentd hub serve` and real `agentd run` daemons over loopback: enrollment,
the WebSocket, a helpdesk-started check with live progress, the report through the spool."""

from __future__ import annotations

import json
import os
import stat

import httpx
import pytest

from tests.hub.conftest import wait_until


def connected(url: str, auth, install_id: str | None = None):
    def check():
        pcs = httpx.get(f"{url}/api/v1/pcs", params={"readiness": "connected", "per_page": 500}, auth=auth, timeout=5).json()["pcs"]
        return [p for p in pcs if p["connected"] and (install_id is None or p["install_id"] == install_id)]
    return check


def run_check_and_wait(url: str, auth, install_id: str, timeout_s: float = 120.0) -> dict:
    started = httpx.post(f"{url}/api/v1/pcs/{install_id}/checks", json={"profile": "preshift"}, auth=auth, timeout=10)
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]

    def landed():
        run = httpx.get(f"{url}/api/v1/runs/{run_id}", auth=auth, timeout=5).json()
        assert run["state"] != "failed", run
        return run if run["report_stored"] else None

    return wait_until(landed, timeout_s, interval_s=0.3, what="the run's report to land")


@pytest.mark.floor
def test_a_daemon_enrolls_connects_and_runs_a_check_from_the_hub(hub, pc_factory):
    server = hub.start()
    key = hub.enroll_key()
    auth = hub.add_user()
    pc = pc_factory(server.url, key, extra_env={"HUBTEST_SUMMARY": "slow & <broken>"})
    pc.start()
    wait_until(connected(server.url, auth), 120, interval_s=0.3, what="the daemon to connect")
    install_id = pc.install_id()

    # the install token: owner-only on the PC, never in the daemon's log
    token_file = pc.root / "state" / "hub-token.json"
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    token = json.loads(token_file.read_text())["token"]

    run = run_check_and_wait(server.url, auth, install_id)
    events = run["events"]
    kinds = [(e["event"], e.get("check_id") or (e.get("result") or {}).get("id")) for e in events]
    assert ("started", "hubtest.slow") in kinds and ("finished", "hubtest.quick") in kinds
    assert any(e["event"] == "note" and e["text"] == "half way there" for e in events)
    # progress came before the end: the note arrived before the slow check finished
    note_at = next(e["at"] for e in events if e["event"] == "note")
    slow_done_at = next(e["at"] for e in events if e["event"] == "finished" and e["result"]["id"] == "hubtest.slow")
    assert note_at <= slow_done_at

    report = httpx.get(f"{server.url}/api/v1/reports/{run['report_id']}", auth=auth, timeout=10).json()["report"]
    assert report["agent"]["install_id"] == install_id and report["ready"] is False
    assert {c["id"]: c["status"] for c in report["checks"]} == {"hubtest.quick": "pass", "hubtest.slow": "fail"}
    assert next(c for c in report["checks"] if c["id"] == "hubtest.slow")["summary"] == "slow & <broken>"
    reports = httpx.get(f"{server.url}/api/v1/pcs/{install_id}/reports", auth=auth, timeout=10).json()["reports"]
    assert [r["id"] for r in reports].count(run["report_id"]) == 1

    # the PC revoked: its socket is closed and it cannot come back
    hub.store(lambda store: store.revoke_pc(install_id))
    wait_until(lambda: not connected(server.url, auth, install_id)(), 30, what="the revoked PC's socket to close")
    assert httpx.post(f"{server.url}/api/v1/pcs/{install_id}/checks", json={}, auth=auth, timeout=10).status_code == 404
    pc.stop()
    for text in (pc.stderr(), server.stderr()):
        assert token not in text and token.split(".")[2] not in text
        assert key.split(".")[2] not in text and auth[1] not in text
