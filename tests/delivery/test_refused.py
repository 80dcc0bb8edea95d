"""Reports a sink refuses for good (413, 422, other 4xx about the report itself) are moved
aside once, with one log line, and listed with the reason; transient failures are still
retried at every flush (issue 24, point 2)."""

from __future__ import annotations

import json

import pytest
import structlog.testing

from agentd.delivery import Delivery, describe
from agentd.errors import DeliveryError
from agentd.spool import Spool
from agentd_plugins.hub import HubClientSettings, HubSink
from agentd_plugins.sinks.http import HttpSink, HttpSinkSettings

from .collector import Collector
from .test_spool import CountingSink, make_report

BASE = '[genesys]\nregion = "agentd-test.invalid"\n'


@pytest.fixture
def collector():
    c = Collector()
    yield c
    c.close()


def test_a_report_the_collector_refuses_for_good_is_moved_aside_once_and_listed(agentd_env, collector):
    agentd_env.write_config(BASE + f'[sinks.http]\nurl = "{collector.url}"\nretries = 0\n[sinks.file]\nenabled = false\n')
    ids = []
    for _ in range(3):  # the collector is down: three reports wait in the spool
        made = agentd_env.run("check", "--only", "host", "--no-daemon", "--json", "--upload")
        ids.append(json.loads(made.stdout)["id"])
    too_big, invalid, transient = ids
    collector.answers.update({too_big: 413, invalid: 422, transient: 503})
    collector.set("up")

    first = agentd_env.run("reports", "flush")
    assert first.returncode == 1, first.stdout + first.stderr  # not everything was delivered
    assert collector.posts[too_big] == 1 and collector.posts[invalid] == 1 and collector.posts[transient] == 1
    refusal_lines = [line for line in first.stderr.splitlines() if "refused" in line and "moved aside" in line]
    assert len(refusal_lines) == 2, first.stderr
    assert f"report {too_big}" in first.stdout and "413" in first.stdout

    second = agentd_env.run("reports", "flush")
    # the refused ones are not sent again, and not logged again; the transient one is retried
    assert collector.posts[too_big] == 1 and collector.posts[invalid] == 1
    assert collector.posts[transient] == 2
    assert too_big not in second.stderr + second.stdout and invalid not in second.stderr + second.stdout
    assert second.returncode == 1 and "kept in the spool" in second.stdout

    listed = json.loads(agentd_env.run("reports", "list", "--json").stdout)
    assert [p["id"] for p in listed["pending"]] == [transient]
    refused = {r["id"]: r for r in listed["refused"]}
    assert set(refused) == {too_big, invalid}
    assert "413" in refused[too_big]["refused"]["http"] and "422" in refused[invalid]["refused"]["http"]
    text = agentd_env.run("reports", "list").stdout
    assert "2 refused" in text and f"refused  {too_big}" in text and "HTTP 413" in text

    # the collector fixed: `reports resend` offers a refused report again, and it leaves the refused place
    del collector.answers[too_big]
    resent = agentd_env.run("reports", "resend", too_big)
    assert resent.returncode == 0, resent.stdout + resent.stderr
    assert too_big in collector.stored
    listed = json.loads(agentd_env.run("reports", "list", "--json").stdout)
    assert [r["id"] for r in listed["refused"]] == [invalid]
    assert agentd_env.run("reports", "show", invalid, "--json").returncode == 0  # still readable where it lies


async def test_a_refusal_by_one_sink_waits_for_the_others_and_is_not_asked_again(tmp_path, collector):
    """The http sink refuses (422) while another sink is down: the report stays for the
    other sink, the refusing one is not asked again, and it moves aside once all are settled."""
    collector.set("up")
    report = make_report(1)
    collector.answers[report.id] = 422
    other = CountingSink("other", DeliveryError("collector down"))
    spool = Spool(tmp_path)
    delivery = Delivery(spool, [HttpSink(HttpSinkSettings(url=collector.url, retries=0)), other])
    with structlog.testing.capture_logs() as logged:
        first = await delivery.submit(report)
        assert "http" in first.refused and "other" in first.failed and not first.left_spool
        second = await delivery.flush()
        assert collector.posts[report.id] == 1 and len(other.calls) == 2
        assert "422" in second[0].refused["http"] and "http" not in second[0].failed
        other.failing = None
        [third] = await delivery.flush()
    assert collector.posts[report.id] == 1
    assert third.delivered == ("other",) and third.moved_aside and not third.done
    assert "422" in describe(third) and "moved aside" in describe(third)
    [aside] = spool.refused_entries()
    assert aside.report_id == report.id and "422" in aside.reasons["http"]
    refusals = [e for e in logged if "refused" in e["event"]]
    assert len(refusals) == 2 and refusals[-1]["log_level"] == "error"  # refused (kept for the other), then moved aside
    assert await delivery.flush() == []  # nothing pending, nothing posted
    assert collector.posts[report.id] == 1


@pytest.mark.parametrize("status, refused", [(400, True), (413, True), (422, True), (401, False), (404, False), (503, False)])
async def test_which_answers_of_a_collector_are_refusals_for_good(collector, status, refused):
    collector.set("up")
    report = make_report(2)
    collector.answers[report.id] = status
    with pytest.raises(DeliveryError) as caught:
        await HttpSink(HttpSinkSettings(url=collector.url, retries=0)).deliver(report, report.to_json().encode())
    assert caught.value.refused is refused and str(status) in str(caught.value)


async def test_a_misconfigured_collector_costs_one_post_per_flush_not_one_per_report(tmp_path, collector):
    """401 (a wrong token) is about the sink, not the report: the reports stay, and the
    sink is asked once per flush."""
    collector.token = "right"
    collector.set("up")
    spool = Spool(tmp_path)
    for n in range(5):
        spool.put(make_report(n).id, make_report(n).to_json().encode())
    from agentd.config import Secret

    sink = HttpSink(HttpSinkSettings(url=collector.url, retries=0, token=Secret("wrong", "test")))
    outcomes = await Delivery(spool, [sink]).flush()
    assert sum(collector.posts.values()) == 1 and len(spool.entries()) == 5
    assert all("http" in o.failed for o in outcomes) and not any(o.refused for o in outcomes)
