"""How the benchmarks print a distribution and the machine's load (one way for all of them)."""

from __future__ import annotations

import os
import statistics
from typing import Iterable


def median_range(values: Iterable[float | None], digits: int = 1) -> str:
    """``median (min-max)`` of the values that are not None, or ``-`` when there are none."""
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    return f"{statistics.median(present):.{digits}f} ({min(present):.{digits}f}-{max(present):.{digits}f})"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (the machine is shared: wall times follow them)."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())
