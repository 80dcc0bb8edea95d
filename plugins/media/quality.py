"""Pure figures of call quality: the Genesys E-model, jitter, loss intervals and the loss decision.

No I/O here; every function is small enough to check by hand (tests/probes/test_media_quality.py).

The E-model is the simplified one the Genesys Cloud WebRTC SDK uses to estimate MOS
(DESIGN.md), so that agentd's local figure and the server's ``minMos`` compare::

    eff = rtt/2 + 2*jitter + 10                      (ms; rtt/2 is the one-way latency)
    R   = 93.2 - eff/40          if eff < 160
          93.2 - (eff - 120)/10  otherwise
    R  -= 2.5 * loss%            (R below 0 counts as 0)
    MOS = (1 + 0.035 R + 7e-6 R (R - 60)(100 - R)) * 5/4.5     ("assume Opus"), at least 1.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class CallQuality:
    """The E-model's answer for one path."""

    r_factor: float
    mos: float


def e_model(rtt_ms: float, jitter_ms: float, loss_pct: float) -> CallQuality:
    """R-factor and MOS for a path with this round-trip time, jitter and loss (percent)."""
    effective_latency_ms = rtt_ms / 2.0 + 2.0 * jitter_ms + 10.0
    if effective_latency_ms < 160.0:
        r = 93.2 - effective_latency_ms / 40.0
    else:
        r = 93.2 - (effective_latency_ms - 120.0) / 10.0
    r -= 2.5 * loss_pct
    r = max(r, 0.0)
    mos = (1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)) * 5.0 / 4.5
    return CallQuality(r_factor=r, mos=max(mos, 1.0))


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (``pct`` 0..100) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * pct / 100.0
    low = math.floor(position)
    high = math.ceil(position)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def transit_differences(transit_ms: Sequence[float]) -> list[float]:
    """|D| of each pair of consecutive received packets (RFC 3550 section 6.4.1), in ms."""
    return [abs(current - previous) for previous, current in zip(transit_ms, transit_ms[1:])]


def mean_jitter(streams: Sequence[Sequence[float]]) -> float | None:
    """RFC 3550 jitter without the running estimate's start-up bias: the mean |D| over every
    pair of consecutive packets of every stream (each pair weighs the same); None without a pair.

    The running estimate J += (|D| - J) / 16 converges to E|D|, but it starts at 0: after
    n packets it has reached only 1 - (15/16)^(n-1) of it (92 % after 40, where a short
    pre-shift stops). The mean of |D| is the same figure's unbiased estimate from the first
    pair on. Uniform independent delays of width W give W / 3."""
    total = pairs = 0
    for transits in streams:
        diffs = transit_differences(transits)
        total += sum(diffs)
        pairs += len(diffs)
    return total / pairs if pairs else None


def interarrival_jitter(transit_ms: Sequence[float]) -> float:
    """RFC 3550 §6.4.1 interarrival jitter over successive one-way transit times (ms).

    J += (|D| - J) / 16 for each pair of consecutive received packets; 0 for fewer than two.
    """
    jitter = 0.0
    for previous, current in zip(transit_ms, transit_ms[1:]):
        jitter += (abs(current - previous) - jitter) / 16.0
    return jitter


# -- how sure a loss figure is -------------------------------------------------------------------

Z_TWO_SIDED_95 = 1.959964
"""The normal quantile of a two-sided 95 % interval."""
Z_ONE_SIDED_95 = 1.644854
"""The normal quantile of a one-sided 95 % bound ("95 % sure that loss is below x")."""


def wilson_interval(lost: int, tried: int, z: float = Z_TWO_SIDED_95) -> tuple[float, float]:
    """Wilson score interval (fractions 0..1) of a loss share ``lost / tried``.

    Unlike the normal approximation it stays inside 0..1 and is honest at 0 losses: with
    none lost of n the upper end is z^2 / (n + z^2) (about 3.8 / n at 95 %). ``(0, 1)`` for
    no trials.
    """
    if tried <= 0:
        return 0.0, 1.0
    if not 0 <= lost <= tried:
        raise ValueError(f"lost ({lost}) must be between 0 and tried ({tried})")
    share = lost / tried
    z2 = z * z
    centre = (share + z2 / (2 * tried)) / (1 + z2 / tried)
    half = z * math.sqrt(share * (1 - share) / tried + z2 / (4 * tried * tried)) / (1 + z2 / tried)
    # at 0 or all lost the bound is exact; keep rounding from putting it a hair inside
    low = 0.0 if lost == 0 else max(0.0, centre - half)
    high = 1.0 if lost == tried else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class LossDecision:
    """Where loss stands against a threshold after ``tried`` legs, ``lost`` of them lost.

    ``side`` is ``"below"`` when the one-sided 95 % Wilson upper bound is under the
    threshold, ``"above"`` when the one-sided 95 % lower bound is over it, else
    ``"undecided"``. ``precise`` says a two-sided 95 % interval is at most
    ``2 * precision`` wide even at its end nearest 50 %, so the figure itself (not only
    the side) is known.
    """

    lost: int
    tried: int
    threshold: float
    side: str
    precise: bool
    interval: tuple[float, float]
    """Two-sided 95 % Wilson interval (fractions)."""
    bound: float | None
    """The one-sided 95 % bound that decided (upper for below, lower for above); None when undecided."""

    @property
    def done(self) -> bool:
        return self.side != "undecided" and self.precise


def decide_loss(lost: int, tried: int, *, threshold: float, precision: float, min_tried: int = 100) -> LossDecision:
    """The sequential test's answer after ``tried`` legs (fractions: ``threshold``, ``precision``).

    Probing stops when this is :attr:`LossDecision.done`: at least ``min_tried`` legs,
    the side of the threshold 95 % sure (one-sided Wilson bound), and the two-sided 95 %
    interval within ``+-precision``. A clean path stops after about 270 legs
    (2.7 / (n + 2.7) < 1 %); a path near the threshold never decides and runs to its cap.
    """
    interval = wilson_interval(lost, tried)
    low1, high1 = wilson_interval(lost, tried, Z_ONE_SIDED_95)
    side, bound = "undecided", None
    if tried >= min_tried:
        if high1 < threshold:
            side, bound = "below", high1
        elif low1 > threshold:
            side, bound = "above", low1
    # the width at the interval's end nearest 50 % (the widest the truth could make it): on
    # the observed width alone, a lossy path stops early exactly when its loss came out low
    # by chance (the Wilson width shrinks with the share below 50 %)
    share = lost / tried if tried else 0.0
    worst = min(0.5, interval[1]) if share <= 0.5 else max(0.5, interval[0])
    width = 2 * Z_TWO_SIDED_95 * math.sqrt(worst * (1 - worst) / tried) if tried else 1.0
    precise = tried >= min_tried and width <= 2 * precision
    return LossDecision(lost=lost, tried=tried, threshold=threshold, side=side, precise=precise, interval=interval, bound=bound)


# -- the browser's choice between a UDP and a TCP relay ---------------------------------------------

LIBWEBRTC_STUN_RTO_MS = 250.0
"""libwebrtc's first STUN retransmission timeout (``STUN_INITIAL_RTO``); it doubles per send."""
LIBWEBRTC_STUN_MAX_RTO_MS = 8000.0
LIBWEBRTC_STUN_SENDS = 9
"""Sends per STUN transaction in libwebrtc (one plus ``STUN_MAX_RETRANSMISSIONS`` = 8)."""
ALLOCATE_TRANSACTIONS = 2
"""A browser's TURN allocation: an Allocate without credentials (answered 401 with the
nonce), then the authenticated Allocate."""


def send_offsets_ms(sends: int = LIBWEBRTC_STUN_SENDS) -> list[float]:
    """When each send of one libwebrtc STUN transaction leaves, from the first (ms)."""
    offsets, at, rto = [], 0.0, LIBWEBRTC_STUN_RTO_MS
    for _ in range(sends):
        offsets.append(at)
        at += rto
        rto = min(rto * 2.0, LIBWEBRTC_STUN_MAX_RTO_MS)
    return offsets


def udp_relay_race_lost(loss: float, *, udp_rtt_ms: float, tcp_ready_ms: float) -> float:
    """The chance that a libwebrtc client (Chrome, Edge, other Chromium-based clients) offered a UDP
    and a TCP (or TLS) TURN server ends a relayed call on the TCP one.

    libwebrtc stops gathering once the first candidate pair is strongly connected, and a
    UDP relay candidate that arrives after that is discarded ("port is already done
    gathering"). Both allocations start together. Over TCP nothing is lost, so that path
    connects after ``tcp_ready_ms``; the UDP allocation takes ``ALLOCATE_TRANSACTIONS``
    STUN transactions, each done ``udp_rtt_ms`` after its first send that is not lost
    (a send and its answer cross the agent's network once each way: ``loss`` is that
    round trip's loss, ``loss_pct`` / 100). A lost send waits for a retransmission (250 ms,
    then 500, 1000, ...). When the TCP path connects within 250 ms, which it does on any
    line fit for calls, this is the chance that any of the four packets was lost:
    1 - (1 - loss)^2.
    """
    if not 0.0 <= loss <= 1.0:
        raise ValueError(f"loss must be within 0..1, not {loss}")
    delivered = 1.0 - loss
    offsets = send_offsets_ms()
    # the chance that a transaction's first successful send is send k (k = 0: no loss)
    first_success = [delivered * loss**k for k in range(len(offsets))]
    won = 0.0
    for k1, p1 in enumerate(first_success):
        for k2, p2 in enumerate(first_success):
            if offsets[k1] + offsets[k2] + ALLOCATE_TRANSACTIONS * udp_rtt_ms <= tcp_ready_ms:
                won += p1 * p2
    return min(1.0, max(0.0, 1.0 - won))
