"""Pure figures of latency under load: added delay, RPM, the grade, and what it does to a call.

No I/O here; every function is small enough to check by hand (tests/probes/test_loaded_latency_math.py).

- **Added delay** (ms): the loaded round trips minus the idle ones: the median of the
  loaded samples minus the median of the idle ones, and the same at the 90th percentile
  of the loaded samples (the spikes a call hears).
- **RPM** (round trips per minute, draft-ietf-ippm-responsiveness): 60 000 divided by the
  trimmed mean of the loaded round trips in ms (the draft trims the slowest 5 % of
  probes). agentd's probes are the media edge's own STUN bindings (UDP, what the call
  uses), not the draft's mix of TCP/TLS/HTTP probes; the unit and formula are the draft's.
- **Grade** from the median added delay, on the scale of the widely used public
  bufferbloat tests (Waveform's): A+ under 5 ms, A under 30, B under 60, C under 200,
  D under 400, F from 400. Below 30 ms interactive use does not notice; from 200 ms a
  conversation starts to talk over itself.
- **What it does to a call**: the project's E-model (``plugins/media/quality.py``, the
  Genesys SDK's), fed with the loaded path: one-way delay = idle RTT / 2 + the added
  delay (an uplink queue delays the agent's voice by all of it, one way), jitter the mean
  change between consecutive loaded round trips, loss the probes lost under load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from agentd_plugins.media.quality import e_model, percentile

GRADES: tuple[tuple[float, str], ...] = ((5.0, "A+"), (30.0, "A"), (60.0, "B"), (200.0, "C"), (400.0, "D"))
"""(upper bound in ms of the median added delay, grade); at or above the last bound: F."""

EMODEL_KNEE_MS = 160.0
"""The simplified E-model's effective latency from which each 10 ms costs a point of R
(below it, 40 ms do): past it a call's delay is heard as delay (talk-over)."""

MIN_ADDED_FOR_VERDICT_MS = 30.0
"""Below this (grades A+ and A) the load is not what hurts the call, whatever the path's own delay."""


def grade(added_ms: float) -> str:
    for bound, letter in GRADES:
        if added_ms < bound:
            return letter
    return "F"


def trimmed_mean(values: Sequence[float], trim_pct: float = 5.0) -> float:
    """The mean without the highest ``trim_pct`` % of values (at least one value kept)."""
    if not values:
        raise ValueError("trimmed mean of no values")
    ordered = sorted(values)
    keep = max(1, len(ordered) - int(len(ordered) * trim_pct / 100.0))
    kept = ordered[:keep]
    return sum(kept) / len(kept)


def rpm(loaded_rtt_ms: Sequence[float]) -> float:
    """Round trips per minute under working conditions: 60 000 / trimmed mean RTT (ms)."""
    mean = trimmed_mean(loaded_rtt_ms)
    return 60000.0 / max(mean, 0.001)


def mean_abs_change(values: Sequence[float]) -> float:
    """Mean |x[i] - x[i-1]|: the RFC 3550 |D| without its running filter; 0 for fewer than two."""
    if len(values) < 2:
        return 0.0
    return sum(abs(b - a) for a, b in zip(values, values[1:])) / (len(values) - 1)


@dataclass(frozen=True)
class LoadedLatency:
    """The figures of one test: idle vs loaded round trips to one target."""

    idle_rtt_ms: float
    loaded_rtt_ms: float
    added_ms: float
    added_p90_ms: float
    rpm: float
    grade: str
    loaded_jitter_ms: float
    loaded_loss_pct: float
    idle_samples: int
    loaded_samples: int
    idle_mos: float
    loaded_mos: float
    loaded_r_factor: float
    loaded_effective_ms: float

    def breaks_calls(self, mos_limit: float) -> str | None:
        return breaks_calls(self.added_ms, self.idle_rtt_ms, self.idle_mos, self.loaded_mos, self.loaded_effective_ms, mos_limit)


def breaks_calls(added_ms: float, idle_rtt_ms: float, idle_mos: float, loaded_mos: float, loaded_effective_ms: float, mos_limit: float) -> str | None:
    """Why the load would break calls on this line (``"mos"``: MOS under load below the
    limit; ``"delay"``: the E-model's effective latency pushed past its knee), or None.

    Only when the load makes the difference: the idle path was on the good side, and the
    added delay is at least :data:`MIN_ADDED_FOR_VERDICT_MS` (grade B or worse)."""
    if added_ms < MIN_ADDED_FOR_VERDICT_MS:
        return None
    if loaded_mos < mos_limit <= idle_mos:
        return "mos"
    if loaded_effective_ms >= EMODEL_KNEE_MS > effective_ms(idle_rtt_ms / 2.0, 0.0):
        return "delay"
    return None


def effective_ms(one_way_ms: float, jitter_ms: float) -> float:
    return one_way_ms + 2.0 * jitter_ms + 10.0


def summarise(idle: Sequence[float], loaded: Sequence[float], loaded_lost: int) -> LoadedLatency:
    """The figures from idle and loaded round trips (ms, in send order) and the loaded probes lost."""
    if not idle or not loaded:
        raise ValueError("need idle and loaded round trips")
    idle_median = percentile(idle, 50)
    loaded_median = percentile(loaded, 50)
    added = max(0.0, loaded_median - idle_median)
    added_p90 = max(0.0, percentile(loaded, 90) - idle_median)
    jitter = mean_abs_change(loaded)
    tried = len(loaded) + loaded_lost
    loss = 100.0 * loaded_lost / tried if tried else 0.0
    idle_q = e_model(idle_median, mean_abs_change(idle), 0.0)
    # e_model halves its RTT for the one-way delay: hand it the RTT whose half is idle/2 + added
    loaded_q = e_model(idle_median + 2.0 * added, jitter, loss)
    return LoadedLatency(
        idle_rtt_ms=round(idle_median, 1),
        loaded_rtt_ms=round(loaded_median, 1),
        added_ms=round(added, 1),
        added_p90_ms=round(added_p90, 1),
        rpm=round(rpm(loaded)),
        grade=grade(added),
        loaded_jitter_ms=round(jitter, 1),
        loaded_loss_pct=round(loss, 1),
        idle_samples=len(idle),
        loaded_samples=len(loaded),
        idle_mos=round(idle_q.mos, 2),
        loaded_mos=round(loaded_q.mos, 2),
        loaded_r_factor=round(loaded_q.r_factor, 1),
        loaded_effective_ms=round(effective_ms(idle_median / 2.0 + added, jitter), 1),
    )
