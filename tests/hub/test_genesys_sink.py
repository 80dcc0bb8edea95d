"""The optional Genesys sink: an incident report's summary on the agent's call participant,
against the fake Genesys Cloud (real HTTP), through the real spool."""

from __future__ import annotations

from agentd.delivery import Delivery
from agentd.spool import Spool
from agentd.testing.fake_genesys.fixtures import fake_genesys  # noqa: F401  (a fixture)
from agentd.testing.fake_genesys.scenario import AGENT_USER_ID, DROPPED_CALL_ID
from agentd_plugins.hub import GenesysAttributesSink, HubClientSettings
from tests.genesys.helpers import settings_for
from tests.hub.conftest import make_report


async def test_incident_summary_lands_on_the_agents_participant(fake_genesys, tmp_path):  # noqa: F811
    hub = HubClientSettings(url="https://hub.example:8750", genesys_attributes=True)
    sink = GenesysAttributesSink(hub, settings_for(fake_genesys, user_id=AGENT_USER_ID))
    delivery = Delivery(Spool(tmp_path / "spool", max_bytes=2**20, max_reports=10), [sink], sink_timeout_s=10)
    incident = make_report("agentd-pc", profile="incident", conversation_id=DROPPED_CALL_ID, failed=("turn.udp",),
                           verdict="network.firewall_udp_blocked")
    preshift = make_report("agentd-pc")

    outcome = await delivery.submit(incident)
    assert outcome.delivered == ("genesys-attributes",) and outcome.left_spool
    assert (await delivery.submit(preshift)).left_spool  # nothing to write: acknowledged

    conversation = fake_genesys.state.conversations[DROPPED_CALL_ID]
    legs = [p for p in conversation["participants"] if p.get("userId") == AGENT_USER_ID]
    agent = legs[-1]  # a call split into legs: the agent's latest one
    assert len(legs) == 2 and "attributes" not in legs[0]
    assert agent["attributes"] == {
        "agentd.verdict": "network.firewall_udp_blocked", "agentd.ready": "false", "agentd.report": incident.id,
        "agentd.link": f"https://hub.example:8750/reports/{incident.id}",
    }
    patches = fake_genesys.state.requests_to(r"/participants/.*/attributes$", "PATCH")
    assert len(patches) == 1  # the pre-shift report wrote nothing


async def test_a_missing_conversation_keeps_the_report_in_the_spool(fake_genesys, tmp_path):  # noqa: F811
    sink = GenesysAttributesSink(HubClientSettings(url="https://hub.example"), settings_for(fake_genesys))
    delivery = Delivery(Spool(tmp_path / "spool", max_bytes=2**20, max_reports=10), [sink], sink_timeout_s=10)
    outcome = await delivery.submit(make_report("agentd-pc", profile="incident", conversation_id="no-such-call"))
    assert not outcome.left_spool and "genesys-attributes" in outcome.failed
