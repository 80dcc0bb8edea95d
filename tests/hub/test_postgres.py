"""Two hub processes on one PostgreSQL (Debian's, started by the test as `nobody`): a
check requested on one reaches a PC connected to the other through LISTEN/NOTIFY, and
either shows its progress and report."""

from __future__ import annotations

import httpx

from tests.hub.conftest import enroll, make_report, post_report, wait_until
from tests.hub.test_daemon import connected, run_check_and_wait


def test_a_request_on_one_process_reaches_a_pc_on_the_other(postgres, hub_factory, pc_factory):
    hub = hub_factory(postgres.url())
    first = hub.start()
    second = hub.start()  # migrations already done: the second start finds the schema at head
    key = hub.enroll_key()
    auth = hub.add_user()

    pc = pc_factory(first.url, key)  # the PC talks to the first process only
    pc.start()
    wait_until(connected(second.url, auth), 120, interval_s=0.3, what="the PC to show as connected on the second process")
    install_id = pc.install_id()

    run = run_check_and_wait(second.url, auth, install_id)  # asked on the second process
    assert any(e["event"] == "note" and e["text"] == "half way there" for e in run["events"])
    on_first = httpx.get(f"{first.url}/api/v1/reports/{run['report_id']}", auth=auth, timeout=10).json()["report"]
    assert on_first["agent"]["install_id"] == install_id

    # ingest on PostgreSQL: once, whatever process gets the retry
    other_id, token = enroll(second.url, key)
    report = make_report(other_id)
    assert post_report(first.url, token, report).status_code == 201
    assert post_report(second.url, token, report).status_code == 200
    reports = httpx.get(f"{first.url}/api/v1/pcs/{other_id}/reports", auth=auth, timeout=10).json()["reports"]
    assert [r["id"] for r in reports] == [report.id]
    pc.stop()
