"""Scenario data for the fake: one organisation with an agent whose softphone dropped a call.

:func:`default_scenario` builds it relative to "now", so interval queries ("the last
24 h") find it. The ids are constants so tests can name them. What it holds:

- OAuth clients: ``agentd-cc`` (client credentials, secret ``cc-secret``),
  ``agentd-login`` (authorization code with PKCE and refresh tokens; any loopback
  redirect port), ``agentd-login-pkce`` (PKCE without the refresh grant) and
  ``agentd-login-code`` (a confidential code client with a secret and refresh tokens),
  whose logins sign in as the agent;
- the agent ``AGENT_USER_ID`` with a WebRTC station (``webRtcForceTurn`` on) and phone;
- ``DROPPED_CALL_ID``: the agent's call that dropped with ``transport.failure`` and came
  back as a second session (fragmented), MOS 2.71, browser log lines around it;
- five more calls in the last 24 h (one 3 s long, one at MOS 3.2) and one 30 h ago;
- integrations ``INTEGRATION_ACTIVE_ID`` (ACTIVE) and ``INTEGRATION_INACTIVE_ID`` (INACTIVE).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

from .state import FakeState, OAuthClient, TokenGrant

CC_CLIENT_ID = "agentd-cc"
CC_CLIENT_SECRET = "cc-secret-9f3b2a7c51"
LOGIN_CLIENT_ID = "agentd-login"
PKCE_ONLY_CLIENT_ID = "agentd-login-pkce"
"""A public PKCE client without the refresh grant: its logins get no refresh token."""
CODE_CLIENT_ID = "agentd-login-code"
CODE_CLIENT_SECRET = "code-secret-4d1e8b0a93"
"""A confidential Code Authorization client: the code is exchanged with its secret, refresh tokens included."""
AGENT_USER_ID = "7a0c1b2e-5d4f-4e8a-9c21-0a1b2c3d4e5f"
OTHER_USER_ID = "8b1d2c3f-6e50-4f9b-8d32-1b2c3d4e5f60"
QUEUE_ID = "5c3e4d5a-7f61-4a0c-9e43-2c3d4e5f6071"
STATION_ID = "9d4f5e6b-8072-4b1d-af54-3d4e5f607182"
PHONE_ID = "ae506f7c-9183-4c2e-b065-4e5f60718293"
DROPPED_CALL_ID = "c0ffee00-1234-4abc-8def-000000000001"
INTEGRATION_ACTIVE_ID = "1e2f3a4b-0000-4000-8000-00000000a001"
INTEGRATION_INACTIVE_ID = "1e2f3a4b-0000-4000-8000-00000000a002"


def agent_refresh_token(state: FakeState, *, reused: bool = False) -> str:
    """A refresh token of the agent's own login (what ``agentd login`` stores), valid a day.
    ``reused``: several clients or processes will refresh with the one token, so the fake
    must not rotate it."""
    if reused:
        state.rotate_refresh_tokens = False
    client = state.clients[LOGIN_CLIENT_ID]
    grant = TokenGrant(LOGIN_CLIENT_ID, AGENT_USER_ID, client.scopes, client.permissions, time.time() + 86400, "authorization_code")
    return state.issue_refresh_token(grant)


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def agent_participant(
    pid: str, user_id: str, calls: list[dict[str, Any]], *, start: str, end: str | None = None, connected: str | None = None
) -> dict[str, Any]:
    """The agent's participant of a conversation, as ``GET /api/v2/conversations/{id}`` has it."""
    participant: dict[str, Any] = {"id": pid, "startTime": start}
    if end is not None:
        participant["endTime"] = end
    if connected is not None:
        participant["connectedTime"] = connected
    participant.update(
        {
            "name": "Alex Agent",
            "userId": user_id,
            "userUri": f"/api/v2/users/{user_id}",
            "queueId": QUEUE_ID,
            "purpose": "agent",
            "participantType": "Internal",
            "calls": calls,
        }
    )
    return participant


def media_stat(mos: float, *, received: int, discarded: int, latency_ms: int, at: datetime) -> dict[str, Any]:
    """An ``AnalyticsMediaEndpointStat``; the R-factor follows from MOS roughly as the E-model has it."""
    return {
        "codecs": ["opus"],
        "minMos": mos,
        "minRFactor": round(max(0.0, 20.0 + (mos - 1.0) * 22.0), 1),
        "maxLatencyMs": latency_ms,
        "receivedPackets": received,
        "discardedPackets": discarded,
        "duplicatePackets": 0,
        "invalidPackets": 0,
        "overrunPackets": 0,
        "underrunPackets": discarded // 10,
        "eventTime": iso(at),
    }


def add_call(
    state: FakeState,
    conversation_id: str,
    start: datetime,
    *,
    user_id: str = AGENT_USER_ID,
    talk_s: float,
    mos: float,
    disconnect: str = "client",
    fragments: list[tuple[float, float]] | None = None,
    latency_ms: int = 60,
    discarded: int = 3,
    sip_codes: list[int] | None = None,
    q850_codes: list[int] | None = None,
    error_code: str | None = None,
    answer_after_s: float = 5.0,
) -> None:
    """One inbound call: the Conversation (``/api/v2/conversations/{id}``) and its analytics details.

    ``fragments`` are (offset_s, length_s) of the agent's sessions when the call was split
    by reconnects; otherwise one session of ``talk_s`` starting ``answer_after_s`` into the call.
    ``disconnect`` is the Conversation API's disconnectType of the first session's end.
    """
    pieces = fragments or [(answer_after_s, talk_s)]
    end = start + timedelta(seconds=max(o + l for o, l in pieces) + 1)
    customer_id = f"{conversation_id[:-4]}cu00"
    customer = {
        "id": customer_id,
        "startTime": iso(start),
        "endTime": iso(end),
        "connectedTime": iso(start),
        "name": "Customer",
        "purpose": "customer",
        "participantType": "External",
        "address": "tel:+15550100",
        "calls": [{"id": f"{customer_id}-call", "state": "disconnected", "direction": "inbound", "muted": False, "held": False, "disconnectType": "peer", "connectedTime": iso(start), "disconnectedTime": iso(end), "segments": []}],
    }
    participants = [customer]
    analytics_participants: list[dict[str, Any]] = [
        {
            "participantId": customer_id,
            "participantName": "Customer",
            "purpose": "customer",
            "sessions": [
                {
                    "sessionId": f"{customer_id}-s",
                    "mediaType": "voice",
                    "direction": "inbound",
                    "ani": "tel:+15550100",
                    "mediaEndpointStats": [media_stat(4.3, received=int(talk_s * 50), discarded=1, latency_ms=40, at=end)],
                    "segments": [{"segmentType": "interact", "segmentStart": iso(start), "segmentEnd": iso(end), "disconnectType": "peer", "queueId": QUEUE_ID}],
                }
            ],
        }
    ]
    for index, (offset, length) in enumerate(pieces):
        pid = f"{conversation_id[:-4]}ag{index:02d}"
        begin = start + timedelta(seconds=offset)
        finish = begin + timedelta(seconds=length)
        first = index == 0
        this_disconnect = disconnect if first else "client"
        participants.append(
            agent_participant(
                pid,
                user_id,
                start=iso(begin - timedelta(seconds=3)),
                end=iso(finish),
                connected=iso(begin),
                calls=[
                    {
                        "id": f"{pid}-call",
                        "state": "disconnected",
                        "initialState": "alerting",
                        "direction": "inbound",
                        "muted": False,
                        "held": False,
                        "confined": False,
                        "recording": False,
                        "disconnectType": this_disconnect,
                        "connectedTime": iso(begin),
                        "disconnectedTime": iso(finish),
                        "provider": "Edge",
                        "segments": [],
                    }
                ],
            )
        )
        segment_disconnect = {"transport.failure": "transportFailure"}.get(this_disconnect, this_disconnect)
        interact: dict[str, Any] = {
            "segmentType": "interact",
            "segmentStart": iso(begin),
            "segmentEnd": iso(finish),
            "disconnectType": segment_disconnect,
            "queueId": QUEUE_ID,
        }
        if first and sip_codes:
            interact["sipResponseCodes"] = sip_codes
        if first and q850_codes:
            interact["q850ResponseCodes"] = q850_codes
        if first and error_code:
            interact["errorCode"] = error_code
        session_mos = mos if first else max(mos, 3.9)
        analytics_participants.append(
            {
                "participantId": pid,
                "participantName": "Alex Agent",
                "purpose": "agent",
                "userId": user_id,
                "sessions": [
                    {
                        "sessionId": f"{pid}-s",
                        "mediaType": "voice",
                        "direction": "inbound",
                        "edgeId": "edge-1",
                        "protocolCallId": f"{pid}-sip",
                        "provider": "Edge",
                        "mediaEndpointStats": [
                            media_stat(session_mos, received=int(length * 50), discarded=discarded if first else 2, latency_ms=latency_ms if first else 70, at=finish)
                        ],
                        "segments": [
                            {"segmentType": "alert", "segmentStart": iso(begin - timedelta(seconds=3)), "segmentEnd": iso(begin), "queueId": QUEUE_ID},
                            interact,
                        ],
                        "metrics": [{"name": "tTalkComplete", "value": int(length * 1000), "emitDate": iso(finish)}],
                    }
                ],
            }
        )
    state.conversations[conversation_id] = {
        "id": conversation_id,
        "startTime": iso(start),
        "endTime": iso(end),
        "state": "disconnected",
        "participants": participants,
        "recordingState": "NONE",
        "selfUri": f"/api/v2/conversations/{conversation_id}",
    }
    state.analytics[conversation_id] = {
        "conversationId": conversation_id,
        "conversationStart": iso(start),
        "conversationEnd": iso(end),
        "conversationInitiator": "customer",
        "originatingDirection": "inbound",
        "mediaStatsMinConversationMos": min(4.3, mos),
        "mediaStatsMinConversationRFactor": media_stat(min(4.3, mos), received=1, discarded=0, latency_ms=0, at=end)["minRFactor"],
        "divisionIds": ["home"],
        "participants": analytics_participants,
    }


def seed_diagnostics_payload(start: datetime) -> dict[str, Any]:
    """The seed-000 WebRTC diagnostics format (not a real API; read from files or a probe)."""
    def at(s: float) -> str:
        return iso(start + timedelta(seconds=s))

    return {
        "entities": [
            {"type": "ICEConnectionStateChange", "timestamp": at(1), "details": {"state": "checking"}},
            {"type": "ICEConnectionStateChange", "timestamp": at(2), "details": {"state": "connected"}},
            {"type": "selectedCandidatePair", "timestamp": at(2), "details": {"protocol": "tcp", "localCandidateType": "relay", "remoteCandidateType": "host"}},
            {"type": "RtcStats", "timestamp": at(60), "details": {"packetsLost": 12, "jitterBufferDelay": 0.08, "roundTripTime": 0.12, "audioLevel": 0.3}},
            {"type": "RtcStats", "timestamp": at(90), "details": {"packetsLost": 1450, "jitterBufferDelay": 1.45, "roundTripTime": 0.85, "audioLevel": 0.2}},
            {"type": "ICEConnectionStateChange", "timestamp": at(95), "details": {"state": "disconnected"}},
            {"type": "ICEConnectionStateChange", "timestamp": at(97), "details": {"state": "failed"}},
        ]
    }


def default_scenario(now: datetime | None = None) -> FakeState:
    now = now or datetime.now(timezone.utc)
    state = FakeState()
    state.clients[CC_CLIENT_ID] = OAuthClient(CC_CLIENT_ID, secret=CC_CLIENT_SECRET, grants=frozenset({"client_credentials"}))
    state.clients[LOGIN_CLIENT_ID] = OAuthClient(
        LOGIN_CLIENT_ID,
        grants=frozenset({"authorization_code", "refresh_token"}),
        redirect_uris=("http://127.0.0.1:*/oauth/callback",),
        login_user_id=AGENT_USER_ID,
    )
    state.clients[PKCE_ONLY_CLIENT_ID] = OAuthClient(
        PKCE_ONLY_CLIENT_ID, grants=frozenset({"authorization_code"}), redirect_uris=("http://127.0.0.1:*/oauth/callback",), login_user_id=AGENT_USER_ID
    )
    state.clients[CODE_CLIENT_ID] = OAuthClient(
        CODE_CLIENT_ID,
        secret=CODE_CLIENT_SECRET,
        grants=frozenset({"authorization_code", "refresh_token"}),
        redirect_uris=("http://127.0.0.1:*/oauth/callback",),
        login_user_id=AGENT_USER_ID,
    )
    for uid, name, email in ((AGENT_USER_ID, "Alex Agent", "alex.agent@example.com"), (OTHER_USER_ID, "Sam Supervisor", "sam@example.com")):
        state.users[uid] = {"id": uid, "name": name, "email": email, "username": email, "state": "active", "version": 3, "selfUri": f"/api/v2/users/{uid}"}

    # the agent's WebRTC station and phone (and other phones, so listings have pages)
    station_ref = {"id": STATION_ID, "name": "WebRTC - Alex Agent", "type": "inin_webrtc_softphone", "webRtcCallAppearances": 1}
    state.user_stations[AGENT_USER_ID] = {"associatedStation": station_ref, "effectiveStation": station_ref, "defaultStation": station_ref, "lastAssociatedStation": station_ref}
    state.stations[STATION_ID] = {
        "id": STATION_ID,
        "name": "WebRTC - Alex Agent",
        "status": "ASSOCIATED",
        "userId": AGENT_USER_ID,
        "webRtcUserId": AGENT_USER_ID,
        "type": "inin_webrtc_softphone",
        "webRtcMediaDscp": 46,
        "webRtcPersistentEnabled": False,
        "webRtcForceTurn": True,
        "webRtcCallAppearances": 1,
        "webRtcRequireMediaHelper": False,
        "selfUri": f"/api/v2/stations/{STATION_ID}",
    }
    for index in range(4):
        pid = PHONE_ID if index == 0 else f"ae506f7c-9183-4c2e-b065-00000000000{index}"
        uid = AGENT_USER_ID if index == 0 else f"00000000-0000-4000-8000-00000000000{index}"
        state.phones[pid] = {
            "id": pid,
            "name": f"WebRTC phone {index}",
            "state": "active",
            "webRtcUser": {"id": uid, "selfUri": f"/api/v2/users/{uid}"},
            "status": {"id": pid, "operationalStatus": "OPERATIONAL" if index != 0 else "DEGRADED", "edgesStatus": "IN_SERVICE"},
            "selfUri": f"/api/v2/telephony/providers/edges/phones/{pid}",
        }

    # calls
    dropped_start = now - timedelta(hours=2)
    add_call(
        state,
        DROPPED_CALL_ID,
        dropped_start,
        talk_s=290,
        mos=2.71,
        disconnect="transport.failure",
        fragments=[(5.0, 90.0), (100.0, 200.0)],
        latency_ms=420,
        discarded=160,
        sip_codes=[480],
        q850_codes=[41],
        error_code="error.ininedgecontrol.connection.media.endpoint.idle",
    )
    for index, (hours_ago, talk, mos, disconnect) in enumerate(
        ((3, 240, 4.4, "client"), (4, 180, 3.2, "peer"), (5, 2, 4.1, "peer"), (6, 120, 4.2, "client"), (7, 60, 4.3, "peer"), (30, 200, 2.5, "client")),
        start=2,
    ):
        add_call(
            state,
            f"c0ffee00-1234-4abc-8def-00000000000{index}",
            now - timedelta(hours=hours_ago),
            talk_s=talk,
            mos=mos,
            disconnect=disconnect,
            answer_after_s=0.5 if talk < 5 else 5.0,  # the 2 s call: 3.5 s from start to end
        )

    # browser log capture: enabled for the agent, with lines around the dropped call
    state.logcapture[AGENT_USER_ID] = {
        "id": AGENT_USER_ID,
        "dateStarted": iso(now - timedelta(hours=4)),
        "dateExpired": iso(now + timedelta(hours=20)),
        "captureMethod": "OnDemand",
        "selfUri": f"/api/v2/diagnostics/logcapture/browser/users/{AGENT_USER_ID}",
    }
    def ms(seconds: float) -> int:
        return int((dropped_start + timedelta(seconds=seconds)).timestamp() * 1000)

    state.log_entries[AGENT_USER_ID] = [
        {"level": "info", "message": "Loaded translations for en-us", "timestamp": ms(-30)},
        {"level": "info", "message": "[webrtc-sdk] iceConnectionState changed: checking", "timestamp": ms(4)},
        {"level": "info", "message": "[webrtc-sdk] selected candidate pair: local relay tcp -> remote host udp", "timestamp": ms(5)},
        {"level": "info", "message": "[webrtc-sdk] iceConnectionState changed: connected", "timestamp": ms(5.2)},
        {"level": "debug", "message": "presence updated: On Queue", "timestamp": ms(20)},
        {"level": "warn", "message": "[webrtc-sdk] iceConnectionState changed: disconnected", "timestamp": ms(94)},
        {"level": "error", "message": "[webrtc-sdk] media error: RTCPeerConnection failed, ICE failed", "timestamp": ms(95)},
        {"level": "warn", "message": "[webrtc-sdk] iceConnectionState changed: failed", "timestamp": ms(95.5)},
        {"level": "info", "message": "[webrtc-sdk] iceConnectionState changed: connected", "timestamp": ms(101)},
        {"level": "info", "message": "outside the call window", "timestamp": ms(3600)},
    ]

    # integrations
    state.integrations[INTEGRATION_ACTIVE_ID] = {
        "id": INTEGRATION_ACTIVE_ID,
        "name": "AudioHook Monitor",
        "integrationType": {"id": "audiohook"},
        "intendedState": "ENABLED",
        "reportedState": {"code": "ACTIVE", "effective": "Active", "lastUpdated": iso(now - timedelta(days=3))},
        "selfUri": f"/api/v2/integrations/{INTEGRATION_ACTIVE_ID}",
    }
    state.integrations[INTEGRATION_INACTIVE_ID] = {
        "id": INTEGRATION_INACTIVE_ID,
        "name": "Screen Pop Connector",
        "integrationType": {"id": "custom-client-application"},
        "intendedState": "ENABLED",
        "reportedState": {
            "code": "INACTIVE",
            "effective": "Inactive",
            "detail": {"localizableMessageCode": "integration.inactive", "message": "The integration stopped answering health checks"},
            "lastUpdated": iso(now - timedelta(minutes=40)),
        },
        "selfUri": f"/api/v2/integrations/{INTEGRATION_INACTIVE_ID}",
    }
    return state
