"""Two clocks and the difference between them.

The wall clock (``time.time()``) is what people and Genesys Cloud read, and it jumps:
NTP after a laptop's sleep, a wrong RTC at boot, a user setting the time. The steady
clock only runs forward at the rate of real time. ``steady()`` is CLOCK_BOOTTIME where
the OS has one (it keeps counting while the PC sleeps, so a suspend is not mistaken for
a jump), else ``time.monotonic()``.

:class:`StepWatch` compares the two between looks: when the wall clock moved more than
the steady one by over ``threshold_s`` (either way), the wall clock was stepped. The
daemon keeps the last few steps for ``agentd status``; the scheduler and the timeline's
retention decide by them what to trust.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone

_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)

STEP_THRESHOLD_S = 60.0
"""A wall clock that moved this much more (or less) than real time was stepped, not slewed."""


def steady() -> float:
    """Seconds on a clock that never jumps (counts suspend where the OS allows)."""
    if _BOOTTIME is not None:
        return time.clock_gettime(_BOOTTIME)
    return time.monotonic()


@dataclass(frozen=True)
class ClockStep:
    """The wall clock moved by ``by_s`` more than real time, noticed at ``at`` (wall time after)."""

    at: datetime
    by_s: float

    def describe(self) -> str:
        return f"the clock moved {'forward' if self.by_s > 0 else 'back'} {span(abs(self.by_s))} at {self.at.isoformat(timespec='seconds')}"

    def to_dict(self) -> dict:
        return {"at": self.at.isoformat(timespec="seconds"), "by_s": round(self.by_s, 1)}


def span(seconds: float) -> str:
    """``7200`` -> ``2 h 0 min``; ``90`` -> ``1 min 30 s``; days for large ones."""
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


class StepWatch:
    """Notices wall-clock steps between calls of :meth:`observe`; keeps the last few."""

    def __init__(self, *, threshold_s: float = STEP_THRESHOLD_S, keep: int = 5) -> None:
        self.threshold_s = threshold_s
        self.steps: deque[ClockStep] = deque(maxlen=keep)
        self._last: tuple[float, float] | None = None

    def observe(self, wall: float | None = None, now_steady: float | None = None) -> ClockStep | None:
        wall = time.time() if wall is None else wall
        now_steady = steady() if now_steady is None else now_steady
        last, self._last = self._last, (wall, now_steady)
        if last is None:
            return None
        by = (wall - last[0]) - (now_steady - last[1])
        if abs(by) < self.threshold_s:
            return None
        return self.note(ClockStep(datetime.fromtimestamp(wall, timezone.utc), by))

    def note(self, step: ClockStep) -> ClockStep:
        self.steps.append(step)
        return step
