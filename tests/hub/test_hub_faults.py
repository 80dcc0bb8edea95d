"""Issue 24, the hub's side: status codes a PC does not retry forever (413, 4xx for deep
nesting and NUL characters, on SQLite and PostgreSQL), one token per concurrent
enrollment, a "connected" state that stays true after a failed write and after a hub
crash, and the LISTEN connection reopened after PostgreSQL restarts."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time

import httpx
import pytest

from tests.hub.conftest import PASSWORD, enroll, make_report, post_report, wait_until
from tests.hub.test_daemon import connected


def _nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth):
        value = {"x": value}
    return value


def _refusals(url: str, key: str, auth: tuple[str, str], *, max_bytes: int) -> dict[str, int]:
    """Every hostile input of issue 24's point 4 against one hub: name -> status."""
    install_id, token = enroll(url, key)
    codes: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def post(name: str, report_dict: dict, **extra_headers: str) -> None:
        body = json.dumps(report_dict).encode()
        answer = httpx.post(f"{url}/api/v1/reports", content=body, headers={**headers, "Idempotency-Key": report_dict["id"], **extra_headers}, timeout=30)
        codes[name] = answer.status_code
        assert "Traceback" not in answer.text and "\n" not in answer.json()["error"], (name, answer.text)

    good = make_report(install_id).to_dict()
    big = dict(good, id="big-1", evidence=[{"kind": "x", "pad": "p" * (max_bytes + 10)}])
    post("oversized with Content-Length", big)
    deep = json.loads(json.dumps(good))
    deep["id"] = "deep-1"
    deep["checks"][0]["details"] = _nested(500)
    post("500 levels of nesting", deep)
    nul = json.loads(json.dumps(good))
    nul["id"] = "nul-1"
    nul["agent"]["hostname"] = "desk\x0017"
    post("NUL in a report field", nul)
    nul2 = json.loads(json.dumps(good))
    nul2["id"] = "nul-2"
    nul2["checks"][0]["summary"] = "fine\x00"
    post("NUL in a check summary", nul2)
    # none of them was stored, and the PC can still post a good report
    ok = make_report(install_id)
    assert post_report(url, token, ok).status_code == 201

    enrolled = httpx.post(f"{url}/api/v1/enroll", json={"install_id": "nul-pc-1", "hostname": "a\x00b"},
                          headers={"Authorization": f"Bearer {key}"}, timeout=30)
    codes["NUL in an enrollment field"] = enrolled.status_code
    with httpx.Client(base_url=url, timeout=30) as browser:
        assert browser.post("/login", data={"name": auth[0], "password": auth[1]}).status_code == 303
        codes["NUL in a path"] = browser.get("/pcs/abc%00def").status_code
        codes["NUL in an API path"] = browser.get("/api/v1/reports/abc%00def").status_code
        codes["NUL in the search"] = browser.get("/", params={"q": "desk\x00"}).status_code
        codes["NUL in a login name"] = browser.post("/login", data={"name": "help\x00desk", "password": "x"}).status_code
    return codes


def _assert_refusals(codes: dict[str, int]) -> None:
    assert codes["oversized with Content-Length"] == 413, codes
    for name, code in codes.items():
        assert 400 <= code < 500, (name, code, codes)


def test_status_codes_on_sqlite(live_hub):
    codes = _refusals(live_hub.url, live_hub.enroll_key(), live_hub.add_user(), max_bytes=64 * 1024)
    _assert_refusals(codes)


def test_status_codes_on_postgres(postgres, hub_factory):
    hub = hub_factory(postgres.url())
    process = hub.start(extra_args=("--max-report-kb", "64"))
    codes = _refusals(process.url, hub.enroll_key(), hub.add_user(), max_bytes=64 * 1024)
    _assert_refusals(codes)
    assert "Traceback" not in process.stderr()


def test_concurrent_enrollments_of_one_pc_give_one_token(live_hub):
    key = live_hub.enroll_key()

    async def at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return list(await asyncio.gather(*[
                client.post(f"{live_hub.url}/api/v1/enroll", json={"install_id": "agentd-twice", "hostname": "h"},
                            headers={"Authorization": f"Bearer {key}"}) for _ in range(8)]))

    answers = asyncio.run(at_once())
    codes = sorted(a.status_code for a in answers)
    assert codes == [201] + [409] * 7, codes
    token = next(a.json()["token"] for a in answers if a.status_code == 201)
    assert post_report(live_hub.url, token, make_report("agentd-twice")).status_code == 201


def test_the_daemon_enrolls_once_when_two_of_its_tasks_ask_at_once(live_hub, tmp_path, monkeypatch):
    """The hub link and the spool flush of a first start both need the token: one
    enrollment, both get the same token (the PC's side: a lock file in its state folder)."""
    from agentd.config import Secret
    from agentd_plugins.hub import HubClientSettings, install_token

    monkeypatch.setenv("AGENTD_STATE_DIR", str(tmp_path / "pc-state"))
    settings = HubClientSettings(url=live_hub.url, enrollment_key=Secret(live_hub.enroll_key()))

    async def both() -> list[str]:
        return list(await asyncio.gather(install_token(settings), install_token(settings), install_token(settings)))

    tokens = asyncio.run(both())
    assert len(set(tokens)) == 1
    from agentd import paths

    events = live_hub.admin(lambda store: store.enrollment_events(paths.install_id()))
    assert [e["outcome"] for e in events] == ["enrolled"]


def _socket_count(url: str) -> int:
    return httpx.get(f"{url}/healthz", timeout=30).json()["connected_pcs"]


def test_a_socket_whose_connection_cannot_be_recorded_is_not_held(live_hub):
    import websockets

    key = live_hub.enroll_key()
    auth = live_hub.add_user()
    install_id, token = enroll(live_hub.url, key)
    database = live_hub.database.removeprefix("sqlite:///")
    db = sqlite3.connect(database, timeout=30)
    # a real failure of the database write (not a mock): the row refuses the change
    db.execute("CREATE TRIGGER refuse_connect BEFORE UPDATE OF connected_node ON pcs "
               "WHEN NEW.connected_node IS NOT NULL BEGIN SELECT RAISE(ABORT, 'test: write refused'); END")
    db.commit()
    ws_url = live_hub.url.replace("http://", "ws://") + "/api/v1/agent"

    async def connect_once() -> int | None:
        async with websockets.connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=30) as ws:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 30)
            return ws.close_code

    assert asyncio.run(connect_once()) == 1011
    assert _socket_count(live_hub.url) == 0
    pcs = httpx.get(f"{live_hub.url}/api/v1/pcs", auth=auth, timeout=30).json()["pcs"]
    assert [p["connected"] for p in pcs if p["install_id"] == install_id] == [False]

    db.execute("DROP TRIGGER refuse_connect")
    db.commit()
    db.close()

    async def connect_and_hold() -> int:
        async with websockets.connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=30):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and await asyncio.to_thread(_socket_count, live_hub.url) != 1:
                await asyncio.sleep(0.1)
            return await asyncio.to_thread(_socket_count, live_hub.url)

    assert asyncio.run(connect_and_hold()) == 1


def test_a_pc_of_a_crashed_hub_process_is_not_connected_forever(hub, pc_factory):
    first = hub.start(extra_args=("--presence-s", "0.5"))
    key = hub.enroll_key()
    auth = hub.add_user()
    pc = pc_factory(first.url, key)
    pc.start()
    wait_until(connected(first.url, auth), 120, interval_s=0.3, what="the PC to connect")
    install_id = pc.install_id()
    first.kill(signal.SIGKILL)  # the hub crashes ...
    pc.stop()  # ... and the PC does not come back
    second = hub.start(extra_args=("--presence-s", "0.5"))

    def offline() -> bool:
        pcs = httpx.get(f"{second.url}/api/v1/pcs", auth=auth, timeout=30).json()["pcs"]
        return [p["connected"] for p in pcs if p["install_id"] == install_id] == [False]

    wait_until(offline, 60, interval_s=0.3, what="the crashed process's PC to show as not connected")
    assert "PCs of a hub process that stopped" in second.stderr()


def test_listen_is_reopened_after_postgres_restarts(postgres, hub_factory, pc_factory):
    from tests.hub.test_daemon import run_check_and_wait

    hub = hub_factory(postgres.url())
    first = hub.start()
    second = hub.start()
    key = hub.enroll_key()
    auth = hub.add_user("helpdesk", PASSWORD)
    pc = pc_factory(first.url, key)  # the PC talks to the first process only
    pc.start()
    wait_until(connected(second.url, auth), 120, interval_s=0.3, what="the PC to show as connected on the second process")
    install_id = pc.install_id()

    postgres.restart()
    # asked at once, perhaps before the first process listens again: it still arrives
    # (a process that reopens LISTEN sends the requests it could not hear)
    started = httpx.post(f"{second.url}/api/v1/pcs/{install_id}/checks", json={"profile": "preshift"}, auth=auth, timeout=30)
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]

    def progressed() -> bool:
        run = httpx.get(f"{second.url}/api/v1/runs/{run_id}", auth=auth, timeout=30).json()
        assert run["state"] != "failed", run
        return bool(run["events"])

    wait_until(progressed, 30, interval_s=0.1, what="the PC's first progress event through the second process")
    wait_until(lambda: "LISTEN connection to PostgreSQL reopened" in first.stderr(), 60, interval_s=0.2,
               what="the first process to log that it reopened its LISTEN connection")
    assert "LISTEN connection to PostgreSQL lost" in first.stderr()
    # and once it listens again, a request goes the ordinary way
    run = run_check_and_wait(second.url, auth, install_id)  # and a whole check, start to report
    assert run["state"] == "done" and run["report_stored"]
    pc.stop()
