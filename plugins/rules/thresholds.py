"""Declares ``[thresholds]``: the figures every rule family compares against."""

from __future__ import annotations

from agentd import hookimpl
from agentd.config import ConfigSection

from .base import Thresholds


@hookimpl
def agentd_config_sections():
    return [ConfigSection("thresholds", Thresholds, "where figures turn into findings (loss, jitter, RTT, MOS, host pressure)")]
