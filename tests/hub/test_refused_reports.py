"""The PC's hub sink against a real hub: a report the hub refuses for good (too large for
its max_report_bytes, another PC's report) is moved aside once, not re-sent at every
flush; a rate limit (429) is not a refusal (issue 24, point 2)."""

from __future__ import annotations

import structlog.testing

from agentd import paths
from agentd.config import Secret
from agentd.delivery import Delivery
from agentd.spool import Spool
from agentd_plugins.hub import HubClientSettings, HubSink

from .conftest import make_report


async def test_reports_the_hub_refuses_for_good_leave_the_spool_once(live_hub, agentd_env, tmp_path):
    settings = HubClientSettings(url=live_hub.url, enrollment_key=Secret(live_hub.enroll_key(), "test"), timeout_s=10)
    mine = paths.install_id()
    fine = make_report(mine)
    big = make_report(mine, summary="x" * (80 * 1024))  # the live hub takes 64 KiB
    foreign = make_report("agentd-someone-else")
    spool = Spool(tmp_path / "spool")
    for report in (fine, big, foreign):
        spool.put(report.id, report.to_json().encode())

    with structlog.testing.capture_logs() as logged:
        outcomes = {o.report_id: o for o in await Delivery(spool, [HubSink(settings)]).flush()}
        assert outcomes[fine.id].done
        for refused in (big, foreign):
            assert outcomes[refused.id].moved_aside and "hub" in outcomes[refused.id].refused, outcomes[refused.id]
        assert await Delivery(spool, [HubSink(settings)]).flush() == []  # nothing pending: nothing posted again
    lines = [e for e in logged if e["event"].startswith("sink refused")]  # the PC's (the in-process hub logs its own)
    assert len(lines) == 2, lines
    aside = {e.report_id: e for e in spool.refused_entries()}
    assert set(aside) == {big.id, foreign.id}
    assert "HTTP 4" in aside[big.id].reasons["hub"] and "HTTP 403" in aside[foreign.id].reasons["hub"]
