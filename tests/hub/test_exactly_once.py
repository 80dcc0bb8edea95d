"""Exactly once: SIGKILL the hub while reports stream in from a PC's spool; after a
restart the spool's retry delivers the rest, and every report is stored once."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import threading

from agentd import paths
from agentd.config import Secret
from agentd.delivery import Delivery
from agentd.spool import Spool
from agentd_plugins.hub import HubClientSettings, HubSink
from tests.hub.conftest import make_report, wait_until

REPORTS = 40


def stored_ids(database: str) -> list[str]:
    db = sqlite3.connect(database.removeprefix("sqlite:///"), timeout=30)
    try:
        return [r[0] for r in db.execute("select id from reports")]
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def test_sigkill_during_ingest_then_restart_stores_each_report_once(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTD_STATE_DIR", str(tmp_path / "pc-state"))
    server = hub.start()
    port = int(server.url.rsplit(":", 1)[1])
    key = hub.enroll_key()
    settings = HubClientSettings(url=server.url, enrollment_key=Secret(key, "test"), timeout_s=5)
    spool = Spool(tmp_path / "spool", max_bytes=50 * 2**20, max_reports=1000)
    delivery = Delivery(spool, [HubSink(settings)], sink_timeout_s=10, lock_wait_s=5)
    install_id = paths.install_id()
    reports = [make_report(install_id, hostname=f"pc-{i}") for i in range(REPORTS)]
    for report in reports:
        spool.put(report.id, report.to_json().encode())

    first_flush: list = []
    flusher = threading.Thread(target=lambda: first_flush.append(asyncio.run(delivery.flush())))
    flusher.start()
    wait_until(lambda: len(stored_ids(hub.database)) >= 3, 120, interval_s=0.02, what="the first reports to be stored")
    server.kill(signal.SIGKILL)  # in the middle of the stream
    flusher.join(120)
    before = set(stored_ids(hub.database))
    assert 3 <= len(before) < REPORTS, "the kill came too late to test anything"
    left = {e.report_id for e in spool.entries()}
    assert left and left | before == {r.id for r in reports}

    hub.start(port)  # same address: the PC's configuration does not change
    outcomes = asyncio.run(delivery.flush())
    assert all(o.left_spool for o in outcomes), [o.failed for o in outcomes if o.failed]
    assert spool.entries() == []
    ids = stored_ids(hub.database)
    assert sorted(ids) == sorted(r.id for r in reports)  # every report, each once
