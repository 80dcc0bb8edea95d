"""Where the line breaks: the media path's loss placed on the segment where it starts.

Codes: ``network.local_link`` (the agent's Wi-Fi or LAN: loss already at the default
gateway, persisting to the edge), ``network.isp`` (the gateway clean, loss from the ISP's
first hop on), ``network.beyond_isp`` (clean through the ISP, loss only toward the media
edge). Inputs: ``media.path`` (the end-to-end loss: the trouble), ``path`` (the gateway
and per-hop figures), ``host`` (Wi-Fi, VPN), ``stun`` (the public address).

How a point is read (see plugins/path/README.md for the figures): each point of the path
(the gateway's echoes, each hop's answers, the edge's) is tested for whether it carries the
end-to-end loss. With ``p1`` the loss media.path measured (at least the threshold) and
``p0`` a quarter of the threshold (a clean link), the log likelihood ratio of ``lost`` of
``sent`` under p1 against p0 decides: ``lossy`` above ln 19, ``clean`` below -ln 19 (19 to 1
either way, a 95 % posterior from even odds), else ``unsure``; a point whose Wilson 95 %
lower bound is above the threshold is ``lossy`` whatever media.path's figure (one inflated by
a starved event loop on this PC must not make a lossy link read clean). A point that answered
nothing is ``silent``; one that lost significantly more than the whole path (its Wilson
95 % lower bound above media.path's upper bound) is ``excess``: a router that rate-limits
or deprioritises its ICMP answers, which the media never sees, so it is never blamed.

The loss is placed at the first ``lossy`` point that no later point contradicts (none reads
``clean`` against the loss that point itself shows: only loss that persists to the edge
counts). A point read clean
shows every link before it clean, so ``network.isp`` needs some point before the loss read
clean (the gateway, or an earlier hop), and ``network.beyond_isp`` an ISP hop (or a later
one) read clean before the loss; otherwise the segment
cannot be told and ``network.packet_loss`` / ``network.isp_congestion`` stay, saying why
(:func:`unplaced_reason`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from agentd import hookimpl
from agentd.correlation import Findings
from agentd.model import Severity, Status, Verdict

from .base import Thresholds, items, metric, number, ran, ref_check, thresholds_of, verdict

LR_BOUND = math.log(19.0)
CLEAN_SHARE = 0.25
"""A link losing at most this share of ``[thresholds] loss_pct`` counts as clean."""
Z_95 = 1.959964
LOCAL_ROLES = ("gateway", "home")
ISP_ROLES = ("isp",)
BEYOND_ROLES = ("beyond", "edge", "end")


@dataclass(frozen=True)
class Point:
    """One place on the path: what was sent there and lost, and how it reads."""

    name: str
    role: str
    """``gateway``, ``home``, ``isp``, ``beyond``, ``edge`` (the TURN server's address), ``end`` (media.path)."""
    sent: int
    lost: int
    state: str
    ttl: int | None = None
    address: str | None = None

    @property
    def loss_pct(self) -> float:
        return 100.0 * self.lost / self.sent if self.sent else 0.0

    def text(self) -> str:
        return f"{self.name}: {self.lost} of {self.sent} lost ({self.loss_pct:.1f}%)"


@dataclass(frozen=True)
class Placement:
    segment: str | None
    """``local``, ``isp``, ``beyond``; None when the segment cannot be told."""
    why: str
    """For a placement, the summary's clause; otherwise why the segment cannot be told."""
    points: tuple[Point, ...] = ()
    first: Point | None = None
    clean: Point | None = None
    """The last point seen clean before the loss starts."""


def wilson(lost: int, sent: int) -> tuple[float, float]:
    if sent <= 0:
        return 0.0, 1.0
    share, z2 = lost / sent, Z_95 * Z_95
    centre = (share + z2 / (2 * sent)) / (1 + z2 / sent)
    half = Z_95 * math.sqrt(share * (1 - share) / sent + z2 / (4 * sent * sent)) / (1 + z2 / sent)
    return (0.0 if lost == 0 else max(0.0, centre - half)), (1.0 if lost == sent else min(1.0, centre + half))


def read_point(sent: int, lost: int, p1: float, p0: float, end_high: float, floor: float = 1.0) -> str:
    """``lossy``, ``clean``, ``unsure``, ``silent`` or ``excess`` (see the module docstring).

    ``floor``: a point whose Wilson 95 % lower bound is above it (the loss threshold) is
    ``lossy`` whatever media.path measured: a media figure inflated by this PC (a starved
    event loop) must not make a link that really loses read clean."""
    if sent <= 0 or lost >= sent:
        return "silent"
    low = wilson(lost, sent)[0]
    if low > end_high:
        return "excess"
    llr = lost * math.log(p1 / p0) + (sent - lost) * math.log((1 - p1) / (1 - p0))
    if llr > LR_BOUND or low > floor:
        return "lossy"
    if llr < -LR_BOUND:
        return "clean"
    return "unsure"


def persists(point: Point, later: list[Point], p1: float, p0: float, end_high: float) -> bool:
    """No later point reads clean against the loss ``point`` itself shows (at most
    media.path's): a later clean point means the loss does not carry on to the edge. Against
    the point's own figure, not media.path's alone: a media figure inflated on this PC
    would make later points that carry the same loss read clean."""
    if point.role == "end":
        return True
    own = min(p1, max(point.lost / point.sent if point.sent else p1, 2 * p0))
    return not any(p.role != "end" and read_point(p.sent, p.lost, own, p0, end_high) == "clean" for p in later)


def _count(value: Any) -> int | None:
    n = number(value)
    return int(n) if n is not None and n >= 0 else None


def trouble(findings: Findings, limits: Thresholds) -> tuple[float, int, int] | None:
    """media.path's end-to-end loss when it is above the line over UDP: (share, legs, lost)."""
    media = findings.check("media.path")
    if not ran(media):
        return None
    if str(media.details.get("transport") or "udp").lower() != "udp":
        return None
    loss = metric(media, "loss_pct")
    decision = media.details.get("loss_decision")
    side = decision.get("side") if isinstance(decision, Mapping) else None
    if loss is None or loss <= limits.loss_pct or side == "below":
        return None
    legs, lost = _count(media.details.get("legs_tried")), _count(media.details.get("legs_lost"))
    if not legs or lost is None or lost > legs:
        legs, lost = 1000, int(round(loss * 10))  # a figure without its counts: weigh it as a long run
    return loss / 100.0, legs, lost


def points_of(path_check, p1: float, p0: float, end_high: float, floor: float = 1.0) -> list[Point]:
    found: list[Point] = []
    details = path_check.details
    gateway = details.get("gateway")
    gateway_address = None
    if isinstance(gateway, Mapping):
        sent, lost = _count(gateway.get("sent")), _count(gateway.get("lost"))
        gateway_address = gateway.get("address") if isinstance(gateway.get("address"), str) else None
        if sent is not None and lost is not None:
            name = f"the gateway {gateway_address or '?'}"
            found.append(Point(name, "gateway", sent, lost, read_point(sent, lost, p1, p0, end_high, floor), None, gateway_address))
    for hop in items(details.get("hops")):
        sent, lost, ttl = _count(hop.get("sent")), _count(hop.get("lost")), _count(hop.get("ttl"))
        role = hop.get("role") if isinstance(hop.get("role"), str) else "unknown"
        address = hop.get("address") if isinstance(hop.get("address"), str) else None
        if sent is None or lost is None or role == "unknown":
            continue
        if gateway is not None and hop.get("gateway") is True:
            continue  # the gateway's echoes speak for it (its TTL-exceeded answers are often rate-limited)
        if not found and ttl == 1 and role == "home":
            role = "gateway"  # no echoes: hop 1 is the gateway
        name = {"edge": f"the media edge {address}"}.get(role, f"hop {ttl} ({address or 'silent'})")
        found.append(Point(name, role, sent, lost, read_point(sent, lost, p1, p0, end_high, floor), ttl, address))
    return found


def segment_of(role: str) -> str:
    if role in LOCAL_ROLES:
        return "local"
    if role in ISP_ROLES:
        return "isp"
    return "beyond"


def place(findings: Findings, limits: Thresholds) -> Placement | None:
    """Where media.path's loss starts; None when there is no loss to place."""
    found = trouble(findings, limits)
    if found is None:
        return None
    share, legs, lost = found
    path_check = findings.check("path")
    if path_check is None:
        return Placement(None, "the path check did not run, so the loss could not be placed on a segment")
    if path_check.status not in (Status.PASS, Status.WARN):
        return Placement(None, f"the path check could not probe the segments ({path_check.summary})")
    p0 = max(1e-4, CLEAN_SHARE * limits.loss_pct / 100.0)
    p1 = max(share, limits.loss_pct / 100.0, 2 * p0)
    end_high = wilson(lost, legs)[1]
    points = points_of(path_check, p1, p0, end_high, limits.loss_pct / 100.0)
    end = Point("the media path (media.path)", "end", legs, lost, "lossy")
    chain = [*points, end]
    # the end itself is lossy with nothing after it, so there always is a first
    first = next((p for i, p in enumerate(chain) if p.state == "lossy" and persists(p, chain[i + 1:], p1, p0, end_high)), end)
    segment = segment_of(first.role)
    before = chain[: chain.index(first)]
    # a point read clean shows every link before it clean (loss there would reach it)
    clean = next((p for p in reversed(before) if p.state == "clean"), None)
    if segment == "local":
        return Placement("local", "", tuple(chain), first, None)
    if clean is None:
        local = [p for p in points if p.role in LOCAL_ROLES]
        why = (
            f"the gateway could not be read ({'; '.join(f'{p.text()}, {p.state}' for p in local)})" if local
            else "the gateway was not probed (" + str(path_check.details.get("gateway_note") or "no gateway on the route") + ")"
        )
        return Placement(None, f"where the loss starts could not be told: {why}, and no hop before the loss read clean", tuple(chain))
    if segment == "isp":
        return Placement("isp", "", tuple(chain), first, clean)
    if first.role == "end" and clean.role == "edge":
        # the media edge's own address answered cleanly: the network path to it is not what loses
        return Placement(
            None,
            f"where the loss starts could not be told: the path up to the media edge's own address was clean ({clean.text()}), "
            "so the packets were lost in the relay itself or on this PC (a busy CPU, full socket buffers)",
            tuple(chain),
        )
    if clean.role in LOCAL_ROLES:
        isp = [p for p in points if p.role in ISP_ROLES]
        why = (
            "the ISP's hops could not be read (" + "; ".join(f"{p.text()}, {p.state}" for p in isp) + ")" if isp
            else "no hop of the ISP answered (or no public hop was seen) between the gateway and the edge"
        )
        return Placement(None, f"where the loss starts could not be told: {why}", tuple(chain))
    return Placement("beyond", "", tuple(chain), first, clean)


def placed(findings: Findings, limits: Thresholds | None = None) -> bool:
    """A segment verdict names where media.path's loss starts (the loss rules then leave it)."""
    found = place(findings, limits or thresholds_of(findings))
    return found is not None and found.segment is not None


def unplaced_reason(findings: Findings, limits: Thresholds | None = None) -> str | None:
    """Why media.path's loss has no segment verdict, for the loss rules' summaries."""
    found = place(findings, limits or thresholds_of(findings))
    return found.why if found is not None and found.segment is None else None


# -- the verdicts ---------------------------------------------------------------------------------


@hookimpl
def agentd_correlate(findings: Findings) -> list[Verdict]:
    limits = thresholds_of(findings)
    found = place(findings, limits)
    if found is None or found.segment is None:
        return []
    return [segment_verdict(findings, limits, found)]


def _public(findings: Findings) -> str | None:
    path_check = findings.check("path")
    value = path_check.details.get("public_address") if path_check is not None else None
    if isinstance(value, str) and value:
        return value
    stun = findings.check("stun")
    mapped = stun.details.get("mapped") if stun is not None else None
    if isinstance(mapped, list) and mapped and isinstance(mapped[0], str):
        return mapped[0].rpartition(":")[0].strip("[]") or None
    return None


def _timed_out_on_the_line(findings: Findings) -> list[str]:
    """``stun`` warned because some bindings (over TCP too: a lost SYN costs 1 s, two 3 s)
    got no answer in time while others did: the same lossy line explains it."""
    stun = findings.check("stun")
    if stun is None or stun.status is not Status.WARN:
        return []
    bindings = items(stun.details.get("bindings"))
    failed = [b for b in bindings if b.get("ok") is not True]
    if failed and any(b.get("ok") is True for b in bindings) and all(b.get("reason") == "timeout" for b in failed):
        return [ref_check(stun)]
    return []


def segment_verdict(findings: Findings, limits: Thresholds, found: Placement) -> Verdict:
    from .media import MEDIA_PORTS, _intermittent_udp, link_of, slow_tcp_turn  # the loss rules' reading of the line

    media = findings.check("media.path")
    path_check = findings.check("path")
    # and the UDP checks whose answers came and went on the same lossy line
    refs = [ref_check(media), ref_check(path_check), *_intermittent_udp(findings), *_timed_out_on_the_line(findings)]
    # turn.tcp/turn.tls that ran out of time on this lossy line: the same loss, not a blocked fallback
    refs.extend(ref_check(c) for c in slow_tcp_turn(findings, limits))
    first = found.first or Point("the media path (media.path)", "end", 0, 0, "lossy")
    loss = metric(media, "loss_pct")
    rtt = max((v for v in (metric(media, "rtt_ms"), metric(media, "rtt_p95_ms")) if v is not None), default=None)
    end = f"media.path loses {loss:.1f}% end to end" + (f" with RTT up to {rtt:.0f} ms" if rtt is not None and rtt > limits.rtt_ms else "")
    details = path_check.details
    vpn = details.get("vpn") if isinstance(details.get("vpn"), str) else None
    thresholds = limits.pick("loss_pct", "rtt_ms")
    if found.segment == "local":
        link_refs, facts = link_of(findings)
        refs.extend(link_refs)
        where = f" over Wi-Fi ({facts['wifi']})" if "wifi" in facts else ""
        summary = (
            f"The loss starts on the agent's own link{where}: {first.text()} and it persists to the edge ({end})."
        )
        if vpn:
            summary += f" The route goes through the VPN {vpn}: its first hop is the tunnel's far end, so the tunnel or the line under it loses."
        if "wifi" in facts:
            step = (
                f"The PC is on Wi-Fi ({facts['wifi']}) and the loss is already there: connect it by cable, or move it closer "
                "to the access point and away from other 2.4 GHz traffic, then re-run `agentd check` to confirm the loss is gone."
            )
        elif vpn:
            step = (
                f"Compare one `agentd check` without the VPN; if the loss goes, ask IT to route the Genesys media ranges "
                f"({MEDIA_PORTS}) outside the tunnel (split tunnelling)."
            )
        else:
            step = (
                "The loss is between this PC and its router: try another cable and another port on the router or switch, "
                "check the network adapter's driver and duplex; the ISP cannot fix this. Re-run `agentd check` to confirm."
            )
        return verdict("network.local_link", Severity.WARNING, 0.9, summary, step, refs, thresholds)
    public = _public(findings)
    if public and not details.get("public_address"):
        refs.append("check:stun")  # the address came from the STUN binding
    clean = found.clean
    clean_text = f"{clean.text()}, clean" if clean is not None else "clean"
    if found.segment == "isp":
        first_public = details.get("first_public_hop") if isinstance(details.get("first_public_hop"), Mapping) else {}
        isp_start = first_public.get("address") or first.address
        summary = (
            f"The loss starts at the agent's ISP: {clean_text}; from {first.text()} on it persists to the edge ({end}). "
            f"The ISP begins at {isp_start}" + (f"; this PC's public address is {public}" if public else "") + "."
        )
        step = (
            "The home network is clean: a cable or a better Wi-Fi spot will not help. The agent (or IT) reports it to the ISP "
            f"with these figures: the public address{f' {public}' if public else ''}, the first hop that loses ({first.address or '?'}), "
            "the loss from there on and the time of this check; until it is fixed, another line (a mobile hotspot) is the stop-gap."
        )
        return verdict("network.isp", Severity.WARNING, 0.85, summary, step, refs, thresholds)
    summary = (
        f"The loss starts beyond the agent's ISP: clean through the ISP ({clean_text}), lost toward the media edge "
        f"from {first.text()} ({end}): transit or the platform, not the agent's line."
    )
    step = (
        "Neither the agent nor the ISP can fix this: the helpdesk checks whether other agents reaching the same edge see the "
        "same (the hub groups them), then opens a case with Genesys Cloud support with this report (the edge address, the "
        "hops, the times). The agent's own line is fine."
    )
    return verdict("network.beyond_isp", Severity.WARNING, 0.8, summary, step, refs, thresholds)
