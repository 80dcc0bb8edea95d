"""The host timeline: the daemon samples the PC every few seconds into its SQLite history.

Each sample is ``plugins/host/sample.py``'s (CPU over the interval, memory, swap,
pressure, browser memory, active interface, Wi-Fi signal, VPN interfaces), stored by
:class:`agentd.timeline.Timeline`. Correlation reads it for incidents
(``findings.timeline.host_samples(start, end)``). Only the daemon samples; a CLI run
never starts this loop.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import psutil
import structlog

from agentd import hookimpl
from agentd.config import ConfigSection

from agentd_plugins.host.sample import take_sample

log = structlog.get_logger("agentd.timeline.sampler")


@dataclass(frozen=True)
class TimelineSettings:
    """``[timeline]``"""

    enabled: bool = field(default=True, metadata={"help": "sample the host while the daemon runs"})
    interval_s: float = field(default=5.0, metadata={"help": "seconds between two host samples", "min": 1, "max": 3600})
    retention_days: float = field(default=14.0, metadata={"help": "samples and events older than this are deleted", "min": 0.01, "max": 365})
    max_size_mb: float = field(default=64.0, metadata={"help": "the history file is kept under this size (oldest samples go first)", "min": 1, "max": 4096})


@hookimpl
def agentd_config_sections():
    return [ConfigSection("timeline", TimelineSettings, "the daemon's host timeline")]


@hookimpl
def agentd_daemon_start(daemon: Any):
    settings: TimelineSettings = daemon.app.config.section("timeline")
    if daemon.timeline is None or not settings.enabled:
        return None
    daemon.spawn(sample_forever(daemon), name="timeline.sampler")
    return None


def _apply_limits(timeline: Any, settings: TimelineSettings) -> None:
    timeline.retention_days = settings.retention_days
    timeline.max_bytes = int(settings.max_size_mb * 2**20)


async def sample_forever(daemon: Any) -> None:
    """One sample per interval; the interval and limits follow configuration reloads."""
    psutil.cpu_percent(None)  # starts the first CPU measuring interval
    failures = 0
    while True:
        settings: TimelineSettings = daemon.app.config.section("timeline")
        _apply_limits(daemon.timeline, settings)
        started = time.monotonic()
        await asyncio.sleep(settings.interval_s)
        if not settings.enabled:
            continue
        try:
            # CPU use over the interval just slept; the rest is a few /proc reads
            sample = take_sample(psutil.cpu_percent(None))
            daemon.timeline.add_sample(sample.to_dict())
            failures = 0
        except Exception as exc:  # a sample lost is not worth stopping the history for
            failures += 1
            if failures in (1, 10, 100):
                log.warning("host sample failed", error=f"{type(exc).__name__}: {exc}", failures=failures)
        log.debug("host sampled", took_ms=round((time.monotonic() - started - settings.interval_s) * 1000, 1))
