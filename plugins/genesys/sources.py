"""The Genesys Cloud evidence sources (kinds and fields: plugins/FINDINGS.md).

Per conversation (incident mode): conversation, call quality, WebRTC diagnostics (seed
000 format: probe endpoint and ``--diagnostics-file``), browser log capture, session
fragmentation. Per agent or organisation: station and phone, integration health,
dropped calls over an interval.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterable, Mapping

from agentd.errors import GenesysError, NotFound
from agentd.evidence import EvidenceRequest
from agentd.model import Evidence, isoformat, utcnow

from .evidence import (
    AGENT_PURPOSES,
    GenesysSource,
    Window,
    agent_participants,
    agent_user_id,
    analytics_details,
    conversation,
    conversation_window,
    time_or_none,
    window_of,
)

MOS_UNACCEPTABLE = 3.5  # Genesys' own call-quality docs: below 3.5 is unacceptable
SHORT_CALL_S = 5.0
DROP_ALERT_PCT = 5.0
DROP_DISCONNECTS = frozenset({"transportFailure", "error", "transport.failure"})


# -- conversation ------------------------------------------------------------------------


class ConversationSource(GenesysSource):
    """Seed 000 steps 2-3: the agent's participant, its calls, states and disconnect types."""

    name = "genesys.conversation"
    kind = "genesys.conversation"

    async def gather(self, request: EvidenceRequest) -> list[Evidence]:
        body = await conversation(request, self.client)
        user_id = self.settings.user_id
        agents = agent_participants(body.get("participants") or (), user_id)
        window = window_of(body.get("startTime"), body.get("endTime"))
        data: dict[str, Any] = {"conversationId": body.get("id") or request.conversation_id, "startTime": body.get("startTime"), "endTime": body.get("endTime")}
        if not agents:
            data["agent"] = None
            return [self.item("the conversation has no agent participant (purpose agent or user)", data, window=window)]
        views = [_participant_view(p) for p in agents]
        data["agent"] = views[0]
        data["agentParticipants"] = views
        calls = [c for v in views for c in v["calls"]]
        disconnects = sorted({str(c["disconnectType"]) for c in calls if c.get("disconnectType")})
        summary = f"agent {views[0].get('userId') or '?'}: {len(views)} participant(s), {len(calls)} call(s)"
        if disconnects:
            summary += f", disconnect {', '.join(disconnects)}"
        return [self.item(summary, data, window=window)]


def _participant_view(participant: Mapping[str, Any]) -> dict[str, Any]:
    calls = []
    for call in participant.get("calls") or ():
        if isinstance(call, Mapping):
            calls.append(
                {
                    "id": call.get("id"),
                    "state": call.get("state"),
                    "disconnectType": call.get("disconnectType"),
                    "muted": call.get("muted"),
                    "connectedTime": call.get("connectedTime"),
                    "disconnectedTime": call.get("disconnectedTime"),
                }
            )
    return {"participantId": participant.get("id"), "userId": participant.get("userId"), "purpose": participant.get("purpose"), "calls": calls}


# -- call quality ------------------------------------------------------------------------


SEGMENT_FIELDS = ("segmentType", "segmentStart", "segmentEnd", "disconnectType", "sipResponseCodes", "q850ResponseCodes", "errorCode")


class CallQualitySource(GenesysSource):
    """Analytics details of the call: per session mediaEndpointStats and segments."""

    name = "genesys.call_quality"
    kind = "genesys.call_quality"

    async def gather(self, request: EvidenceRequest) -> list[Evidence]:
        try:
            details = await analytics_details(request, self.client)
        except NotFound:
            return [self.skipped("no analytics details for this conversation (yet): Genesys publishes them minutes after the call ends")]
        user_id = await agent_user_id(request, self.client, self.settings)
        return [quality_item(self, details, user_id)]


def agent_sessions(details: Mapping[str, Any], user_id: str | None) -> list[dict[str, Any]]:
    sessions = []
    for participant in agent_participants(details.get("participants") or (), user_id):
        for session in participant.get("sessions") or ():
            if isinstance(session, dict) and session.get("mediaType") in (None, "voice"):
                sessions.append({**session, "participantId": participant.get("participantId"), "userId": participant.get("userId")})
    return sessions


def quality_figures(sessions: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``minMos``, ``maxLatencyMs``, ``lossPct`` (discarded of received packets, %) over sessions."""
    stats = [s for session in sessions for s in (session.get("mediaEndpointStats") or ()) if isinstance(s, Mapping)]
    mos = [float(s["minMos"]) for s in stats if isinstance(s.get("minMos"), (int, float))]
    latency = [int(s["maxLatencyMs"]) for s in stats if isinstance(s.get("maxLatencyMs"), (int, float))]
    received = sum(int(s.get("receivedPackets") or 0) for s in stats)
    discarded = sum(int(s.get("discardedPackets") or 0) for s in stats)
    return {
        "minMos": min(mos) if mos else None,
        "minRFactor": min((float(s["minRFactor"]) for s in stats if isinstance(s.get("minRFactor"), (int, float))), default=None),
        "maxLatencyMs": max(latency) if latency else None,
        "lossPct": round(100.0 * discarded / received, 2) if received else None,
        "receivedPackets": received,
        "discardedPackets": discarded,
    }


def quality_item(source: GenesysSource, details: Mapping[str, Any], user_id: str | None) -> Evidence:
    sessions = agent_sessions(details, user_id)
    views = [
        {
            "sessionId": s.get("sessionId"),
            "participantId": s.get("participantId"),
            "mediaType": s.get("mediaType"),
            "mediaEndpointStats": list(s.get("mediaEndpointStats") or ()),
            "segments": [{k: seg.get(k) for k in SEGMENT_FIELDS if k in seg} for seg in (s.get("segments") or ()) if isinstance(seg, Mapping)],
        }
        for s in sessions
    ]
    figures = quality_figures(sessions)
    window = window_of(details.get("conversationStart"), details.get("conversationEnd"))
    data = {
        "conversationId": details.get("conversationId"),
        "startTime": details.get("conversationStart"),
        "endTime": details.get("conversationEnd"),
        "mediaStatsMinConversationMos": details.get("mediaStatsMinConversationMos"),
        "sessions": views,
        **figures,
    }
    if not views:
        return source.item("the analytics details hold no voice session of the agent", data, window=window)
    parts = []
    if figures["minMos"] is not None:
        low = " (unacceptable: below 3.5)" if figures["minMos"] < MOS_UNACCEPTABLE else ""
        parts.append(f"MOS {figures['minMos']:.2f}{low}")
    if figures["maxLatencyMs"] is not None:
        parts.append(f"latency up to {figures['maxLatencyMs']} ms")
    if figures["lossPct"] is not None:
        parts.append(f"{figures['lossPct']:.1f}% discarded")
    ends = sorted({str(seg["disconnectType"]) for v in views for seg in v["segments"] if seg.get("disconnectType")})
    if ends:
        parts.append(f"disconnect {', '.join(ends)}")
    return source.item(f"{len(views)} agent session(s): " + ", ".join(parts), data, window=window)


# -- seed-000 WebRTC diagnostics -----------------------------------------------------------


class WebRtcDiagnosticsSource(GenesysSource):
    """The seed-000 diagnostics event format, from ``--diagnostics-file``, and from the
    seed's endpoint only when ``[genesys] webrtc_diagnostics_api`` is on (the path is not
    in the public API: asked, it answers 404, "not available here")."""

    name = "genesys.webrtc_diagnostics"
    kind = "genesys.webrtc_diagnostics"
    timeout_s = 20.0

    def __init__(self, settings, client=None, *, use_api: bool = True) -> None:
        super().__init__(settings, client)
        self.use_api = use_api

    async def gather(self, request: EvidenceRequest) -> list[Evidence]:
        items: list[Evidence] = []
        file = request.options.get("diagnostics_file")
        if file:
            items.append(self.from_file(Path(str(file)).expanduser()))
        if self.use_api and request.conversation_id:
            items.extend(await self.from_api(request))
        elif not file and request.conversation_id:
            items.append(self.skipped(
                "the seed's WebRTC diagnostics endpoint is not asked (it is not in the public API; set "
                "[genesys] webrtc_diagnostics_api = true where it exists); an export can be given with --diagnostics-file",
                key="api",
            ))
        return items

    def from_file(self, path: Path) -> Evidence:
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return self.item(f"diagnostics file {path} does not exist", {"file": str(path)}, key="file", status="error")
        except (OSError, UnicodeDecodeError) as exc:
            return self.item(f"diagnostics file {path} cannot be read: {exc}", {"file": str(path)}, key="file", status="error")
        except ValueError as exc:
            return self.item(f"diagnostics file {path} is not JSON: {exc}", {"file": str(path)}, key="file", status="error")
        parsed = parse_diagnostics(payload)
        if parsed is None:
            return self.item(f'diagnostics file {path} is not in the diagnostics format ({{"entities": [...]}})', {"file": str(path)}, key="file", status="error")
        return self.item(diagnostics_summary(parsed), {**parsed, "origin": "file", "file": str(path)}, key="file", window=_events_window(parsed))

    async def from_api(self, request: EvidenceRequest) -> list[Evidence]:
        try:
            body = await conversation(request, self.client)
        except GenesysError as exc:
            return [self.failure(exc, key="api")]
        agents = agent_participants(body.get("participants") or (), self.settings.user_id)
        if not agents:
            return [self.skipped("no agent participant to ask diagnostics for", key="api")]
        items = []
        for participant in agents:
            pid = participant.get("id")
            path = f"/api/v2/diagnostics/webrtc/conversations/{request.conversation_id}/participants/{pid}"
            try:
                payload = await self.client.get(path, expected_statuses=(404,))
            except NotFound:
                items.append(self.skipped("WebRTC diagnostics endpoint: not available in this organisation (404)", key=f"api:{pid}", participantId=pid))
                continue
            except GenesysError as exc:
                items.append(self.failure(exc, key=f"api:{pid}"))
                continue
            parsed = parse_diagnostics(payload)
            if parsed is None:
                items.append(self.item("the diagnostics endpoint answered something else than the diagnostics format", {"participantId": pid}, key=f"api:{pid}", status="error"))
                continue
            items.append(self.item(diagnostics_summary(parsed), {**parsed, "origin": "api", "participantId": pid}, key=f"api:{pid}", window=_events_window(parsed)))
        return items


def parse_diagnostics(payload: Any) -> dict[str, Any] | None:
    """``{"entities": [{type, timestamp, details}]}`` -> ice_states, rtc_stats, selected_pair."""
    entities = payload.get("entities") if isinstance(payload, Mapping) else payload if isinstance(payload, list) else None
    if not isinstance(entities, list):
        return None
    ice_states: list[dict[str, Any]] = []
    rtc_stats: list[dict[str, Any]] = []
    selected: dict[str, Any] | None = None
    for event in entities:
        if not isinstance(event, Mapping):
            continue
        kind = str(event.get("type") or "")
        details = event.get("details") if isinstance(event.get("details"), Mapping) else {}
        when = event.get("timestamp")
        if kind.lower() in ("iceconnectionstatechange", "iceconnectionstate"):
            ice_states.append({"timestamp": when, "state": details.get("state")})
        elif kind.lower() == "rtcstats":
            rtc_stats.append({"timestamp": when, **{k: details.get(k) for k in ("packetsLost", "jitterBufferDelay", "roundTripTime", "audioLevel") if k in details}})
            pair = details.get("selectedCandidatePair")
            if isinstance(pair, Mapping):
                selected = _pair(pair)
        elif kind.lower() in ("selectedcandidatepair", "candidatepairchange"):
            selected = _pair(details)
    return {"ice_states": ice_states, "rtc_stats": rtc_stats, "selected_pair": selected, "events": len(entities)}


def _pair(details: Mapping[str, Any]) -> dict[str, Any]:
    return {k: details.get(k) for k in ("protocol", "localCandidateType", "remoteCandidateType", "relayProtocol") if k in details}


def diagnostics_summary(parsed: Mapping[str, Any]) -> str:
    parts = []
    states = [str(s.get("state")) for s in parsed["ice_states"] if s.get("state")]
    if states:
        parts.append("ICE " + " -> ".join(states))
    rtts = [float(s["roundTripTime"]) for s in parsed["rtc_stats"] if isinstance(s.get("roundTripTime"), (int, float))]
    lost = [float(s["packetsLost"]) for s in parsed["rtc_stats"] if isinstance(s.get("packetsLost"), (int, float))]
    if rtts:
        parts.append(f"RTT up to {max(rtts) * 1000:.0f} ms")
    if lost:
        parts.append(f"packetsLost up to {max(lost):.0f}")
    pair = parsed.get("selected_pair")
    if pair and pair.get("protocol"):
        parts.append(f"selected pair over {str(pair['protocol']).upper()}")
    return "; ".join(parts) or f"{parsed['events']} diagnostics event(s), none of a known type"


def _events_window(parsed: Mapping[str, Any]) -> Window | None:
    times = [time_or_none(e.get("timestamp")) for e in [*parsed["ice_states"], *parsed["rtc_stats"]]]
    known = sorted(t for t in times if t is not None)
    return Window(known[0], known[-1]) if known else None


# -- browser log capture -----------------------------------------------------------------


WEBRTC_LINE = re.compile(r"(?i)webrtc|\bice\b|iceconnection|icegathering|candidate|rtcpeerconnection|getusermedia|\bsdp\b|\bturn\b|\bstun\b|media error|\bdtls\b|\bsrtp\b")
ICE_STATE = re.compile(r"(?i)ice\s*connection\s*state\b[^a-z]*(?:changed\s*(?:to)?)?[\s:=]*\b(new|checking|connected|completed|disconnected|failed|closed)\b")
PAIR = re.compile(r"(?i)candidate pair:?\s*local\s+(\w+)\s+(udp|tcp|tls)")


class BrowserLogSource(GenesysSource):
    """Browser log capture (real API): the agent's console lines in the call's window,
    WebRTC lines only, with the ICE states read from them."""

    name = "genesys.browser_log"
    kind = "genesys.browser_log"
    timeout_s = 45.0

    async def gather(self, request: EvidenceRequest) -> list[Evidence]:
        user_id = await agent_user_id(request, self.client, self.settings)
        if not user_id:
            return [self.skipped("no agent user id to query browser logs for (set [genesys] user_id or run `agentd login`)")]
        window = await conversation_window(request, self.client)
        if window is None:
            return [self.skipped("no call window to query browser logs for")]
        window = window.widened(60)
        body = {"interval": window.interval, "userId": user_id, "sortOrder": "ASC"}
        lines: list[dict[str, Any]] = []
        total = 0
        async for page in log_entry_pages(self.client, body):
            for entry in page:
                if not isinstance(entry, Mapping):
                    continue
                total += 1
                message = str(entry.get("message") or "")
                if WEBRTC_LINE.search(message):
                    lines.append({"timestamp": _log_time(entry.get("timestamp")), "level": entry.get("level"), "message": message[:2000]})
        if total == 0:
            capture = await self._capture_state(user_id)
            why = "log capture is not enabled for this agent" if capture is None else "capture was on, but no lines were logged in the call's window"
            return [self.skipped(f"no browser log entries for the call: {why}", userId=user_id, capture=capture)]
        ice_states = [{"timestamp": line["timestamp"], "state": m.group(1).lower()} for line in lines if (m := ICE_STATE.search(line["message"]))]
        pair = next(({"localCandidateType": m.group(1).lower(), "protocol": m.group(2).lower()} for line in lines if (m := PAIR.search(line["message"]))), None)
        errors = sum(1 for line in lines if str(line.get("level")).lower() == "error")
        data = {"userId": user_id, "entries": lines, "ice_states": ice_states, "selected_pair": pair, "entries_total": total, "media_errors": errors}
        states = " -> ".join(s["state"] for s in ice_states) or "none"
        return [self.item(f"{len(lines)} WebRTC line(s) of {total}; ICE states: {states}; {errors} error line(s)", data, window=window)]

    async def _capture_state(self, user_id: str) -> dict[str, Any] | None:
        try:
            found = await self.client.get(f"/api/v2/diagnostics/logcapture/browser/users/{user_id}", expected_statuses=(404,))
        except NotFound:
            return None
        return found if isinstance(found, dict) else None


LOG_QUERY = "/api/v2/diagnostics/logcapture/browser/entries/query"
LOG_PAGE_SIZE = 200  # the API's largest page
MAX_LOG_PAGES = 500


async def log_entry_pages(client: Any, body: Mapping[str, Any]) -> Any:
    """Each page of a log-capture query: ``?pageSize``, then ``?after=<cursor>`` taken
    from the answer's ``nextUri`` until there is none (bounded, and a cursor seen twice ends it)."""
    params: dict[str, Any] = {"pageSize": LOG_PAGE_SIZE}
    seen: set[str] = set()
    for _ in range(MAX_LOG_PAGES):
        answer = await client.post(LOG_QUERY, dict(body), params=params)
        entities = answer.get("entities") if isinstance(answer, Mapping) else None
        yield entities if isinstance(entities, list) else []
        after = _after_cursor(answer.get("nextUri") if isinstance(answer, Mapping) else None)
        if not after or after in seen:
            return
        seen.add(after)
        params = {"pageSize": LOG_PAGE_SIZE, "after": after}


def _after_cursor(next_uri: Any) -> str | None:
    if not isinstance(next_uri, str) or not next_uri:
        return None
    from urllib.parse import parse_qs, urlsplit

    found = parse_qs(urlsplit(next_uri).query).get("after")
    return found[0] if found else None


def _log_time(value: Any) -> Any:
    """LogEntry.timestamp is epoch milliseconds; evidence carries ISO-8601 like the rest."""
    if isinstance(value, (int, float)):
        from datetime import datetime, timezone

        return isoformat(datetime.fromtimestamp(value / 1000.0, tz=timezone.utc))
    return value


class LogCaptureKeeper(GenesysSource):
    """In ``full`` runs with ``[genesys] log_capture_hours``: keep the agent's browser log
    capture enabled (at most 24 h ahead), so the next dropped call has its lines."""

    name = "genesys.log_capture"
    kind = "genesys.log_capture"

    async def gather(self, request: EvidenceRequest) -> list[Evidence]:
        user_id = await agent_user_id(request, self.client, self.settings)
        if not user_id:
            return [self.skipped("no agent user id: set [genesys] user_id or run `agentd login`")]
        path = f"/api/v2/diagnostics/logcapture/browser/users/{user_id}"
        hours = min(24.0, self.settings.log_capture_hours)
        try:
            current = await self.client.get(path, expected_statuses=(404,))
        except NotFound:
            current = None
        expires = time_or_none(current.get("dateExpired")) if isinstance(current, dict) else None
        if expires is not None and expires - utcnow() > timedelta(hours=min(1.0, hours / 2)):
            return [self.item(f"browser log capture is on until {isoformat(expires)}", {"userId": user_id, "capture": current, "renewed": False})]
        until = utcnow() + timedelta(hours=hours)
        enabled = await self.client.post(path, {"dateExpired": isoformat(until)})
        return [self.item(f"browser log capture enabled until {isoformat(until)}", {"userId": user_id, "capture": enabled, "renewed": True})]


# -- station and phone -------------------------------------------------------------------


class StationSource(GenesysSource):
    """The agent's effective station (webRtcForceTurn, webRtcMediaDscp, type) and phone status."""

    name = "genesys.station"
    kind = "genesys.station"

    async def gather(self, request: EvidenceRequest) -> list[Evidence]:
        user_id = await agent_user_id(request, self.client, self.settings)
        if not user_id:
            return [self.skipped("no agent user id (set [genesys] user_id or run `agentd login`)")]
        try:
            stations = await self.client.get(f"/api/v2/users/{user_id}/station")
        except NotFound:
            return [self.skipped("the agent has no station", userId=user_id)]
        ref = None
        if isinstance(stations, Mapping):
            ref = stations.get("effectiveStation") or stations.get("associatedStation")
        station_view: dict[str, Any] | None = None
        if isinstance(ref, Mapping) and ref.get("id"):
            station = await self.client.get(f"/api/v2/stations/{ref['id']}")
            if isinstance(station, Mapping):
                station_view = {k: station.get(k) for k in ("id", "name", "type", "status", "webRtcForceTurn", "webRtcMediaDscp", "webRtcPersistentEnabled", "webRtcRequireMediaHelper")}
        phone_view: dict[str, Any] | None = None
        async for page in self.client.pages("/api/v2/telephony/providers/edges/phones", params={"webRtcUser.id": user_id, "expand": "status"}, page_size=25):
            for phone in page:
                if isinstance(phone, Mapping) and (phone.get("webRtcUser") or {}).get("id") == user_id:
                    status = phone.get("status") if isinstance(phone.get("status"), Mapping) else {}
                    phone_view = {"id": phone.get("id"), "name": phone.get("name"), "state": phone.get("state"), "operationalStatus": status.get("operationalStatus"), "edgesStatus": status.get("edgesStatus")}
                    break
            if phone_view:
                break
        parts = []
        if station_view:
            parts.append(f"station {station_view.get('type')}: webRtcForceTurn {'on' if station_view.get('webRtcForceTurn') else 'off'}, DSCP {station_view.get('webRtcMediaDscp')}")
        else:
            parts.append("no effective station")
        parts.append(f"phone {phone_view.get('operationalStatus')}" if phone_view else "no WebRTC phone found")
        return [self.item("; ".join(parts), {"userId": user_id, "station": station_view, "phone": phone_view})]


# -- integrations ------------------------------------------------------------------------


class IntegrationSource(GenesysSource):
    """Seed 003: ``reportedState.code`` of each configured integration (ACTIVE or not)."""

    name = "genesys.integration"
    kind = "genesys.integration"

    async def gather(self, request: EvidenceRequest) -> list[Evidence]:
        items = []
        for integration_id in self.settings.integration_ids:
            try:
                body = await self.client.get(f"/api/v2/integrations/{integration_id}")
            except GenesysError as exc:
                items.append(self.failure(exc, key=integration_id))
                continue
            body = body if isinstance(body, Mapping) else {}
            state = body.get("reportedState") if isinstance(body.get("reportedState"), Mapping) else {}
            code = state.get("code")
            detail = state.get("detail") if isinstance(state.get("detail"), Mapping) else {}
            why = f": {detail.get('message')}" if detail.get("message") else ""
            data = {"integrationId": integration_id, "name": body.get("name"), "intendedState": body.get("intendedState"), "reportedState": dict(state)}
            items.append(self.item(f"integration {body.get('name') or integration_id} is {code or 'in an unknown state'}{why}", data, key=integration_id))
        return items


# -- dropped calls -----------------------------------------------------------------------


class DroppedCallsSource(GenesysSource):
    """Seed 003: over an interval, the agent's (or queues') voice calls: total, shorter than
    5 s, MOS below 3.5, and the share that dropped (alert above 5%)."""

    name = "genesys.dropped_calls"
    kind = "genesys.dropped_calls"
    timeout_s = 60.0

    async def gather(self, request: EvidenceRequest) -> list[Evidence]:
        user_id = await agent_user_id(request, self.client, self.settings)
        queues = tuple(self.settings.queue_ids)
        if not user_id and not queues:
            return [self.skipped("no agent user id or [genesys] queue_ids to count calls for")]
        end = utcnow()
        window = Window(end - timedelta(hours=self.settings.dropped_calls_hours), end)
        body = details_query(window, user_id=user_id, queue_ids=queues)
        conversations: list[Mapping[str, Any]] = []
        async for page in self.client.query_pages("/api/v2/analytics/conversations/details/query", body):
            conversations.extend(c for c in page if isinstance(c, Mapping))
        data = dropped_figures(conversations, user_id)
        data["interval"] = window.interval
        data["scope"] = {"userId": user_id} if user_id else {"queueIds": list(queues)}
        alert = " (above 5%: alert)" if data["alert"] else ""
        summary = (
            f"{data['total']} voice call(s) in {self.settings.dropped_calls_hours:g} h: {data['short_calls']} under 5 s, "
            f"{data['low_mos_calls']} below MOS 3.5, {data['drop_pct']:.1f}% dropped{alert}"
        )
        return [self.item(summary, data, window=window)]


def details_query(window: Window, *, user_id: str | None = None, queue_ids: Iterable[str] = (), mos_below: float | None = None) -> dict[str, Any]:
    """An analytics ``ConversationQuery`` for voice calls in ``window``."""
    predicates: list[dict[str, Any]] = [{"type": "dimension", "dimension": "mediaType", "operator": "matches", "value": "voice"}]
    segment_filters: list[dict[str, Any]] = [{"type": "and", "predicates": predicates}]
    if user_id:
        segment_filters.append({"type": "and", "predicates": [{"type": "dimension", "dimension": "userId", "operator": "matches", "value": user_id}]})
    queues = list(queue_ids)
    if queues and not user_id:
        segment_filters.append({"type": "or", "predicates": [{"type": "dimension", "dimension": "queueId", "operator": "matches", "value": q} for q in queues]})
    body: dict[str, Any] = {"interval": window.interval, "order": "asc", "orderBy": "conversationStart", "segmentFilters": segment_filters}
    if mos_below is not None:
        body["conversationFilters"] = [
            {"type": "and", "predicates": [{"type": "dimension", "dimension": "mediaStatsMinConversationMos", "operator": "matches", "range": {"lt": mos_below}}]}
        ]
    return body


def dropped_figures(conversations: Iterable[Mapping[str, Any]], user_id: str | None) -> dict[str, Any]:
    total = short = low = dropped = 0
    low_ids: list[str] = []
    dropped_ids: list[str] = []
    for conv in conversations:
        total += 1
        start, end = time_or_none(conv.get("conversationStart")), time_or_none(conv.get("conversationEnd"))
        is_short = start is not None and end is not None and (end - start).total_seconds() < SHORT_CALL_S
        mos = conv.get("mediaStatsMinConversationMos")
        is_low = isinstance(mos, (int, float)) and mos < MOS_UNACCEPTABLE
        ends = {
            seg.get("disconnectType")
            for p in agent_participants(conv.get("participants") or (), user_id)
            for s in p.get("sessions") or ()
            for seg in s.get("segments") or ()
            if isinstance(seg, Mapping)
        }
        is_dropped = is_short or bool(ends & DROP_DISCONNECTS)
        short += is_short
        low += is_low
        dropped += is_dropped
        if is_low:
            low_ids.append(str(conv.get("conversationId")))
        if is_dropped:
            dropped_ids.append(str(conv.get("conversationId")))
    pct = round(100.0 * dropped / total, 1) if total else 0.0
    return {
        "total": total,
        "short_calls": short,
        "low_mos_calls": low,
        "dropped_calls": dropped,
        "drop_pct": pct,
        "alert": pct > DROP_ALERT_PCT,
        "low_mos_conversations": low_ids[:100],
        "dropped_conversations": dropped_ids[:100],
    }


# -- session fragmentation ---------------------------------------------------------------


class SessionFragmentationSource(GenesysSource):
    """Seed 001: one user's several sessions in one conversation, split by reconnects;
    the stitched talk time against the per-session figures."""

    name = "genesys.session_fragmentation"
    kind = "genesys.session_fragmentation"

    async def gather(self, request: EvidenceRequest) -> list[Evidence]:
        try:
            details = await analytics_details(request, self.client)
        except NotFound:
            return [self.skipped("no analytics details for this conversation (yet)")]
        user_id = await agent_user_id(request, self.client, self.settings)
        data = fragmentation_figures(details, user_id)
        window = window_of(details.get("conversationStart"), details.get("conversationEnd"))
        if data["sessions"] <= 1:
            summary = "one agent session: not fragmented" if data["sessions"] else "no agent voice session"
        else:
            summary = (
                f"{data['sessions']} sessions of one interaction after {data['reconnects']} reconnect(s): "
                f"per session {', '.join(f'{s:.0f} s' for s in data['per_session_talk_s'])}, stitched {data['stitched_talk_s']:.0f} s"
            )
        return [self.item(summary, data, window=window)]


def fragmentation_figures(details: Mapping[str, Any], user_id: str | None) -> dict[str, Any]:
    sessions = agent_sessions(details, user_id)
    per_session: list[float] = []
    spans: list[tuple[Any, Any]] = []
    segments = 0
    for session in sessions:
        talk = 0.0
        for seg in session.get("segments") or ():
            if not isinstance(seg, Mapping) or seg.get("segmentType") != "interact":
                continue
            start, end = time_or_none(seg.get("segmentStart")), time_or_none(seg.get("segmentEnd"))
            if start is None or end is None:
                continue
            segments += 1
            talk += (end - start).total_seconds()
            spans.append((start, end))
        per_session.append(round(talk, 1))
    spans.sort()
    stitched = (max(e for _, e in spans) - spans[0][0]).total_seconds() if spans else 0.0
    gaps = [round((spans[i + 1][0] - spans[i][1]).total_seconds(), 1) for i in range(len(spans) - 1)]
    return {
        "userId": sessions[0].get("userId") if sessions else user_id,
        "sessions": len(sessions),
        "segments": segments,
        "reconnects": max(0, len(sessions) - 1),
        "stitched_talk_s": round(stitched, 1),
        "per_session_talk_s": per_session,
        "per_session_sum_s": round(sum(per_session), 1),
        "gaps_s": gaps,
        "fragmented": len(sessions) > 1,
    }


__all__ = [
    "AGENT_PURPOSES",
    "BrowserLogSource",
    "CallQualitySource",
    "ConversationSource",
    "DroppedCallsSource",
    "IntegrationSource",
    "LogCaptureKeeper",
    "SessionFragmentationSource",
    "StationSource",
    "WebRtcDiagnosticsSource",
]
