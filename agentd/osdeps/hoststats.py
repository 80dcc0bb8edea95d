"""Host figures whose reading differs by platform (the ``host`` check and the host timeline).

- The load average: POSIX has ``os.getloadavg``; Windows has none (None, not an error).
- Swap use: on Windows psutil reads it through a performance counter
  (``\\Paging File(_Total)\\% Usage``), which is missing where performance counters are
  off (a policy, a damaged counter registry, Wine): psutil then raises. The caller
  records the figure as unreadable; the rest of the sample stands.
"""

from __future__ import annotations

import os

import psutil


def load_average_1m() -> float | None:
    """The 1-minute load average; None where the platform has none."""
    getloadavg = getattr(os, "getloadavg", None)
    return None if getloadavg is None else float(getloadavg()[0])


def swap_used_pct() -> float:
    """Swap in use, in % (0 without swap). Raises what psutil raises when it cannot read it."""
    swap = psutil.swap_memory()
    return float(swap.percent) if swap.total else 0.0
