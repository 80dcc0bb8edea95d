"""Every evidence source against the fake, through the plugin hook as agentd runs it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from agentd.app import App
from agentd.errors import UsageError
from agentd.evidence import EvidenceRequest
from agentd.testing.invariants import assert_every_bad_check_explained
from agentd.testing.fake_genesys import (
    AGENT_USER_ID,
    CC_CLIENT_ID,
    CC_CLIENT_SECRET,
    DROPPED_CALL_ID,
    INTEGRATION_INACTIVE_ID,
    PHONE_ID,
    STATION_ID,
    seed_diagnostics_payload,
)

from .helpers import config_text

AGENT_PARTICIPANT = DROPPED_CALL_ID[:-4] + "ag00"


@pytest.fixture
def app(fake_genesys, agentd_env, monkeypatch):
    monkeypatch.setenv("AGENTD_TEST_CLIENT_SECRET", CC_CLIENT_SECRET)
    return App.load(agentd_env.write_config(config_text(fake_genesys)))


async def diagnose(app: App, conversation_id: str = DROPPED_CALL_ID, **options) -> dict[str, list]:
    request = EvidenceRequest(config=app.config, profile="incident", conversation_id=conversation_id, options=options)
    items = await app.collect_evidence(request)
    by_kind: dict[str, list] = {}
    for item in items:
        by_kind.setdefault(item.kind, []).append(item)
    return by_kind


async def test_conversation_names_the_agent_participant_and_its_calls(app):
    (item,) = (await diagnose(app))["genesys.conversation"]
    assert item.status == "ok"
    agent = item.data["agent"]
    assert agent["participantId"] == AGENT_PARTICIPANT and agent["userId"] == AGENT_USER_ID and agent["purpose"] == "agent"
    assert agent["calls"][0]["disconnectType"] == "transport.failure"
    assert agent["calls"][0]["muted"] is False and agent["calls"][0]["connectedTime"]
    assert len(item.data["agentParticipants"]) == 2  # the reconnect made a second participant
    assert item.window_start and item.window_end and item.data["startTime"] < item.data["endTime"]


async def test_call_quality_carries_media_endpoint_stats_and_segment_codes(app):
    (item,) = (await diagnose(app))["genesys.call_quality"]
    assert item.status == "ok"
    assert item.data["minMos"] == 2.71 and item.data["maxLatencyMs"] == 420
    assert item.data["lossPct"] == pytest.approx(100 * 162 / (4500 + 10000), abs=0.01)
    first = item.data["sessions"][0]
    assert first["mediaEndpointStats"][0]["receivedPackets"] == 4500
    assert first["mediaEndpointStats"][0]["codecs"] == ["opus"]
    interact = [s for s in first["segments"] if s["segmentType"] == "interact"][0]
    assert interact["disconnectType"] == "transportFailure"
    assert interact["sipResponseCodes"] == [480] and interact["q850ResponseCodes"] == [41] and interact["errorCode"]
    assert "MOS 2.71" in item.summary


async def test_call_quality_before_analytics_exist_is_skipped(app, fake_genesys):
    del fake_genesys.state.analytics[DROPPED_CALL_ID]
    found = await diagnose(app)
    assert found["genesys.call_quality"][0].status == "skipped"
    assert found["genesys.conversation"][0].status == "ok"


async def test_the_seed_diagnostics_path_is_not_asked_unless_opted_in(app, fake_genesys):
    items = (await diagnose(app))["genesys.webrtc_diagnostics"]
    assert [i.status for i in items] == ["skipped"] and "webrtc_diagnostics_api = true" in items[0].summary
    assert fake_genesys.state.requests_to("/api/v2/diagnostics/webrtc/") == []


@pytest.fixture
def opted_in(agentd_env, fake_genesys, monkeypatch):
    monkeypatch.setenv("AGENTD_TEST_CLIENT_SECRET", CC_CLIENT_SECRET)
    return App.load(agentd_env.write_config(config_text(fake_genesys, extra="webrtc_diagnostics_api = true\n")))


async def test_seed_diagnostics_endpoint_404_is_a_skipped_source(opted_in, fake_genesys):
    items = (await diagnose(opted_in))["genesys.webrtc_diagnostics"]
    assert {i.status for i in items} == {"skipped"}
    assert "not available in this organisation" in items[0].summary
    assert fake_genesys.state.requests_to("/api/v2/diagnostics/webrtc/")


async def test_seed_diagnostics_from_the_endpoint_and_from_a_file(opted_in, fake_genesys, tmp_path):
    app = opted_in
    start = datetime.now(timezone.utc) - timedelta(hours=2)
    payload = seed_diagnostics_payload(start)
    fake_genesys.state.webrtc_diagnostics[(DROPPED_CALL_ID, AGENT_PARTICIPANT)] = payload
    export = tmp_path / "diag.json"
    export.write_text(json.dumps(payload))
    items = {i.id: i for i in (await diagnose(app, diagnostics_file=str(export)))["genesys.webrtc_diagnostics"]}
    from_api = items[f"genesys.webrtc_diagnostics:api:{AGENT_PARTICIPANT}"]
    from_file = items["genesys.webrtc_diagnostics:file"]
    for item in (from_api, from_file):
        assert item.status == "ok"
        assert [s["state"] for s in item.data["ice_states"]] == ["checking", "connected", "disconnected", "failed"]
        assert item.data["selected_pair"]["protocol"] == "tcp"
        assert max(s["packetsLost"] for s in item.data["rtc_stats"]) == 1450
        assert item.data["rtc_stats"][1]["roundTripTime"] == 0.85
    assert from_file.data["origin"] == "file" and "RTT up to 850 ms" in from_file.summary


async def test_a_diagnostics_file_that_is_not_json_is_an_error_item_naming_it(app, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    items = {i.id: i for i in (await diagnose(app, diagnostics_file=str(broken)))["genesys.webrtc_diagnostics"]}
    assert items["genesys.webrtc_diagnostics:file"].status == "error"
    assert str(broken) in items["genesys.webrtc_diagnostics:file"].summary


async def test_browser_log_keeps_webrtc_lines_of_the_call_window_across_pages(app, fake_genesys):
    (item,) = (await diagnose(app))["genesys.browser_log"]
    assert item.status == "ok"
    messages = [e["message"] for e in item.data["entries"]]
    assert all("webrtc" in m.lower() for m in messages)
    assert not any("translations" in m or "outside the call window" in m for m in messages)
    assert [s["state"] for s in item.data["ice_states"]] == ["checking", "connected", "disconnected", "failed", "connected"]
    assert item.data["entries"][0]["timestamp"].endswith("Z")  # epoch ms made ISO-8601
    assert item.data["media_errors"] == 1
    queries = fake_genesys.state.requests_to("/logcapture/browser/entries/query$")
    # paged as the real API: pageSize on every request, the `after` cursor of nextUri from the second on
    assert len(queries) >= 3 and all(q.query["pageSize"] == "200" for q in queries)
    assert "after" not in queries[0].query and all(q.query.get("after") for q in queries[1:])
    assert len({q.query["after"] for q in queries[1:]}) == len(queries) - 1
    body = json.loads(queries[0].body)
    assert body["userId"] == AGENT_USER_ID and "/" in body["interval"]


async def test_browser_log_without_capture_is_skipped_saying_why(app, fake_genesys):
    fake_genesys.state.logcapture.clear()
    fake_genesys.state.log_entries.clear()
    (item,) = (await diagnose(app))["genesys.browser_log"]
    assert item.status == "skipped" and "not enabled" in item.summary


async def test_full_profile_keeps_log_capture_enabled_within_24_hours(fake_genesys, agentd_env, monkeypatch):
    monkeypatch.setenv("AGENTD_TEST_CLIENT_SECRET", CC_CLIENT_SECRET)
    fake_genesys.state.logcapture.clear()
    app = App.load(agentd_env.write_config(config_text(fake_genesys, extra=f'user_id = "{AGENT_USER_ID}"\nlog_capture_hours = 24\n')))
    items = await app.collect_evidence(EvidenceRequest(config=app.config, profile="full"))
    kinds = {i.kind: i for i in items}
    assert kinds["genesys.log_capture"].status == "ok" and kinds["genesys.log_capture"].data["renewed"] is True
    capture = fake_genesys.state.logcapture[AGENT_USER_ID]
    expires = datetime.fromisoformat(capture["dateExpired"].replace("Z", "+00:00"))
    assert timedelta(hours=23) < expires - datetime.now(timezone.utc) <= timedelta(hours=24)
    assert {"genesys.station", "genesys.dropped_calls", "genesys.integration"} <= set(kinds)
    assert "genesys.conversation" not in kinds  # per-call sources need a conversation id


async def test_station_and_phone(app):
    (item,) = (await diagnose(app))["genesys.station"]
    assert item.status == "ok"
    assert item.data["station"]["id"] == STATION_ID
    assert item.data["station"]["webRtcForceTurn"] is True and item.data["station"]["webRtcMediaDscp"] == 46
    assert item.data["phone"]["id"] == PHONE_ID and item.data["phone"]["operationalStatus"] == "DEGRADED"


async def test_integration_health_per_configured_id(app, fake_genesys):
    fake_genesys.state.integrations.pop(INTEGRATION_INACTIVE_ID)["reportedState"]
    items = {i.id: i for i in (await diagnose(app))["genesys.integration"]}
    assert len(items) == 2
    missing = items[f"genesys.integration:{INTEGRATION_INACTIVE_ID}"]
    assert missing.status == "error" and missing.data["status"] == 404
    active = [i for i in items.values() if i.status == "ok"][0]
    assert active.data["reportedState"]["code"] == "ACTIVE"


async def test_inactive_integration_becomes_a_verdict(app):
    report = await app.run_diagnose(DROPPED_CALL_ID)
    item = [e for e in report.evidence if e.id == f"genesys.integration:{INTEGRATION_INACTIVE_ID}"][0]
    assert item.data["reportedState"]["code"] == "INACTIVE"
    assert "platform.integration_inactive" in {v.code for v in report.verdicts}
    assert_every_bad_check_explained(report)


async def test_dropped_calls_over_the_interval(app, fake_genesys):
    (item,) = (await diagnose(app))["genesys.dropped_calls"]
    assert item.status == "ok"
    # six calls in the last 24 h (the one 30 h ago is outside): one 3.5 s long, two below MOS 3.5,
    # dropped = the short one + the transport failure
    assert (item.data["total"], item.data["short_calls"], item.data["low_mos_calls"], item.data["dropped_calls"]) == (6, 1, 2, 2)
    assert item.data["drop_pct"] == pytest.approx(33.3) and item.data["alert"] is True
    assert DROPPED_CALL_ID in item.data["low_mos_conversations"]
    (query,) = fake_genesys.state.requests_to("/details/query$")
    assert json.loads(query.body)["paging"]["pageNumber"] == 1


async def test_session_fragmentation(app):
    (item,) = (await diagnose(app))["genesys.session_fragmentation"]
    assert item.data["sessions"] == 2 and item.data["reconnects"] == 1 and item.data["segments"] == 2
    assert item.data["per_session_talk_s"] == [90.0, 200.0]
    assert item.data["stitched_talk_s"] == 295.0 and item.data["gaps_s"] == [5.0]
    assert item.data["userId"] == AGENT_USER_ID


async def test_malformed_json_becomes_an_error_item_not_a_crash(app, fake_genesys):
    fake_genesys.state.inject(f"/analytics/conversations/{DROPPED_CALL_ID}/details$", kind="malformed")
    found = await diagnose(app)
    quality = found["genesys.call_quality"][0]
    assert quality.status == "error" and "not JSON" in quality.summary and quality.data["correlationId"]
    assert found["genesys.session_fragmentation"][0].status == "error"  # same (shared) answer
    assert found["genesys.conversation"][0].status == "ok"  # the rest still came


async def test_401_and_403_become_auth_and_permission_items(app, fake_genesys):
    fake_genesys.state.clients[CC_CLIENT_ID].permissions = frozenset({"conversation:communication:view", "telephony:station:view", "telephony:plugin:all", "directory:user:view", "integrations:integration:view"})
    found = await diagnose(app)
    denied = found["genesys.permission"]
    assert {i.data["permission"] for i in denied} >= {"analytics:conversationDetail:view", "diagnostics:logCapture:view"}
    assert all(i.status == "error" and i.data["status"] == 403 for i in denied)
    assert found["genesys.conversation"][0].status == "ok"

    fake_genesys.state.clients[CC_CLIENT_ID].secret = "rotated-elsewhere"
    fake_genesys.state.tokens.clear()
    found = await diagnose(app)
    not_asked = found.pop("genesys.webrtc_diagnostics")  # the seed path is not asked by default: no call, no 401
    assert [i.status for i in not_asked] == ["skipped"]
    assert set(found) == {"genesys.auth"}  # every source that called says 401, none crashed or guessed
    assert all(i.data["status"] == 401 for i in found["genesys.auth"])


async def test_no_credentials_in_incident_mode_is_a_usage_error(fake_genesys, agentd_env):
    app = App.load(agentd_env.write_config(config_text(fake_genesys, secret_env=None)))
    with pytest.raises(UsageError, match="client_id and client_secret"):
        await app.collect_evidence(EvidenceRequest(config=app.config, profile="incident", conversation_id=DROPPED_CALL_ID))
    assert await app.collect_evidence(EvidenceRequest(config=app.config, profile="full")) == []


async def test_answers_of_the_wrong_shape_become_error_items(app, fake_genesys):
    details = fake_genesys.state.analytics[DROPPED_CALL_ID]
    details["participants"][1]["sessions"][0]["mediaEndpointStats"][0]["receivedPackets"] = "lots"
    fake_genesys.state.conversations[DROPPED_CALL_ID]["participants"] = "not a list"
    found = await diagnose(app)
    quality = found["genesys.call_quality"][0]
    assert quality.status == "error" and "unexpected shape" in quality.summary
    conversation = found["genesys.conversation"][0]
    assert conversation.status == "ok" and conversation.data["agent"] is None  # said, not guessed
    station = found["genesys.station"][0]  # no agent to ask about: skipped, saying why
    assert station.status == "skipped" and "no agent user id" in station.summary
