"""Runs started from the hub have a lifecycle: they end (done, failed, offline when the PC's
socket closes, timed out when the PC goes quiet), the PC page lists them, and a PC cannot
fill the hub with progress (the cap is named in the run). Links survive the login."""

from __future__ import annotations

import json
import time
from urllib.parse import unquote

import httpx
from websockets.sync.client import connect

from agentd.hub.store import RUN_EVENT_CAP
from tests.hub.conftest import enroll, make_report, post_report, wait_until
from tests.hub.test_daemon import connected


def start_run(url: str, auth, install_id: str, profile: str = "preshift") -> str:
    answer = httpx.post(f"{url}/api/v1/pcs/{install_id}/checks", json={"profile": profile}, auth=auth, timeout=10)
    assert answer.status_code == 202, answer.text
    return answer.json()["run_id"]


def get_run(url: str, auth, run_id: str, after: int = 0) -> dict:
    return httpx.get(f"{url}/api/v1/runs/{run_id}", params={"after": after}, auth=auth, timeout=10).json()


def test_a_run_ends_offline_when_the_pc_goes_away_and_the_pc_page_lists_it(live_hub, pc_factory):
    key = live_hub.enroll_key()
    auth = live_hub.add_user()
    pc = pc_factory(live_hub.url, key, extra_env={"HUBTEST_SLOW_S": "60"})
    pc.start()
    wait_until(connected(live_hub.url, auth), 120, interval_s=0.3, what="the daemon to connect")
    run_id = start_run(live_hub.url, auth, pc.install_id())
    wait_until(lambda: get_run(live_hub.url, auth, run_id)["state"] == "running", 60, interval_s=0.2, what="the run to start")
    pc.proc.kill()  # the PC dies mid-run: its socket closes
    pc.proc.wait(10)
    killed = time.monotonic()
    run = wait_until(lambda: (r := get_run(live_hub.url, auth, run_id))["ended"] and r, 10, interval_s=0.1, what="the run to end")
    assert time.monotonic() - killed < 10
    assert run["state"] == "offline" and run["error"] == "its connection to the hub closed during the check", run
    assert any(e.get("check_id") == "hubtest.slow" for e in run["events"])

    with httpx.Client(base_url=live_hub.url, timeout=10) as client:
        assert client.post("/login", data={"name": auth[0], "password": auth[1]}).status_code == 303
        page = client.get(f"/pcs/{pc.install_id()}").text
    assert f'data-run-id="{run_id}" data-state="offline"' in page and "PC went offline" in page and auth[0] in page
    assert 'data-active-run=""' in page  # nothing left to pick up after a reload


def test_a_run_in_progress_is_picked_up_by_the_pc_page(live_hub, pc_factory):
    key = live_hub.enroll_key()
    auth = live_hub.add_user()
    pc = pc_factory(live_hub.url, key, extra_env={"HUBTEST_SLOW_S": "5"})
    pc.start()
    wait_until(connected(live_hub.url, auth), 120, interval_s=0.3, what="the daemon to connect")
    run_id = start_run(live_hub.url, auth, pc.install_id())
    with httpx.Client(base_url=live_hub.url, timeout=10) as client:
        client.post("/login", data={"name": auth[0], "password": auth[1]})
        assert f'data-active-run="{run_id}"' in client.get(f"/pcs/{pc.install_id()}").text
        run = wait_until(lambda: (r := get_run(live_hub.url, auth, run_id))["ended"] and r, 90, interval_s=0.3, what="the run to end")
        assert run["state"] == "done"
        # polling asks only for what it has not shown: after the last seq, no events
        last = max(e["seq"] for e in get_run(live_hub.url, auth, run_id)["events"])
        assert get_run(live_hub.url, auth, run_id, after=last)["events"] == []
        assert f'data-run-id="{run_id}" data-state="done"' in client.get(f"/pcs/{pc.install_id()}").text


def test_progress_per_run_is_capped_and_the_cap_named_in_the_run(live_hub):
    """A PC that sends unbounded progress (here: 600 events of 20 KB each) leaves at most
    RUN_EVENT_CAP small events, the last one saying so; the run API stays small."""
    key = live_hub.enroll_key()
    auth = live_hub.add_user()
    install_id, token = enroll(live_hub.url, key, hostname="chatty")
    ws_url = live_hub.url.replace("http://", "ws://") + "/api/v1/agent"
    with connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=10) as ws:
        wait_until(connected(live_hub.url, auth, install_id), 10, what="the fake PC to connect")
        run_id = start_run(live_hub.url, auth, install_id)
        request = json.loads(ws.recv(timeout=10))
        assert request == {"type": "check", "run_id": run_id, "profile": "preshift"}
        for seq in range(1, 601):
            ws.send(json.dumps({"type": "progress", "run_id": run_id, "seq": seq,
                                "event": {"event": "note", "check_id": "flood", "text": "x" * 20000, "junk": "y" * 5000}}))
        ws.send(json.dumps({"type": "done", "run_id": run_id, "report_id": "no-such-report"}))
        run = wait_until(lambda: (r := get_run(live_hub.url, auth, run_id))["state"] == "done" and r, 60, interval_s=0.3,
                         what="the flood to be read")
    answer = httpx.get(f"{live_hub.url}/api/v1/runs/{run_id}", auth=auth, timeout=10)
    assert run["progress_cap"] == RUN_EVENT_CAP == 200
    assert len(run["events"]) == RUN_EVENT_CAP + 1
    assert run["events"][-1]["event"] == "capped" and f"({RUN_EVENT_CAP} events)" in run["events"][-1]["text"]
    assert all(set(e) <= {"seq", "at", "event", "check_id", "text"} for e in run["events"])  # the junk is not kept
    assert max(len(e["text"]) for e in run["events"]) <= 400
    assert len(answer.content) < 120_000, len(answer.content)


def test_runs_that_are_not_answered_or_go_quiet_end(live_hub):
    key = live_hub.enroll_key()
    install_id, _ = enroll(live_hub.url, key)

    async def scenario(store):
        silent = await store.new_run(install_id, "preshift", "helpdesk")
        quiet = await store.new_run(install_id, "full", "helpdesk")
        await store.add_run_event(quiet, 1, {"event": "started", "check_id": "dns"})
        await store.expire_runs(answer_s=3600, idle_s=3600)  # nothing is old yet
        before = [(await store.run(r))["state"] for r in (silent, quiet)]
        await store.expire_runs(answer_s=0, idle_s=0)
        after = [await store.run(r) for r in (silent, quiet)]
        late_done = await store.run_state(quiet, "done", report_id="r-late")  # the report came after all
        failed_after_done = await store.run_state(quiet, "failed", error="late")
        return before, after, late_done, failed_after_done, (await store.run(quiet))["state"], await store.runs_of(install_id)

    before, after, late_done, failed_after_done, final, listed = live_hub.admin(scenario)
    assert before == ["requested", "running"]
    assert [r["state"] for r in after] == ["failed", "timed_out"] and all(r["ended"] for r in after)
    assert "did not start the check" in after[0]["error"] and "no progress from the PC" in after[1]["error"]
    assert late_done is True and failed_after_done is False and final == "done"
    assert [r["state"] for r in listed] == ["done", "failed"] and listed[0]["requested_by"] == "helpdesk"


def test_a_deep_link_survives_the_login_and_only_local_paths_are_followed(live_hub):
    key = live_hub.enroll_key()
    auth = live_hub.add_user()
    install_id, token = enroll(live_hub.url, key)
    report = make_report(install_id, failed=("turn.udp",))
    assert post_report(live_hub.url, token, report).status_code == 201
    with httpx.Client(base_url=live_hub.url, timeout=10) as client:
        first = client.get(f"/reports/{report.id}?from=ticket")
        assert first.status_code == 303
        location = first.headers["location"]
        assert location.startswith("/login?next=") and unquote(location.split("next=", 1)[1]) == f"/reports/{report.id}?from=ticket"
        form = client.get(location).text
        assert f'name="next" value="/reports/{report.id}?from=ticket"' in form
        logged = client.post("/login", data={"name": auth[0], "password": auth[1], "next": f"/reports/{report.id}?from=ticket"})
        assert logged.status_code == 303 and logged.headers["location"] == f"/reports/{report.id}?from=ticket"
        cookie = logged.headers["set-cookie"].lower()
        assert "samesite=lax" in cookie and "httponly" in cookie
        assert report.id in client.get(logged.headers["location"]).text
    for hostile in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "/ok\r\nSet-Cookie: x=1"):  # the login budget is 5
        with httpx.Client(base_url=live_hub.url, timeout=10) as client:
            answer = client.post("/login", data={"name": auth[0], "password": auth[1], "next": hostile})
            assert answer.status_code == 303 and answer.headers["location"] == "/", hostile
