"""The spool and the delivery loop in-process: acks per sink, bounds, crash leftovers."""

from __future__ import annotations

import json
import os

import pytest
import structlog.testing

from agentd.delivery import Delivery
from agentd.errors import DeliveryError
from agentd.model import Report
from agentd.spool import Spool
from correlation.scenarios import AGENT


def make_report(n: int) -> Report:
    return Report(id=f"20260514T1000{n:02d}Z-{n:012x}", created="2026-05-14T10:00:00.000Z", agent=AGENT, profile="preshift")


class CountingSink:
    """Records every delivery; fails while ``failing`` is set."""

    def __init__(self, name: str, failing: Exception | None = None) -> None:
        self.name = name
        self.failing = failing
        self.calls: list[str] = []

    async def deliver(self, report: Report, payload: bytes) -> None:
        self.calls.append(report.id)
        assert json.loads(payload)["id"] == report.id
        if self.failing is not None:
            raise self.failing


async def test_a_resend_skips_the_sinks_that_already_have_the_report(tmp_path):
    good, flaky = CountingSink("good"), CountingSink("flaky", DeliveryError("collector down"))
    delivery = Delivery(Spool(tmp_path), [good, flaky])
    outcome = await delivery.submit(make_report(1))
    assert outcome.delivered == ("good",) and "flaky" in outcome.failed and not outcome.left_spool
    assert delivery.spool.get(make_report(1).id).acked == {"good"}

    flaky.failing = None
    [again] = await delivery.flush()
    assert again.delivered == ("flaky",) and again.already == ("good",) and again.left_spool
    assert good.calls == [make_report(1).id]  # once, not twice
    assert flaky.calls == [make_report(1).id] * 2
    assert delivery.spool.entries() == []


async def test_a_sink_that_is_down_is_tried_once_per_flush_and_others_still_deliver(tmp_path):
    down, good = CountingSink("down", DeliveryError("refused")), CountingSink("good")
    spool = Spool(tmp_path)
    for n in range(5):
        spool.put(make_report(n).id, make_report(n).to_json().encode())
    outcomes = await Delivery(spool, [down, good]).flush()
    assert len(down.calls) == 1 and len(good.calls) == 5
    assert outcomes[0].failed == {"down": "refused"}
    # the others were not tried, and say so naming the report that failed, not as their own failure
    assert all(o.failed["down"] == f"not tried: it failed for report {make_report(0).id} in this flush (refused)"
               for o in outcomes[1:])
    assert [e.acked for e in spool.entries()] == [frozenset({"good"})] * 5


async def test_a_broken_sink_plugin_does_not_lose_the_report(tmp_path):
    broken = CountingSink("broken", RuntimeError("bug in a plugin"))
    delivery = Delivery(Spool(tmp_path), [broken])
    outcome = await delivery.submit(make_report(1))
    assert "RuntimeError: bug in a plugin" in outcome.failed["broken"]
    assert [e.report_id for e in delivery.spool.entries()] == [make_report(1).id]


async def test_a_sink_that_never_answers_is_cut_at_its_deadline(tmp_path):
    import asyncio
    import time

    class Silent:
        name = "silent"

        async def deliver(self, report, payload):
            await asyncio.sleep(3600)

    started = time.monotonic()
    outcome = await Delivery(Spool(tmp_path), [Silent()], sink_timeout_s=0.3).submit(make_report(1))
    assert time.monotonic() - started < 3
    assert "no acknowledgement within 0.3 s" in outcome.failed["silent"]


def test_the_size_bound_drops_the_oldest_and_counts_it(tmp_path):
    payload = b"x" * 1000
    spool = Spool(tmp_path, max_bytes=3500, max_reports=10)
    with structlog.testing.capture_logs() as logged:
        for n in range(5):
            spool.put(make_report(n).id, payload)
    assert [e.report_id for e in spool.entries()] == [make_report(n).id for n in (2, 3, 4)]
    stats = spool.stats()
    assert stats.dropped == 2 and stats.last_dropped == (make_report(0).id, make_report(1).id)
    drops = [e for e in logged if e["event"].startswith("spool full")]
    assert [e["dropped"] for e in drops] == [[make_report(0).id], [make_report(1).id]]
    assert all(e["log_level"] == "warning" for e in drops)
    by_count = Spool(tmp_path / "count", max_reports=2)
    for n in range(4):
        by_count.put(make_report(n).id, b"{}")
    assert len(by_count.entries()) == 2 and by_count.stats().dropped == 2
    with pytest.raises(DeliveryError, match="larger than the whole spool"):
        Spool(tmp_path / "tiny", max_bytes=10).put(make_report(9).id, payload)


def test_leftovers_of_a_killed_process_are_swept_and_complete_reports_stay(tmp_path):
    spool = Spool(tmp_path)
    spool.put(make_report(1).id, b"{}")
    spool.ack(make_report(1).id, "file")
    # a write killed before its rename (pid 999999 is not running), and markers whose json went first
    (tmp_path / f".tmp-{make_report(2).id}.json.999999").write_bytes(b'{"half')
    (tmp_path / f"{make_report(3).id}.ack.http").touch()
    reopened = Spool(tmp_path)
    assert [(e.report_id, e.acked) for e in reopened.entries()] == [(make_report(1).id, frozenset({"file"}))]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".lock")) == [
        f"{make_report(1).id}.ack.file", f"{make_report(1).id}.json"]


async def test_an_unreadable_spooled_report_is_moved_aside(tmp_path):
    spool = Spool(tmp_path)
    spool.put(make_report(1).id, b"not json")
    spool.put(make_report(2).id, make_report(2).to_json().encode())
    sink = CountingSink("good")
    outcomes = await Delivery(spool, [sink]).flush()
    assert [o.left_spool for o in outcomes] == [True, True]
    assert sink.calls == [make_report(2).id]
    assert (tmp_path / "corrupt" / f"{make_report(1).id}.json").read_bytes() == b"not json"


def test_names_that_could_escape_the_folder_are_refused(tmp_path):
    spool = Spool(tmp_path)
    for bad in ("../etc/passwd", "a/b", "", ".hidden"):
        with pytest.raises(DeliveryError):
            spool.put(bad, b"{}")
    with pytest.raises(DeliveryError):
        spool.ack(make_report(1).id, "../x")


def test_only_one_process_delivers_at_a_time(tmp_path):
    spool = Spool(tmp_path)
    with spool.locked() as first:
        assert first
        pid = os.fork()
        if pid == 0:  # a second process must not get the lock while we hold it
            with Spool(tmp_path).locked(wait_s=0.2) as second:
                os._exit(0 if second is False else 1)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0


async def test_the_daemons_entry_points_deliver_and_flush(agentd_env):
    from agentd.app import App
    from agentd.delivery import deliver_report, flush_spool, open_spool

    app = App.load(agentd_env.write_config('[genesys]\nregion = "agentd-test.invalid"\n'))
    outcome = await deliver_report(app, make_report(1))
    assert outcome.delivered == ("file",) and outcome.left_spool
    assert (agentd_env.root / "state" / "reports" / f"{make_report(1).id}.json").exists()
    open_spool(app.config).put(make_report(2).id, make_report(2).to_json().encode())
    [flushed] = await flush_spool(app)
    assert flushed.report_id == make_report(2).id and flushed.left_spool
    assert open_spool(app.config).entries() == []


async def test_a_spool_file_named_otherwise_than_its_report_is_renamed_once(tmp_path):
    from agentd.delivery import describe

    spool = Spool(tmp_path)
    a, b = make_report(1), make_report(2)
    spool.put(a.id, b.to_json().encode())  # file a.json holds report b
    sink = CountingSink("good")
    [outcome] = await Delivery(spool, [sink]).flush()
    assert outcome.report_id == b.id and outcome.done and f"held report {b.id}" in outcome.note
    assert sink.calls == [b.id]
    assert spool.entries() == [] and await Delivery(spool, [sink]).flush() == []  # once, not on every flush
    assert "(done)" in describe(outcome)


async def test_a_spool_file_whose_inner_id_is_taken_is_moved_aside_and_not_called_done(tmp_path):
    from agentd.delivery import _print_outcomes, describe

    spool = Spool(tmp_path)
    a, b = make_report(1), make_report(2)
    spool.put(a.id, b.to_json().encode())
    spool.put(b.id, b.to_json().encode())
    sink = CountingSink("good")
    outcomes = await Delivery(spool, [sink]).flush()
    aside = outcomes[0]
    assert aside.moved_aside and not aside.done and "(moved aside, not delivered)" in describe(aside)
    assert (tmp_path / "corrupt" / f"{a.id}.json").exists()
    assert sink.calls == [b.id] and spool.entries() == []
    assert _print_outcomes(outcomes) == 1  # `agentd reports flush` does not say all is well


async def test_a_new_report_goes_first_and_older_ones_get_a_short_budget(tmp_path):
    import asyncio
    import time

    class SlowForOld:
        name = "slow"

        def __init__(self):
            self.calls = []

        async def deliver(self, report, payload):
            self.calls.append(report.id)
            if report.id != make_report(9).id:
                await asyncio.sleep(30)

    spool = Spool(tmp_path)
    for n in (1, 2):
        spool.put(make_report(n).id, make_report(n).to_json().encode())
    sink = SlowForOld()
    started = time.monotonic()
    outcome = await Delivery(spool, [sink], sink_timeout_s=20).submit(make_report(9), others_budget_s=0.5)
    assert outcome.done and sink.calls[0] == make_report(9).id
    assert time.monotonic() - started < 5  # not 30 s per older report
    assert [e.report_id for e in spool.entries()] == [make_report(1).id, make_report(2).id]
