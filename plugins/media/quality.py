"""Pure figures of call quality: the Genesys E-model, loss conversion, summary statistics.

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


def one_crossing_loss(two_crossings_loss: float) -> float:
    """Loss over one crossing of a network, from the loss over two independent crossings.

    Fractions (0..1). Survival multiplies: (1 - two) = (1 - one)^2, so
    one = 1 - sqrt(1 - two). The two-peer echo through a relay crosses the agent's network
    twice each way; the softphone crosses it once each way.
    """
    if not 0.0 <= two_crossings_loss <= 1.0:
        raise ValueError(f"a loss fraction is between 0 and 1, got {two_crossings_loss}")
    return 1.0 - math.sqrt(1.0 - two_crossings_loss)


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


def interarrival_jitter(transit_ms: Sequence[float]) -> float:
    """RFC 3550 §6.4.1 interarrival jitter over successive one-way transit times (ms).

    J += (|D| - J) / 16 for each pair of consecutive received packets; 0 for fewer than two.
    """
    jitter = 0.0
    for previous, current in zip(transit_ms, transit_ms[1:]):
        jitter += (abs(current - previous) - jitter) / 16.0
    return jitter


def longest_run(flags: Sequence[bool]) -> int:
    """The longest run of consecutive True values (lost probes in sequence order)."""
    longest = current = 0
    for flag in flags:
        current = current + 1 if flag else 0
        longest = max(longest, current)
    return longest
