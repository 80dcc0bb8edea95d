"""Rules about signaling: DNS, HTTPS, and the notifications WebSocket (seeds 003/004).

Codes: ``network.dns_failure``, ``network.https_unreachable``,
``signaling.websocket_unreachable``, ``signaling.websocket_keepalive_timeout``.
Inputs: the ``dns``, ``https`` and ``websocket`` checks, ``signaling.websocket_drop``
evidence, and in incident mode the daemon's ``ws.drop`` events during the call.
"""

from __future__ import annotations

from typing import Any, Mapping

from agentd import hookimpl
from agentd.correlation import Findings
from agentd.model import Severity, Status, Verdict

from .base import (
    Thresholds,
    call_window,
    failed,
    items,
    metric,
    number,
    ok_evidence,
    ref_check,
    ref_evidence,
    thresholds_of,
    timeline_events,
    timeline_refs,
    verdict,
)

ABNORMAL_CLOSE = 1006
# ``details.reason`` of a websocket check that connected, then lost the connection's life signs.
KEEPALIVE_REASONS = {"dropped": "the connection dropped", "no_heartbeat": "heartbeats stopped", "no_pong": "pings went unanswered"}
HANDSHAKE_ADVICE = {
    401: "The notifications handshake was refused with 401: the OAuth token is not valid for this org "
    "(check [genesys] client_id/client_secret and the region).",
    403: "The handshake was refused with 403: a proxy or the org forbids this WebSocket; allow "
    "wss://streaming.<region> through the proxy and check the OAuth client's role.",
    404: "The handshake answered 404: the notification channel expired or the URL is wrong; a new "
    "channel is needed (channels live 24 h) and the proxy must not rewrite the path.",
}
REASON_ADVICE = {
    "dns": "The streaming host does not resolve: fix DNS first (see the DNS finding).",
    "tls_untrusted": "A TLS-inspecting proxy presents its own certificate: add the Genesys hosts to its bypass list.",
    "tls": "The TLS handshake failed: check the proxy or firewall between this PC and the Genesys hosts.",
}
DEFAULT_ADVICE = "Allow outbound TCP 443 (wss) to the streaming host through the firewall and proxy."


@hookimpl
def agentd_correlate(findings: Findings) -> list[Verdict]:
    limits = thresholds_of(findings)
    found = [
        dns_failure(findings),
        https_unreachable(findings),
        websocket_unreachable(findings),
        websocket_keepalive_timeout(findings, limits),
    ]
    return [v for v in found if v is not None]


def unfinished(check) -> bool:
    """The check ended ``error``: it did not finish (its deadline, or a fault of its own)."""
    return check is not None and check.status is Status.ERROR


def dns_failure(findings: Findings) -> Verdict | None:
    refs, hosts = [], []
    dns = findings.check("dns")
    if failed(dns):
        bad = [h for h in items(dns.details.get("hosts")) if h.get("ok") is False]
        if bad:
            refs.append(ref_check(dns))
            hosts += [str(h.get("host")) for h in bad]
    if unfinished(dns) or (failed(dns) and not hosts):
        return _dns_unfinished(findings, dns)
    if dns is not None and dns.status is Status.WARN and not refs:
        return verdict(
            "network.dns_failure",
            Severity.INFO,
            0.6,
            f"DNS answers, but slowly ({dns.summary}): every login and reconnect waits for it.",
            "Check this PC's DNS servers (a distant or overloaded resolver, often one a VPN sets); "
            "the Genesys hosts should resolve within about 100 ms.",
            [ref_check(dns)],
        )
    https = findings.check("https")
    if failed(https):
        bad = [e for e in items(https.details.get("endpoints")) if e.get("ok") is False and e.get("reason") == "dns"]
        if bad:
            refs.append(ref_check(https))
            hosts += [str(e.get("host")) for e in bad]
    ws = findings.check("websocket")
    if failed(ws) and ws.details.get("reason") == "dns":
        refs.append(ref_check(ws))
        target = ws.details.get("target")
        if isinstance(target, str) and "://" in target:
            hosts.append(target.split("://", 1)[1].split("/", 1)[0].split(":", 1)[0])
    for check in media_checks_unresolved(findings):
        refs.append(ref_check(check))
        hosts += ice_hosts(check) or ["the STUN/TURN server's host"]
    if not hosts:
        return None
    hosts = list(dict.fromkeys(hosts))
    # HTTPS or the WebSocket that did not finish waited on the same lookups
    refs += [ref_check(c) for c in (https, ws) if unfinished(c)]
    return verdict(
        "network.dns_failure",
        Severity.CRITICAL,
        0.95 if refs[0] == "check:dns" else 0.85,
        f"This PC cannot resolve {', '.join(hosts)}: "
        + ("signaling cannot start, so no call can be placed or taken."
           if any(r in refs for r in ("check:dns", "check:https", "check:websocket"))
           else "the softphone cannot reach its STUN/TURN servers, so calls get no audio."),
        f"Check the DNS servers of this PC's network or VPN (try `nslookup {hosts[0]}`) and any DNS filter "
        "that blocks the Genesys Cloud domains.",
        refs,
    )


ICE_CHECKS = ("stun", "turn.udp", "turn.tcp", "turn.tls", "udp.ports", "media.path")


def media_checks_unresolved(findings: Findings) -> list:
    """ICE-server checks that failed because the server's name did not resolve (a DNS
    failure too, named here once rather than as a blocked network)."""
    return [c for c in (findings.check(i) for i in ICE_CHECKS) if failed(c) and c.details.get("reason") == "dns"]


def ice_hosts(check) -> list[str]:
    """Host names in a check's ICE urls (``turn:host:port?transport=udp``)."""
    urls = [check.details.get("server"), check.details.get("target")]
    urls += [row.get("server") for row in items(check.details.get("bindings")) + items(check.details.get("attempts"))]
    hosts = []
    for url in urls:
        if isinstance(url, str) and url:
            rest = url.split(":", 1)[1] if url.split(":", 1)[0] in ("stun", "stuns", "turn", "turns") else url
            hosts.append(rest.split("?", 1)[0].rsplit(":", 1)[0].strip("[]/ ") if ":" in rest else rest.split("?", 1)[0])
    return [h for h in dict.fromkeys(hosts) if h]


def _dns_unfinished(findings: Findings, dns) -> Verdict:
    """The DNS check did not finish, or failed without naming hosts: lookups did not
    complete. HTTPS and the WebSocket that did not finish either waited on the same lookups."""
    refs = [ref_check(dns)]
    also = [c for c in (findings.check("https"), findings.check("websocket")) if unfinished(c)]
    refs += [ref_check(c) for c in also]
    with_others = f"; {' and '.join(c.id for c in also)} did not finish either" if also else ""
    return verdict(
        "network.dns_failure",
        Severity.CRITICAL,
        0.6,
        f"DNS lookups of the Genesys Cloud hosts did not complete ({dns.summary}){with_others}: "
        "signaling cannot start without them.",
        "Check that this PC's DNS servers answer (try `nslookup api.<region>`): a VPN or network that changed "
        "its DNS servers, or a DNS filter, is the usual cause.",
        refs,
    )


def https_unreachable(findings: Findings) -> Verdict | None:
    https = findings.check("https")
    dns = findings.check("dns")
    if unfinished(https) and not (unfinished(dns) or failed(dns)):
        return verdict(
            "network.https_unreachable",
            Severity.CRITICAL,
            0.6,
            f"HTTPS to Genesys Cloud did not complete ({https.summary}): login and signaling cannot start.",
            "Allow outbound TCP 443 to the Genesys Cloud hosts of the region through the firewall and proxy; "
            "a proxy that holds connections open without answering looks like this.",
            [ref_check(https)],
        )
    if not failed(https):
        return None
    # DNS failures are the DNS rule's; the rest is the path or a proxy.
    bad = [e for e in items(https.details.get("endpoints")) if e.get("ok") is False and e.get("reason") not in (None, "dns")]
    if not bad:
        return None
    described = []
    for endpoint in bad:
        why = endpoint.get("reason")
        cert = endpoint.get("certificate") if isinstance(endpoint.get("certificate"), Mapping) else {}
        if why == "tls_untrusted" and cert:
            why = f"untrusted certificate issued by {cert.get('issuer') or cert.get('subject')}"
        elif why == "timeout":
            why = "no answer"
        described.append(f"{endpoint.get('host')} ({why})")
    reasons = {e.get("reason") for e in bad}
    if reasons & {"tls_untrusted", "tls"}:
        step = (
            "A proxy between this PC and Genesys Cloud intercepts TLS: add the Genesys hosts "
            "(*.mypurecloud.* / *.pure.cloud for the region) to the proxy's TLS-inspection bypass list."
        )
    else:
        step = "Allow outbound TCP 443 to the Genesys Cloud hosts of the region through the firewall and proxy."
    return verdict(
        "network.https_unreachable",
        Severity.CRITICAL,
        0.9,
        f"HTTPS to Genesys Cloud fails: {', '.join(described)}. Login and signaling cannot start.",
        step,
        [ref_check(https)],
    )


def websocket_unreachable(findings: Findings) -> Verdict | None:
    ws = findings.check("websocket")
    dns = findings.check("dns")
    if unfinished(ws) and not (unfinished(dns) or failed(dns)):
        return verdict(
            "signaling.websocket_unreachable",
            Severity.CRITICAL,
            0.6,
            f"The notifications WebSocket test did not complete ({ws.summary}): the softphone may get no call events.",
            DEFAULT_ADVICE,
            [ref_check(ws)],
        )
    if not failed(ws):
        return None
    status = number(ws.details.get("handshake_status"))
    why = ws.details.get("reason")
    if status == 101 and why in ("timeout", "protocol"):
        status = None  # the upgrade worked; what follows it did not (a streaming channel's XMPP stream)
    if why in KEEPALIVE_REASONS or status == 101:
        return None  # it opened and later went quiet or dropped: the keepalive rule's
    if why == "auth" and any(isinstance(row.get("genesys_auth"), dict) for row in [ws.details, *items(ws.details.get("targets"))]):
        return None  # the agent's login was refused or ran out, not the network: platform.auth_failed says so
    if status is not None and int(status) in (401, 403, 404):
        code = int(status)
        summary = f"The notifications WebSocket handshake was refused with HTTP {code}."
        step = HANDSHAKE_ADVICE[code]
    elif isinstance(why, str) and why not in ("not_configured", "dns") and ws.details.get("close_code") is None:
        # "dns" is the DNS rule's: the same cause, named once
        summary = f"The notifications WebSocket cannot be opened ({why}): the softphone gets no call events."
        step = REASON_ADVICE.get(why, DEFAULT_ADVICE)
    else:
        return None  # it opened and later dropped: the keepalive rule's
    target = ws.details.get("target")
    if target:
        summary = summary[:-1] + f" ({target})."
    return verdict("signaling.websocket_unreachable", Severity.CRITICAL, 0.9, summary, step, [ref_check(ws)])


def _is_keepalive_drop(data: Mapping[str, Any], limits: Thresholds) -> bool:
    if number(data.get("close_code")) == ABNORMAL_CLOSE:
        return True
    reason = str(data.get("reason") or "").lower()
    return "heartbeat" in reason or "keepalive" in reason or "ping" in reason


def websocket_keepalive_timeout(findings: Findings, limits: Thresholds) -> Verdict | None:
    refs, parts = [], []
    ws = findings.check("websocket")
    if ws is not None:
        gap = metric(ws, "max_heartbeat_gap_s")
        if number(ws.details.get("close_code")) == ABNORMAL_CLOSE:
            refs.append(ref_check(ws))
            parts.append("the test connection dropped with close code 1006 (no close frame)")
        if gap is not None and gap > limits.heartbeat_gap_s:
            refs.append(ref_check(ws))
            parts.append(f"heartbeats stopped for {gap:.0f} s")
        why = ws.details.get("reason")
        if not parts and why in KEEPALIVE_REASONS:
            refs.append(ref_check(ws))
            parts.append(f"the test connection opened, then {KEEPALIVE_REASONS[why]}")
    drops = [i for i in ok_evidence(findings, "signaling.websocket_drop") if _is_keepalive_drop(i.data, limits)]
    if drops:
        refs.extend(ref_evidence(i) for i in drops)
        parts.append(f"{len(drops)} recorded drop(s) with close code 1006 or missed heartbeats")
    window = call_window(findings)
    if window is not None:
        events = timeline_events(findings, window[0], window[1], ["ws.drop"]) or []
        during = [e for e in events if isinstance(e.get("data"), Mapping) and _is_keepalive_drop(e["data"], limits)]
        if during:
            refs.extend([*window[2], *timeline_refs(findings)])
            parts.append(f"this PC's notifications connection dropped {len(during)} time(s) during the call (first at {during[0].get('at')})")
    if not parts:
        return None
    return verdict(
        "signaling.websocket_keepalive_timeout",
        Severity.WARNING,
        0.85 if len(parts) > 1 else 0.75,
        "The notifications WebSocket dies silently: " + "; ".join(parts) + ".",
        "Something on the path (proxy, firewall, VPN) closes idle long-lived connections: raise its idle "
        "timeout above 60 s for wss://streaming.<region>, or exempt that host.",
        refs,
        limits.pick("heartbeat_gap_s"),
    )
