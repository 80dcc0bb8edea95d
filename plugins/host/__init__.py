"""The ``host`` check: is the PC itself fit to carry a call (CPU, memory, swap, network interface).

A figure the platform will not give (swap on a Windows PC with performance counters off)
does not make the check an error: it passes or warns on what it read, and names what it
could not read. agentd's own instrument must not make a PC "not ready"."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import psutil

from agentd import hookimpl
from agentd.checks import Check, CheckContext, Outcome, Plan
from agentd.config import ConfigSection

from .sample import take_sample


@dataclass(frozen=True)
class HostSettings:
    """``[host]``: thresholds of the host check."""

    cpu_warn_pct: float = field(default=90.0, metadata={"help": "CPU use above this is a warning", "min": 1, "max": 100})
    mem_warn_pct: float = field(default=90.0, metadata={"help": "memory use above this is a warning", "min": 1, "max": 100})
    swap_warn_pct: float = field(default=50.0, metadata={"help": "swap use above this is a warning", "min": 0, "max": 100})
    memory_pressure_warn: float = field(default=10.0, metadata={"help": "Linux PSI memory avg10 above this is a warning"})
    sample_s: float = field(default=0.5, metadata={"help": "how long CPU use is measured", "min": 0.1, "max": 5})


@hookimpl
def agentd_config_sections():
    return [ConfigSection("host", HostSettings, "the host check")]


@hookimpl
def agentd_collect_checks(plan: Plan):
    settings: HostSettings = plan.config.section("host")
    return [Check("host", "The PC: CPU, memory, swap, network interface", run_host, timeout_s=settings.sample_s + 3.0, order=90)]


async def run_host(ctx: CheckContext) -> Outcome:
    settings: HostSettings = ctx.section("host")
    psutil.cpu_percent(None)  # start the measuring interval
    await asyncio.sleep(settings.sample_s)
    cpu = psutil.cpu_percent(None)
    sample = await asyncio.to_thread(take_sample, cpu)
    metrics = {
        "cpu_pct": sample.cpu_pct,
        "mem_used_pct": sample.mem_used_pct,
        "mem_available_mb": sample.mem_available_mb,
        "swap_used_pct": sample.swap_used_pct,
        "browser_rss_mb": sample.browser_rss_mb,
        "memory_pressure_avg10": sample.memory_pressure_avg10,
    }
    details = sample.to_dict()
    problems = []
    if sample.cpu_pct > settings.cpu_warn_pct:
        problems.append(f"CPU at {sample.cpu_pct:.0f}%")
    if sample.mem_used_pct > settings.mem_warn_pct:
        problems.append(f"memory at {sample.mem_used_pct:.0f}% ({sample.mem_available_mb:.0f} MB free)")
    if sample.swap_used_pct is not None and sample.swap_used_pct > settings.swap_warn_pct:
        problems.append(f"swap at {sample.swap_used_pct:.0f}%")
    if sample.memory_pressure_avg10 is not None and sample.memory_pressure_avg10 > settings.memory_pressure_warn:
        problems.append(f"memory pressure {sample.memory_pressure_avg10:.1f}%")
    link = sample.interface or "no active interface"
    if sample.interface_is_wifi:
        link += " (Wi-Fi" + (f", {sample.wifi_signal_dbm:.0f} dBm)" if sample.wifi_signal_dbm is not None else ")")
    if sample.vpn_interfaces:
        link += f", VPN {', '.join(sample.vpn_interfaces)}"
    if sample.browsers:
        link += f", browsers {sample.browser_rss_mb:.0f} MB"
    missing = f"; not readable here: {', '.join(sample.unreadable)}" if sample.unreadable else ""
    if problems:
        return Outcome.warned(f"{'; '.join(problems)}; {link}{missing}", metrics=metrics, details=details)
    swap = f", swap {sample.swap_used_pct:.0f}%" if sample.swap_used_pct is not None else ""
    return Outcome.passed(
        f"CPU {sample.cpu_pct:.0f}%, memory {sample.mem_used_pct:.0f}%{swap}; {link}{missing}",
        metrics=metrics,
        details=details,
    )
