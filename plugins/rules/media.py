"""Rules about the media path: congestion, a lossy link, UDP blocked, TCP fallback, no relay,
NAT, TURN credentials.

Codes: ``network.isp_congestion``, ``network.packet_loss``, ``network.jitter``, ``network.firewall_udp_blocked``,
``network.turn_tcp_fallback``, ``network.turn_fallback_blocked``, ``network.media_blocked``, ``network.symmetric_nat``,
``config.turn_auth_failed``. Inputs: the ``stun``, ``nat``, ``turn.*``, ``udp.ports``,
``media.path`` and ``host`` checks, and the call's ``genesys.webrtc_diagnostics``,
``genesys.browser_log``, ``genesys.call_quality`` and ``genesys.station`` evidence.
"""

from __future__ import annotations

from typing import Mapping

from agentd import hookimpl
from agentd.correlation import Findings
from agentd.model import Evidence, Severity, Status, Verdict

from .segments import placed, unplaced_reason
from .base import (
    Thresholds,
    call_window,
    failed,
    items,
    metric,
    number,
    ok_evidence,
    passed,
    ran,
    reason,
    ref_check,
    ref_evidence,
    sorted_by_time,
    thresholds_of,
    timeline_events,
    timeline_host_samples,
    timeline_refs,
    verdict,
)

TURN_CHECKS = ("turn.udp", "turn.tcp", "turn.tls")
# Reasons that mean "the network did not let it through" (not "the server said no").
BLOCKED_REASONS = frozenset({"timeout", "refused", "unreachable"})
CREDENTIAL_REASONS = frozenset({"auth", "forbidden"})
TCP_TRANSPORTS = frozenset({"tcp", "tls", "ssltcp"})
RACE_NOTE_PCT = 5.0
"""From this chance (media.path's ``details.relay_race``) the loss verdict says a relayed
softphone call would often end on the TCP relay (media.path's summary uses the same line)."""
MEDIA_PORTS = "UDP 3478 and 16384-65535"


@hookimpl
def agentd_correlate(findings: Findings) -> list[Verdict]:
    limits = thresholds_of(findings)
    found = [
        isp_congestion(findings, limits),
        packet_loss(findings, limits),
        jitter(findings, limits),
        firewall_udp_blocked(findings),
        turn_tcp_fallback(findings),
        turn_fallback_blocked(findings, limits),
        media_blocked(findings),
        symmetric_nat(findings),
        turn_auth_failed(findings),
    ]
    return [v for v in found if v is not None]


# -- shared readings -----------------------------------------------------------------------


def ice_failures(findings: Findings) -> list[Evidence]:
    """Evidence whose ICE states went ``checking`` -> ``failed`` with no connection between."""
    hits = []
    for kind in ("genesys.webrtc_diagnostics", "genesys.browser_log"):
        for item in ok_evidence(findings, kind):
            states = [str(e.get("state", "")).lower() for _, e in sorted_by_time(items(item.data.get("ice_states")))]
            checking = False
            for state in states:
                if state == "checking":
                    checking = True
                elif state in ("connected", "completed"):
                    checking = False
                elif state == "failed" and checking:
                    hits.append(item)
                    break
    return hits


def tcp_paths_open(findings: Findings) -> list[str]:
    """References proving TCP/TLS reaches the media edge: a TURN TCP/TLS allocation, a
    media path over TCP, or a STUN binding over TCP."""
    refs = []
    for check_id in ("turn.tcp", "turn.tls"):
        check = findings.check(check_id)
        if passed(check):
            refs.append(ref_check(check))
    media = findings.check("media.path")
    if passed(media) and str(media.details.get("transport", "")).lower() in TCP_TRANSPORTS:
        refs.append(ref_check(media))
    if media is not None:
        for attempt in items(media.details.get("attempts")):
            if attempt.get("ok") is True and str(attempt.get("transport", "")).lower() in TCP_TRANSPORTS:
                refs.append(ref_check(media))
    stun = findings.check("stun")
    if stun is not None and any(
        b.get("ok") is True and b.get("transport") in TCP_TRANSPORTS for b in items(stun.details.get("bindings"))
    ):
        refs.append(ref_check(stun))
    return list(dict.fromkeys(refs))


def udp_works_locally(findings: Findings) -> bool:
    """Whether this PC's UDP reaches the relay as the softphone's would: a UDP relay
    allocation or a UDP STUN binding succeeded. One success outweighs any number of
    timeouts: a lossy line loses packets, a blocked one loses them all. (Some answered
    ``udp.ports`` do not count: a firewall filtering source ports lets a few through.)"""
    if passed(findings.check("turn.udp")):
        return True
    udp = udp_before_fallback(findings.check("media.path"))
    if udp is not None and udp["loss_pct"] < 100.0:
        return True  # media packets crossed over UDP before it fell back
    stun = findings.check("stun")
    return stun is not None and any(
        b.get("ok") is True and b.get("transport", "udp") == "udp" for b in items(stun.details.get("bindings"))
    )


def udp_blocked_locally(findings: Findings) -> list[str]:
    """References showing UDP does not get through from this PC (by timeout/refusal);
    none when something shows that it does."""
    if udp_works_locally(findings):
        return []
    refs = []
    turn_udp = findings.check("turn.udp")
    if failed(turn_udp) and reason(turn_udp) in BLOCKED_REASONS:
        refs.append(ref_check(turn_udp))
    stun = findings.check("stun")
    if stun is not None:
        udp = [b for b in items(stun.details.get("bindings")) if b.get("transport", "udp") == "udp"]
        if udp and all(b.get("ok") is not True and b.get("reason") in BLOCKED_REASONS for b in udp):
            refs.append(ref_check(stun))
    ports = findings.check("udp.ports")
    if ran(ports) and (metric(ports, "ports_tried") or 0) > 0 and metric(ports, "answered_pct") == 0:
        refs.append(ref_check(ports))
    media = findings.check("media.path")
    if media is not None:
        for attempt in items(media.details.get("attempts")):
            if attempt.get("transport") == "udp" and attempt.get("ok") is False and attempt.get("reason") in BLOCKED_REASONS:
                refs.append(ref_check(media))
    return list(dict.fromkeys(refs))


def _rtc_congestion(item: Evidence, limits: Thresholds) -> tuple[int, float | None, float]:
    """From rtc_stats: (samples where loss rose while RTT was above the limit, worst RTT ms,
    packets lost in those samples). ``packetsLost`` is a running counter."""
    hits, worst, lost_total = 0, None, 0.0
    previous = 0.0
    for _, stat in sorted_by_time(items(item.data.get("rtc_stats"))):
        lost = number(stat.get("packetsLost"))
        rtt_s = number(stat.get("roundTripTime"))
        if lost is None:
            continue
        rose = lost - previous
        previous = max(previous, lost)
        if rtt_s is None:
            continue
        rtt_ms = rtt_s * 1000.0
        if rose > 0 and rtt_ms > limits.rtt_ms:
            hits += 1
            lost_total += rose
            worst = rtt_ms if worst is None else max(worst, rtt_ms)
    return hits, worst, lost_total


def _earlier_probe_congestion(findings: Findings, limits: Thresholds) -> tuple[list[str], list[str]]:
    """Incident mode: the daemon's own media.path probes during the call (``check.report``
    events in the local timeline) that saw loss and RTT above the limits."""
    window = call_window(findings)
    if window is None:
        return [], []
    events = timeline_events(findings, window[0], window[1], ["check.report"]) or []
    hits = []
    for event in events:
        data = event.get("data")
        if not isinstance(data, Mapping):
            continue
        for check in items(data.get("checks")):
            if check.get("id") != "media.path" or not isinstance(check.get("metrics"), Mapping):
                continue
            m = check["metrics"]
            loss, rtt = number(m.get("loss_pct")), number(m.get("rtt_p95_ms")) or number(m.get("rtt_ms"))
            if loss is not None and rtt is not None and loss > limits.loss_pct and rtt > limits.rtt_ms:
                hits.append(f"{event.get('at')}: loss {loss:.1f}% RTT {rtt:.0f} ms")
    return hits, ([*window[2], *timeline_refs(findings)] if hits else [])


# -- the rules -----------------------------------------------------------------------------


def isp_congestion(findings: Findings, limits: Thresholds) -> Verdict | None:
    """Seed 000 scenario A: loss rising together with RTT above the limit."""
    refs: list[str] = []
    parts: list[str] = []
    media = findings.check("media.path")
    # a segment verdict (rules/segments.py) names where this path's loss starts: it says it there
    if (passed(media) or failed(media)) and not placed(findings, limits):
        transport = str(media.details.get("transport", "udp")).lower()
        loss = metric(media, "loss_pct")
        rtt = max((v for v in (metric(media, "rtt_ms"), metric(media, "rtt_p95_ms")) if v is not None), default=None)
        # Over TCP loss turns into delay: that case is the TCP-fallback rule's.
        if transport not in TCP_TRANSPORTS and loss is not None and rtt is not None:
            if loss > limits.loss_pct and rtt > limits.rtt_ms:
                refs.append(ref_check(media))
                jitter = metric(media, "jitter_ms")
                extra = f", jitter {jitter:.0f} ms" if jitter is not None and jitter > limits.jitter_ms else ""
                parts.append(f"this PC's path to the media edge loses {loss:.1f}% with RTT up to {rtt:.0f} ms{extra}")
                slow = slow_tcp_turn(findings, limits) + slow_tcp_stun(findings, limits)
                if slow:
                    refs.extend(ref_check(c) for c in slow)
                    parts.append(_slow_tcp_part(slow))
    for item in ok_evidence(findings, "genesys.webrtc_diagnostics"):
        hits, worst, lost = _rtc_congestion(item, limits)
        if hits:
            refs.append(ref_evidence(item))
            parts.append(f"during the call {lost:.0f} packets were lost while RTT reached {worst:.0f} ms")
    for item in ok_evidence(findings, "genesys.call_quality"):
        loss, latency, mos = number(item.data.get("lossPct")), number(item.data.get("maxLatencyMs")), number(item.data.get("minMos"))
        if loss is not None and latency is not None and loss > limits.loss_pct and latency > limits.rtt_ms:
            refs.append(ref_evidence(item))
            low = f", MOS fell to {mos:.2f}" if mos is not None and mos < limits.mos else ""
            parts.append(f"Genesys measured {loss:.1f}% loss and latency up to {latency:.0f} ms{low}")
    server = any(r.startswith("evidence:") for r in refs)
    earlier, earlier_refs = _earlier_probe_congestion(findings, limits)
    if earlier:
        refs.extend(earlier_refs)
        parts.append(f"agentd's own probes during the call saw it too ({'; '.join(earlier[:3])})")
    if not parts:
        return None
    local = any(r.startswith("check:") for r in refs) or bool(earlier)
    facts = _add_line_refs(findings, refs)
    return verdict(
        "network.isp_congestion",
        Severity.WARNING,
        0.95 if local and server else (0.8 if server else 0.75),
        "Congestion on the agent's own connection: " + "; ".join(parts) + _over(facts)
        + (_unplaced(findings, limits) if local else "") + ".",
        # where the loss starts is not known here (a segment verdict says so when it is): no
        # Wi-Fi advice as such, only how to tell the Wi-Fi apart
        "Pause heavy traffic on the same line (video streaming, large uploads) and re-run `agentd check --profile full`; "
        + ("the PC is on Wi-Fi: one check on a cable tells whether the Wi-Fi is the cause; " if "wifi" in facts else "")
        + "if it persists, take the figures to the ISP.",
        refs,
        limits.pick("loss_pct", "rtt_ms", "jitter_ms", "mos"),
    )


def _high_rtt(media, limits: Thresholds) -> float | None:
    """The media path's RTT (median or p95, the higher) when it is above the limit."""
    rtt = max((v for v in (metric(media, "rtt_ms"), metric(media, "rtt_p95_ms")) if v is not None), default=None)
    return rtt if rtt is not None and rtt > limits.rtt_ms else None


def _interval(media) -> str:
    """" (95% interval 16.1-22.8%)" when the media path gives one."""
    bounds = media.details.get("loss_ci95_pct")
    if isinstance(bounds, (list, tuple)) and len(bounds) == 2:
        low, high = number(bounds[0]), number(bounds[1])
        if low is not None and high is not None:
            return f" (95% interval {low:.1f}-{high:.1f}%)"
    return ""


def udp_before_fallback(media) -> Mapping | None:
    """What UDP showed before media fell back to TCP/TLS (``details.udp``), when it carried
    packets to count: ``{loss_pct, legs_tried, ...}``; None otherwise."""
    udp = media.details.get("udp") if media is not None else None
    if isinstance(udp, Mapping) and number(udp.get("loss_pct")) is not None:
        return {**udp, "loss_pct": number(udp.get("loss_pct"))}
    return None


def link_of(findings: Findings) -> tuple[list[str], dict[str, str]]:
    """What carries this PC's traffic, from the ``host`` (and ``nat``) checks, or in
    incident mode from the host samples of the call's minutes: (references, facts) with
    ``wifi`` (the interface, with its signal when known) and ``vpn`` (the VPN interface
    the default route goes through) when they apply."""
    refs: list[str] = []
    facts: dict[str, str] = {}
    host = findings.check("host")
    if host is not None and host.details:
        interface = host.details.get("interface")
        interface = interface if isinstance(interface, str) and interface else None
        vpns = [str(v) for v in host.details.get("vpn_interfaces") or () if isinstance(v, str)]
        if interface and host.details.get("interface_is_wifi") is True:
            signal = number(host.details.get("wifi_signal_dbm"))
            facts["wifi"] = interface + (f", signal {signal:.0f} dBm" if signal is not None else "")
            refs.append(ref_check(host))
        if interface and interface in vpns:
            facts["vpn"] = interface
            refs.append(ref_check(host))
    window = call_window(findings)
    if "wifi" not in facts and window is not None:
        samples = timeline_host_samples(findings, window[0], window[1]) or []
        signals = [number(s.get("wifi_signal_dbm")) for s in samples]
        signals = [v for v in signals if v is not None]
        if signals:  # the sampler records a signal only on a wireless default route
            name = next((s.get("interface") for s in samples if s.get("interface")), "Wi-Fi")
            facts["wifi"] = f"{name}, signal down to {min(signals):.0f} dBm during the call"
            refs.extend([*window[2], *timeline_refs(findings)])
    return list(dict.fromkeys(refs)), facts


def _add_line_refs(findings: Findings, refs: list[str]) -> dict[str, str]:
    """Add to ``refs`` what else shows the same line (UDP answers that came and went, the
    host check naming Wi-Fi or a VPN); the link's facts for the summary."""
    refs.extend(_intermittent_udp(findings))
    link_refs, facts = link_of(findings)
    refs.extend(link_refs)
    return facts


def _over(facts: Mapping[str, str]) -> str:
    """"; the path runs over Wi-Fi (...) and the VPN wg0" for a summary, or nothing."""
    where = []
    if "wifi" in facts:
        where.append(f"Wi-Fi ({facts['wifi']})")
    if "vpn" in facts:
        where.append(f"the VPN {facts['vpn']}")
    return f"; the path runs over {' and '.join(where)}" if where else ""


def _unplaced(findings: Findings, limits: Thresholds) -> str:
    """"; where the loss starts could not be told: ..." when media.path's loss has no segment verdict."""
    why = unplaced_reason(findings, limits)
    return f" ({why})" if why else ""


def _loss_next_step(facts: Mapping[str, str]) -> str:
    steps = []
    if "wifi" in facts:
        # the segment is not known here (network.local_link says so when the Wi-Fi is at fault)
        steps.append(
            f"The PC is on Wi-Fi ({facts['wifi']}), but where the loss starts could not be measured: run `agentd check` "
            "once on a cable (or next to the access point); if the loss goes, it is the Wi-Fi; if it stays, take the "
            "figures to the ISP."
        )
    if "vpn" in facts:
        steps.append(
            f"Media goes through the VPN ({facts['vpn']}): ask IT to route the Genesys media ranges "
            f"({MEDIA_PORTS}) outside the tunnel (split tunnelling), or compare one `agentd check` without the VPN."
        )
    if not steps:
        steps.append(
            "The line itself loses packets while its delay is normal: check the cable and the home router, "
            "test whether the loss stays on another line, then take the figures to the ISP (a policer or a faulty "
            "line). On Wi-Fi or a VPN, try without them first."
        )
    return " ".join(steps)


def packet_loss(findings: Findings, limits: Thresholds) -> Verdict | None:
    """Loss or jitter above the limits without high RTT: a lossy link, not a congested one
    (loss together with high RTT is ``network.isp_congestion``)."""
    refs: list[str] = []
    parts: list[str] = []
    media = findings.check("media.path")
    unsure = False
    if ran(media) and not placed(findings, limits):
        transport = str(media.details.get("transport") or "udp").lower()
        loss, jitter = metric(media, "loss_pct"), metric(media, "jitter_ms")
        decision = media.details.get("loss_decision") if isinstance(media.details.get("loss_decision"), Mapping) else {}
        side = decision.get("side")
        # the sequential test's verdict on the loss line counts over the point figure
        lossy = loss is not None and loss > limits.loss_pct and side != "below"
        jittery = jitter is not None and jitter > limits.jitter_ms
        # a MOS below the line with a normal RTT comes from loss and jitter, even below their own lines
        mos = metric(media, "mos")
        poor = mos is not None and mos < limits.mos and not _high_rtt(media, limits) and bool(loss or jitter)
        # over TCP loss turns into delay (the fallback rule's); loss with high RTT is congestion;
        # jitter without loss is network.jitter's
        if transport not in TCP_TRANSPORTS and (lossy or (poor and not jittery)) and not (lossy and _high_rtt(media, limits)):
            refs.append(ref_check(media))
            unsure = (lossy and side == "undecided" and not jittery) or not lossy
            figures = []
            if loss is not None:
                figures.append(f"loses {loss:.1f}%{_interval(media)} of packets")
            if jitter is not None and (jittery or not lossy):
                figures.append(f"jitter {jitter:.0f} ms")
            rtt = metric(media, "rtt_ms")
            delay = f" while its RTT is a normal {rtt:.0f} ms" if rtt is not None else ""
            low = f" (MOS {mos:.2f})" if mos is not None and mos < limits.mos else ""
            parts.append(f"this PC's path to the media edge {' with '.join(figures)}{delay}{low}")
            race = media.details.get("relay_race") if isinstance(media.details.get("relay_race"), Mapping) else {}
            chance = number(race.get("tcp_chance_pct"))
            if chance is not None and chance >= RACE_NOTE_PCT:
                # libwebrtc keeps the first relay that connects: a lost UDP Allocate loses to TCP
                fallback = str(race.get("fallback") or "tcp").upper()
                parts.append(
                    f"a softphone relaying its media would end about {chance:.0f}% of calls on the {fallback} relay instead "
                    "(its UDP allocation loses the race when a request is lost), where the loss turns into delay"
                )
        udp = udp_before_fallback(media)
        if transport in TCP_TRANSPORTS and udp is not None and limits.loss_pct < udp["loss_pct"] < 100.0:
            # it fell back because UDP lost too much, not because UDP is shut
            refs.append(ref_check(media))
            parts.append(
                f"over UDP it lost {udp['loss_pct']:.1f}% of {udp.get('legs_tried', '?')} packets before media fell back "
                f"to {transport.upper()}, where the loss turns into delay"
            )
    if parts and not _high_rtt(media, limits):
        slow = slow_tcp_turn(findings, limits) + slow_tcp_stun(findings, limits)
        if slow:
            refs.extend(ref_check(c) for c in slow)
            parts.append(_slow_tcp_part(slow))
    for item in ok_evidence(findings, "genesys.call_quality"):
        loss, latency = number(item.data.get("lossPct")), number(item.data.get("maxLatencyMs"))
        if loss is not None and loss > limits.loss_pct and (latency is None or latency <= limits.rtt_ms):
            refs.append(ref_evidence(item))
            mos = number(item.data.get("minMos"))
            low = f", MOS fell to {mos:.2f}" if mos is not None and mos < limits.mos else ""
            at = f" with latency at most {latency:.0f} ms" if latency is not None else ""
            parts.append(f"Genesys measured {loss:.1f}% loss in the call{at}{low}")
    if not parts:
        return None
    local = any(r.startswith("check:") for r in refs)
    server = any(r.startswith("evidence:") for r in refs)
    facts = _add_line_refs(findings, refs)
    return verdict(
        "network.packet_loss",
        Severity.WARNING,
        0.95 if local and server else (0.6 if unsure and not server else (0.85 if local else 0.8)),
        "A lossy link (not congestion): " + "; ".join(parts) + _over(facts) + _unplaced(findings, limits) + ".",
        _loss_next_step(facts),
        refs,
        limits.pick("loss_pct", "jitter_ms", "rtt_ms", "mos"),
    )


def _jitter_next_step(facts: Mapping[str, str]) -> str:
    steps = []
    if "wifi" in facts:
        steps.append(
            f"The PC is on Wi-Fi ({facts['wifi']}), where packets wait their turn on the air: connect it by cable, "
            "or move closer to the access point, then re-run `agentd check`."
        )
    if "vpn" in facts:
        steps.append(f"Media goes through the VPN ({facts['vpn']}): ask IT to route the Genesys media ranges ({MEDIA_PORTS}) outside the tunnel.")
    steps.append(
        "Jitter without loss comes from queues on the line: pause what else uses it (uploads, cloud backup, video) "
        "and re-run `agentd check`; if it stays on a cable and an otherwise idle line, take the figures to the ISP."
    )
    return " ".join(steps)


def jitter(findings: Findings, limits: Thresholds) -> Verdict | None:
    """Jitter above the limit while loss stays below its own: the packets arrive, unevenly.
    Named as jitter, not as a lossy link (with loss too, ``network.packet_loss`` names both;
    with loss and high RTT, ``network.isp_congestion``)."""
    media = findings.check("media.path")
    if not ran(media):
        return None
    transport = str(media.details.get("transport") or "udp").lower()
    value, loss = metric(media, "jitter_ms"), metric(media, "loss_pct")
    decision = media.details.get("loss_decision") if isinstance(media.details.get("loss_decision"), Mapping) else {}
    lossy = loss is not None and loss > limits.loss_pct and decision.get("side") != "below"
    # over TCP every retransmission shows as jitter: the fallback rule names that
    if transport in TCP_TRANSPORTS or value is None or value <= limits.jitter_ms or lossy:
        return None
    refs = [ref_check(media)]
    rtt, mos = metric(media, "rtt_ms"), metric(media, "mos")
    figures = f"jitter {value:.0f} ms (the limit is {limits.jitter_ms:g} ms)"
    if loss is not None:
        figures += f" with {loss:.1f}% loss"
    if rtt is not None:
        figures += f" and RTT {rtt:.0f} ms"
    low = f"; MOS {mos:.2f}" if mos is not None and mos < limits.mos else ""
    facts = _add_line_refs(findings, refs)
    return verdict(
        "network.jitter",
        Severity.WARNING,
        0.85 if value > 1.5 * limits.jitter_ms else 0.7,
        "Jitter on the agent's path to the media edge: packets arrive, but unevenly: "
        f"{figures}{low}{_over(facts)}. The softphone's jitter buffer turns it into delay, or into "
        "clipped audio when a packet comes later than the buffer.",
        _jitter_next_step(facts),
        refs,
        limits.pick("jitter_ms", "loss_pct", "rtt_ms", "mos"),
    )


def _intermittent_udp(findings: Findings) -> list[str]:
    """Checks whose UDP answers came and went, which a lossy link explains: some STUN
    bindings or sample ports unanswered while others answered, a UDP allocation that timed
    out while UDP STUN got through."""
    refs = []
    stun = findings.check("stun")
    bindings = items(stun.details.get("bindings")) if stun is not None else []
    udp_lost = [b for b in bindings if b.get("transport", "udp") == "udp" and b.get("ok") is False and b.get("reason") == "timeout"]
    if stun is not None and stun.status is Status.WARN and udp_lost:
        refs.append(ref_check(stun))
    ports = findings.check("udp.ports")
    answered = metric(ports, "answered_pct")
    if ran(ports) and answered is not None and 0 < answered < 100:
        refs.append(ref_check(ports))
    turn_udp = findings.check("turn.udp")
    if turn_udp is not None and turn_udp.status in (Status.WARN, Status.FAIL) and reason(turn_udp) == "timeout" and udp_works_locally(findings):
        refs.append(ref_check(turn_udp))
    return refs


def firewall_udp_blocked(findings: Findings) -> Verdict | None:
    """Seed 000 scenario B: ICE checking -> failed in the call, or UDP fails locally while TCP/TLS works."""
    ice = ice_failures(findings)
    udp_refs = udp_blocked_locally(findings)
    tcp_refs = tcp_paths_open(findings)
    local = bool(udp_refs and tcp_refs)
    if not ice and not local:
        return None
    parts = []
    if ice:
        parts.append("the call's ICE negotiation went from checking to failed: audio never connected")
    also: list[str] = []
    if local:
        parts.append("from this PC UDP to the media edge gets no answer while TCP/TLS gets through")
        # the same firewall: some sample ports through (it filters by port), or TURN over
        # one of TCP/TLS blocked too
        ports = findings.check("udp.ports")
        answered = metric(ports, "answered_pct")
        if ran(ports) and answered is not None and 0 < answered < 100:
            also.append(ref_check(ports))
            parts.append(f"only {answered:.0f}% of the sampled media ports answered")
        shut = [c for c in (findings.check(i) for i in ("turn.tcp", "turn.tls")) if failed(c) and reason(c) in BLOCKED_REASONS]
        if shut:
            also.extend(ref_check(c) for c in shut)
            parts.append(f"{' and '.join(c.id for c in shut)} got no answer either")
    refs = [*(ref_evidence(i) for i in ice), *(udp_refs if local else []), *(tcp_refs if local else []), *also]
    return verdict(
        "network.firewall_udp_blocked",
        Severity.CRITICAL,
        0.95 if ice and local else (0.85 if local else 0.8),
        "Outbound UDP is blocked: " + "; ".join(parts) + ".",
        f"Allow outbound {MEDIA_PORTS} from this PC to the Genesys media ranges in the firewall, "
        "VPN or home router (no inbound ports are needed).",
        refs,
    )


def turn_tcp_fallback(findings: Findings) -> Verdict | None:
    """Seed 000 edge case 2: media relayed over TCP/TLS works but adds delay."""
    refs, parts = [], []
    for item in ok_evidence(findings, "genesys.webrtc_diagnostics"):
        pair = item.data.get("selected_pair")
        if isinstance(pair, Mapping) and str(pair.get("protocol", "")).lower() in TCP_TRANSPORTS:
            refs.append(ref_evidence(item))
            parts.append(f"the call's selected candidate pair ran over {str(pair['protocol']).upper()}")
    media = findings.check("media.path")
    udp_reaches_relay = False
    if passed(media) and str(media.details.get("transport", "")).lower() in TCP_TRANSPORTS:
        refs.append(ref_check(media))
        parts.append(f"agentd's media path test could only get through over {str(media.details['transport']).upper()}")
        # The UDP relay allocated, yet media over it did not connect in time: UDP is not
        # blocked but so lossy that the handshakes (ICE, DTLS, SCTP) missed the deadline.
        turn_udp = findings.check("turn.udp")
        udp_attempts = [a for a in items(media.details.get("attempts")) if a.get("transport") == "udp"]
        udp = udp_before_fallback(media)
        if udp is not None and 0.0 < udp["loss_pct"] < 100.0:
            udp_reaches_relay = True
            parts.append(f"UDP carried packets but lost {udp['loss_pct']:.1f}% of them, so UDP is not blocked but too lossy")
        elif passed(turn_udp) and udp_attempts and all(a.get("reason") == "timeout" for a in udp_attempts):
            udp_reaches_relay = True
            refs.append(ref_check(turn_udp))
            parts.append("a UDP relay allocation did succeed, so UDP is not blocked but too lossy for media to connect in time")
    if not refs:
        return None
    forced = [
        item
        for item in ok_evidence(findings, "genesys.station")
        if isinstance(item.data.get("station"), Mapping) and item.data["station"].get("webRtcForceTurn") is True
    ]
    next_step = f"Open {MEDIA_PORTS} outbound so media runs over UDP; TCP turns every lost packet into delay."
    if forced:
        refs.extend(ref_evidence(i) for i in forced)
        parts.append("the agent's WebRTC station has webRtcForceTurn on, which forces the relay")
        next_step = (
            "Turn off webRtcForceTurn on the agent's WebRTC station unless policy needs it, and open "
            f"{MEDIA_PORTS} outbound so the relay can use UDP."
        )
    confidence = 0.9 if any(r.startswith("evidence:") for r in refs) else 0.8
    if udp_reaches_relay and not forced:
        confidence = min(confidence, 0.6)
        next_step = (
            "Look for packet loss on this PC's line (Wi-Fi, ISP, a VPN): UDP reaches the relay but media over it "
            "did not connect; run `agentd check --profile full` for a longer media test."
        )
    return verdict(
        "network.turn_tcp_fallback",
        Severity.WARNING,
        confidence,
        "Media is relayed over TCP/TLS (calls work, with delay): " + "; ".join(parts) + ".",
        next_step,
        refs,
    )


def line_loses(findings: Findings, limits: Thresholds) -> list[str]:
    """References showing this PC's line loses packets: media.path's loss above the line
    over UDP (or UDP's before a fallback), or UDP answers that came and went; empty when none."""
    refs: list[str] = []
    media = findings.check("media.path")
    if ran(media):
        transport = str(media.details.get("transport") or "udp").lower()
        loss = metric(media, "loss_pct")
        decision = media.details.get("loss_decision") if isinstance(media.details.get("loss_decision"), Mapping) else {}
        udp = udp_before_fallback(media)
        if transport not in TCP_TRANSPORTS and loss is not None and loss > limits.loss_pct and decision.get("side") != "below":
            refs.append(ref_check(media))
        elif udp is not None and limits.loss_pct < udp["loss_pct"] < 100.0:
            refs.append(ref_check(media))
    refs.extend(_intermittent_udp(findings))
    return list(dict.fromkeys(refs))


def _tcp_connected(check) -> bool:
    """A turn.tcp/turn.tls allocation got its TCP connection answered (``connected``): the port is open."""
    return any(a.get("connected") is True for a in items(check.details.get("allocations")))


def slow_tcp_turn(findings: Findings, limits: Thresholds) -> list:
    """turn.tcp / turn.tls that failed for want of an answer in time where that is the line's
    loss, not a block: their TCP connection was answered, or the line is seen losing packets
    (a lost SYN costs 1 s, two cost 3 s)."""
    shut = [c for c in (findings.check(i) for i in ("turn.tcp", "turn.tls")) if failed(c) and reason(c) == "timeout"]
    if not shut:
        return []
    lossy = bool(line_loses(findings, limits))
    return [c for c in shut if lossy or _tcp_connected(c)]


def slow_tcp_stun(findings: Findings, limits: Thresholds) -> list:
    """The ``stun`` check when it warns only because TCP/TLS bindings timed out (others
    answered) on a line seen losing packets: the same loss, not a block."""
    stun = findings.check("stun")
    if stun is None or stun.status is not Status.WARN:
        return []
    bindings = items(stun.details.get("bindings"))
    lost = [b for b in bindings if b.get("ok") is False]
    tcp_timeouts = [b for b in lost if b.get("transport") in ("tcp", "tls") and b.get("reason") == "timeout"]
    if not lost or len(tcp_timeouts) != len(lost) or not line_loses(findings, limits):
        return []
    return [stun]


def _slow_tcp_part(slow) -> str:
    names = " and ".join(f"{c.id} (over TCP)" if c.id == "stun" else c.id for c in slow)
    return (
        f"{names} got no answer in time, which this loss explains (a lost SYN costs 1 s, two cost 3 s): "
        "slow because of the loss, not blocked"
    )


def _media_attempts_all_failed(media) -> list[Mapping]:
    """The media path's attempts when it failed and every one failed for a network reason
    (not the server refusing credentials); empty otherwise."""
    attempts = items(media.details.get("attempts")) if failed(media) else []
    if attempts and all(a.get("ok") is not True and a.get("reason") not in CREDENTIAL_REASONS for a in attempts):
        return attempts
    return []


def turn_fallback_blocked(findings: Findings, limits: Thresholds) -> Verdict | None:
    """TURN over TCP or TLS fails while UDP media works: calls work today, but the fallback
    the softphone needs when UDP is blocked or too lossy is gone (a port filtered, or TLS
    intercepted by a proxy). Not when it only ran out of time on a line that loses
    packets, or its TCP connection was answered (:func:`slow_tcp_turn`)."""
    if not udp_works_locally(findings):
        return None  # then it is a wider block: the firewall and media-blocked rules name it
    slow = {c.id for c in slow_tcp_turn(findings, limits)}
    shut = [
        c
        for c in (findings.check(i) for i in ("turn.tcp", "turn.tls"))
        if failed(c) and reason(c) not in CREDENTIAL_REASONS and c.id not in slow
    ]
    if not shut:
        return None
    described = []
    intercepted = False
    for check in shut:
        cert = check.details.get("certificate") if isinstance(check.details.get("certificate"), Mapping) else {}
        if reason(check) == "tls_untrusted":
            intercepted = True
            issuer = cert.get("issuer") or cert.get("subject")
            described.append(f"{check.id}: untrusted certificate" + (f" issued by {issuer}" if issuer else ""))
        else:
            described.append(f"{check.id}: {reason(check) or 'failed'}")
    step = (
        "A proxy intercepts TLS to the TURN server: add the TURN hosts to its TLS-inspection bypass list."
        if intercepted
        else "Allow outbound TCP 3478 and TCP 443 to the TURN servers, so calls can fall back when UDP fails "
        "(hotel or guest networks often block UDP)."
    )
    return verdict(
        "network.turn_fallback_blocked",
        Severity.WARNING,
        0.8,
        f"TURN over TCP/TLS does not get through ({'; '.join(described)}) while UDP works: calls work now, "
        "but have no fallback when UDP is blocked or too lossy.",
        step,
        [ref_check(c) for c in shut],
    )


def media_blocked(findings: Findings) -> Verdict | None:
    """No relay of any transport is reachable, or none carried media; with the STUN and
    port checks that went unanswered the same way."""
    turns = [c for c in (findings.check(i) for i in TURN_CHECKS) if ran(c)]
    media = findings.check("media.path")
    if passed(media):
        return None
    refs, parts = [], []
    relay_reachable = any(passed(c) for c in turns)
    if any(reason(c) == "dns" for c in turns) or reason(media) == "dns":
        return None  # the relay's name does not resolve: the DNS rule names that, once
    if turns and not relay_reachable and all(failed(c) and reason(c) not in CREDENTIAL_REASONS for c in turns):
        refs.extend(ref_check(c) for c in turns)
        parts.append("no TURN relay answered (" + ", ".join(f"{c.id}: {reason(c) or 'failed'}" for c in turns) + ")")
    attempts = _media_attempts_all_failed(media)
    if attempts:
        refs.append(ref_check(media))
        over = ", ".join(f"{str(a.get('transport')).upper()} ({a.get('reason') or 'failed'})" for a in attempts)
        if relay_reachable:
            parts.append(f"a relay allocates ({', '.join(c.id for c in turns if passed(c))}), but no media got through it over {over}")
        else:
            parts.append(f"the media path test failed over {over}")
    if not refs:
        return None
    if not relay_reachable:
        # the same blackhole seen by the STUN and port checks
        stun = findings.check("stun")
        if failed(stun) and not any(b.get("ok") is True for b in items(stun.details.get("bindings"))):
            refs.append(ref_check(stun))
        ports = findings.check("udp.ports")
        if failed(ports) and metric(ports, "answered_pct") in (0.0, None):
            refs.append(ref_check(ports))
    step = (
        f"Allow outbound {MEDIA_PORTS} and TCP 443 to the Genesys media edge and the TURN servers "
        "(firewall, VPN, proxy); without one of them no call gets audio."
    )
    if any(a.get("reason") == "tls_untrusted" for a in attempts):
        step = "A proxy intercepts TLS to the TURN server: add the TURN hosts to its TLS-inspection bypass list. " + step
    return verdict(
        "network.media_blocked",
        Severity.CRITICAL,
        0.9 if not relay_reachable else 0.7,
        "Calls cannot carry audio from this PC: " + "; ".join(parts) + ".",
        step,
        refs,
    )


def symmetric_nat(findings: Findings) -> Verdict | None:
    nat = findings.check("nat")
    if nat is None or nat.details.get("mapping") != "endpoint-dependent":
        return None
    turns_ok = any(passed(findings.check(i)) for i in TURN_CHECKS)
    return verdict(
        "network.symmetric_nat",
        Severity.WARNING,
        0.9,
        "This PC is behind a symmetric NAT (endpoint-dependent mapping): direct media is impossible, "
        + ("every call depends on the TURN relay, which is reachable." if turns_ok else "every call depends on the TURN relay."),
        f"Keep the TURN relay reachable ({MEDIA_PORTS} outbound); if the router or firewall offers it, "
        "switch its NAT to endpoint-independent mapping.",
        [ref_check(nat)],
    )


def turn_auth_failed(findings: Findings) -> Verdict | None:
    # credentials Genesys handed out (``source`` "genesys") are not agentd's configuration to correct
    rejected = [
        c for c in (findings.check(i) for i in TURN_CHECKS)
        if failed(c) and reason(c) == "auth" and c.details.get("source") in (None, "config")
    ]
    media = findings.check("media.path")
    attempts = items(media.details.get("attempts")) if media is not None and media.status in (Status.FAIL, Status.WARN) else []
    refused = [a for a in attempts if a.get("ok") is not True and a.get("reason") == "auth" and a.get("source") in (None, "config")]
    if not rejected and not refused:
        return None
    servers = sorted({str(c.details.get("server")) for c in rejected if c.details.get("server")} | {str(a["server"]) for a in refused if a.get("server")})
    where = f" ({', '.join(servers)})" if servers else ""
    refs = [ref_check(c) for c in rejected]
    summary = f"The TURN server answered 401 Unauthorized{where}: the configured credentials are wrong."
    if refused:
        refs.append(ref_check(media))  # the media test was refused by the same server
        if failed(media):
            summary = summary[:-1] + ", so no media could be relayed."
    return verdict(
        "config.turn_auth_failed",
        Severity.CRITICAL,
        0.95,
        summary,
        "Correct the username and credential of the TURN entry in [[ice.servers]] of agentd.toml "
        "(they must match the TURN server's; the Genesys ones come from the org's WebRTC settings).",
        refs,
    )
