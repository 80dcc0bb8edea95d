"""Reports built by hand, exactly in the shape plugins/FINDINGS.md promises.

``clean_checks()`` is a healthy PC (every check passes, figures well inside the
thresholds); ``clean_incident()`` a healthy call. Golden scenarios replace one or two
items of these with the symptom, so each test shows what a rule reacts to.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from agentd.model import AgentInfo, CheckResult, Evidence, Report, Status, isoformat

CALL_START = datetime(2026, 5, 14, 10, 0, 0, tzinfo=timezone.utc)
CALL_END = CALL_START + timedelta(minutes=10)
AGENT = AgentInfo(hostname="pc-042", install_id="agentd-test", version="0.1.0", platform="Linux", python="3.11")


def at(seconds: float) -> str:
    """A moment ``seconds`` into the call, as Genesys writes it."""
    return isoformat(CALL_START + timedelta(seconds=seconds))


def check(check_id: str, status: Status = Status.PASS, summary: str = "ok", metrics: dict | None = None, **details: Any) -> CheckResult:
    return CheckResult(id=check_id, status=status, summary=summary, metrics=metrics or {}, details=details)


def series(points: int = 60, rtt: float = 22.0, lost_every: int = 0) -> list[dict]:
    return [
        {"t_ms": i * 100, "rtt_ms": None if lost_every and i % lost_every == 0 else rtt + (i % 5)}
        for i in range(points)
    ]


def clean_checks() -> dict[str, CheckResult]:
    turn_ok = lambda transport: check(  # noqa: E731
        f"turn.{transport}",
        metrics={"alloc_ms": 30.0},
        server=f"turn:edge.example:3478?transport={transport}",
        relay="198.51.100.7:50000",
        mapped="203.0.113.9:40000",
    )
    return {
        "dns": check("dns", metrics={"resolve_ms": 12.0, "hosts_failed": 0}, hosts=[
            {"role": "api", "host": "api.mypurecloud.ie", "ok": True, "addresses": ["192.0.2.10"], "resolve_ms": 12.0},
            {"role": "streaming", "host": "streaming.mypurecloud.ie", "ok": True, "addresses": ["192.0.2.11"], "resolve_ms": 10.0},
        ]),
        "https": check("https", metrics={"ttfb_ms": 80.0}, endpoints=[
            {"role": "api", "url": "https://api.mypurecloud.ie/", "host": "api.mypurecloud.ie", "port": 443, "ok": True,
             "resolve_ms": 1.0, "connect_ms": 20.0, "handshake_ms": 40.0, "ttfb_ms": 80.0, "http_status": 200},
        ]),
        "websocket": check("websocket", metrics={"connect_ms": 90.0, "ping_rtt_ms": 25.0, "max_heartbeat_gap_s": 30.2},
                           target="wss://streaming.mypurecloud.ie/channels/x", handshake_status=101, close_code=None),
        "stun": check("stun", metrics={"rtt_ms": 20.0}, bindings=[
            {"server": "stun:edge.example:3478", "transport": "udp", "ok": True, "mapped": "203.0.113.9:40000", "rtt_ms": 20.0},
        ]),
        "nat": check("nat", mapping="endpoint-independent", mapped_addresses=["203.0.113.9:40000"], private_only=False, ipv6=False, vpn_interfaces=[]),
        "turn.udp": turn_ok("udp"),
        "turn.tcp": turn_ok("tcp"),
        "turn.tls": turn_ok("tls"),
        "udp.ports": check("udp.ports", metrics={"answered_pct": 100.0, "ports_tried": 8},
                           range="16384-65535", sample=[16384, 20000], answered=[16384, 20000], target="198.51.100.7"),
        "media.path": check(
            "media.path",
            metrics={"rtt_ms": 24.0, "rtt_p95_ms": 30.0, "rtt_max_ms": 35.0, "jitter_ms": 3.0, "loss_pct": 0.0,
                     "max_loss_burst": 0, "mos": 4.4, "r_factor": 92.0},
            transport="udp", attempts=[{"transport": "udp", "ok": True, "reason": None, "error": None}],
            raw_loss_pct=0.0, probes_sent=300, probes_received=300, series=series(),
        ),
        "host": check("host", metrics={"cpu_pct": 20.0, "mem_used_pct": 55.0, "memory_pressure_avg10": 0.0}),
    }


def evidence(kind: str, data: dict, *, key: str | None = None, status: str = "ok", window: bool = True) -> Evidence:
    return Evidence(
        id=f"{kind}:{key}" if key else kind,
        source="genesys",
        kind=kind,
        summary=kind,
        status=status,
        window_start=isoformat(CALL_START) if window else None,
        window_end=isoformat(CALL_END) if window else None,
        data=data,
    )


def rtc_stats(samples: Iterable[tuple[float, float, float, float]]) -> list[dict]:
    """(seconds into the call, packetsLost counter, roundTripTime s, audioLevel)."""
    return [
        {"timestamp": at(t), "packetsLost": lost, "jitterBufferDelay": 0.05, "roundTripTime": rtt, "audioLevel": level}
        for t, lost, rtt, level in samples
    ]


def clean_evidence() -> dict[str, Evidence]:
    return {
        "genesys.conversation": evidence("genesys.conversation", {
            "conversationId": "c-1", "startTime": at(0), "endTime": at(600),
            "agent": {"participantId": "p-1", "userId": "u-1", "purpose": "agent", "calls": [
                {"id": "s-1", "state": "disconnected", "disconnectType": "client", "muted": False,
                 "connectedTime": at(1), "disconnectedTime": at(600)}]},
        }),
        "genesys.call_quality": evidence("genesys.call_quality", {
            "sessions": [{"sessionId": "s-1", "mediaType": "voice", "mediaEndpointStats": [
                {"codecs": ["opus"], "minMos": 4.4, "minRFactor": 92.0, "maxLatencyMs": 40, "receivedPackets": 30000, "discardedPackets": 0}],
                "segments": [{"segmentType": "interact", "segmentStart": at(1), "segmentEnd": at(600), "disconnectType": "client"}]}],
            "minMos": 4.4, "maxLatencyMs": 40, "lossPct": 0.0,
        }),
        "genesys.webrtc_diagnostics": evidence("genesys.webrtc_diagnostics", {
            "ice_states": [{"timestamp": at(0), "state": "checking"}, {"timestamp": at(1), "state": "connected"}],
            "rtc_stats": rtc_stats((t, 0, 0.03, 0.4) for t in range(10, 600, 30)),
            "selected_pair": {"protocol": "udp", "localCandidateType": "host", "remoteCandidateType": "relay"},
        }),
        "genesys.station": evidence("genesys.station", {
            "station": {"id": "st-1", "type": "inin_webrtc_softphone", "webRtcForceTurn": False, "webRtcMediaDscp": 46},
            "phone": {"id": "ph-1", "operationalStatus": "OPERATIONAL"},
        }),
        "genesys.integration": evidence("genesys.integration", {
            "integrationId": "i-1", "name": "Cognigy bot", "reportedState": {"code": "ACTIVE"}}),
        "genesys.session_fragmentation": evidence("genesys.session_fragmentation", {
            "userId": "u-1", "sessions": 1, "segments": 3, "reconnects": 0, "stitched_talk_s": 599, "per_session_talk_s": [599]}),
        "signaling.websocket_drop": evidence("signaling.websocket_drop", {"at": at(700), "close_code": 1000, "reason": "normal closure"}),
    }


def report(checks: dict[str, CheckResult] | None = None, items: dict[str, Evidence] | None = None, *, profile: str = "full") -> Report:
    return Report(
        id="20260514T100000Z-abcdef012345",
        created=isoformat(CALL_END + timedelta(minutes=5)),
        agent=AGENT,
        profile=profile,
        conversation_id="c-1" if items else None,
        checks=tuple((checks or {}).values()),
        evidence=tuple((items or {}).values()),
    )


def patched(base: CheckResult, *, status: Status | None = None, metrics: dict | None = None, **details: Any) -> CheckResult:
    """``base`` with some metrics/details replaced (the rest of the contract stays)."""
    return replace(
        base,
        status=status or base.status,
        metrics={**base.metrics, **(metrics or {})},
        details={**base.details, **details},
    )


def with_data(item: Evidence, **data: Any) -> Evidence:
    return replace(item, data={**item.data, **data})


@dataclass
class Timeline:
    """The shape of ``findings.timeline`` (FINDINGS.md), in memory."""

    samples: list[dict] = field(default_factory=list)
    recorded: list[dict] = field(default_factory=list)

    def host_samples(self, start: datetime, end: datetime) -> list[dict]:
        return [s for s in self.samples if start <= datetime.fromisoformat(s["at"].replace("Z", "+00:00")) <= end]

    def events(self, start: datetime, end: datetime, kinds: list[str] | None = None) -> list[dict]:
        return [
            e for e in self.recorded
            if start <= datetime.fromisoformat(e["at"].replace("Z", "+00:00")) <= end and (kinds is None or e["kind"] in kinds)
        ]


def host_samples(cpu: float, mem: float, psi: float, *, every_s: int = 15) -> list[dict]:
    return [
        {"at": at(t), "cpu_pct": cpu, "mem_used_pct": mem, "mem_available_mb": 300.0, "swap_used_pct": 10.0,
         "memory_pressure_avg10": psi, "browser_rss_mb": 3500.0}
        for t in range(-120, 720, every_s)
    ]
