"""One sample of the PC's state: the figures that explain choppy audio from the PC's side.

Shared by the ``host`` check and the daemon's host timeline. Cheap: no subprocess, a few
reads of /proc (or the OS's equivalent through psutil), so it can run every few seconds.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

import psutil

from agentd.osdeps import hoststats

T = TypeVar("T")

BROWSER_NAMES = (
    "chrome", "chromium", "chromium-browser", "google chrome", "msedge", "microsoft edge",
    "firefox", "safari", "brave", "opera", "genesys cloud",
)
# Interface name prefixes of VPN and tunnel adapters on Linux, macOS and Windows.
VPN_PREFIXES = (
    "tun", "tap", "wg", "ppp", "utun", "ipsec", "gpd", "cscotun", "vpn", "zt", "tailscale",
    "nordlynx", "pangp", "globalprotect", "fortissl", "cisco anyconnect", "wireguard",
    # Windows friendly names that VPN clients give their adapters
    "openvpn", "forticlient", "zscaler", "tap-windows", "proton", "nordvpn", "expressvpn",
)
# "Wi-Fi", "Wi-Fi 2" and "WLAN" are what Windows names wireless adapters (English, German);
# "Drahtlosnetzwerkverbindung" and "Wireless Network Connection" on older ones
WIFI_PREFIXES = ("wlan", "wlp", "wlx", "wl", "wi-fi", "wifi", "wireless", "airport", "drahtlos")


@dataclass(frozen=True)
class BrowserProcess:
    name: str
    pid: int
    rss_mb: float


@dataclass(frozen=True)
class HostSample:
    cpu_pct: float
    load_1m: float | None
    mem_used_pct: float
    mem_available_mb: float
    swap_used_pct: float | None
    """None when the platform would not say (Windows with performance counters off)."""
    memory_pressure_avg10: float | None
    """Linux PSI "some avg10" for memory: % of time tasks waited on memory in the last 10 s."""
    cpu_pressure_avg10: float | None
    browser_rss_mb: float
    browsers: tuple[BrowserProcess, ...] = ()
    interface: str | None = None
    interface_is_wifi: bool | None = None
    wifi_signal_dbm: float | None = None
    vpn_interfaces: tuple[str, ...] = ()
    cpu_count: int = field(default_factory=lambda: os.cpu_count() or 1)
    unreadable: dict[str, str] = field(default_factory=dict)
    """Figure -> why it could not be read here (the rest of the sample stands)."""

    def to_dict(self) -> dict:
        return asdict(self)


def _psi(resource: str) -> float | None:
    try:
        text = Path(f"/proc/pressure/{resource}").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("some"):
            for part in line.split():
                if part.startswith("avg10="):
                    return float(part[6:])
    return None


def default_interface() -> str | None:
    """The interface of the default route (Linux), else the busiest interface that is up."""
    try:
        for line in Path("/proc/net/route").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 2 and fields[1] == "00000000":
                return fields[0]
    except OSError:
        pass
    stats = psutil.net_if_stats()
    counters = psutil.net_io_counters(pernic=True)
    candidates = [n for n, s in stats.items() if s.isup and not n.lower().startswith(("lo", "loopback"))]
    if not candidates:
        return None
    return max(candidates, key=lambda n: (counters[n].bytes_recv + counters[n].bytes_sent) if n in counters else 0)


SYS_CLASS_NET = Path("/sys/class/net")
"""Where Linux lists the network interfaces: the one seam of "is this link wireless".
Tests point it at a folder of their own to make a real veth look like a Wi-Fi card."""


def is_wifi(interface: str) -> bool:
    """Whether ``interface`` is a wireless link. Linux: cfg80211 drivers give it a
    ``wireless`` folder and a ``phy80211`` link in sysfs; elsewhere its name tells."""
    if sys.platform.startswith("linux"):
        folder = SYS_CLASS_NET / interface
        return (folder / "wireless").exists() or (folder / "phy80211").exists()
    return interface.lower().startswith(WIFI_PREFIXES)


def wifi_signal_dbm(interface: str) -> float | None:
    """Signal level from /proc/net/wireless (Linux); None where the OS does not expose it."""
    try:
        for line in Path("/proc/net/wireless").read_text().splitlines()[2:]:
            name, _, rest = line.partition(":")
            if name.strip() == interface:
                level = rest.split()[2].rstrip(".")
                return float(level)
    except (OSError, IndexError, ValueError):
        pass
    return None


def vpn_interfaces(stats: dict | None = None) -> tuple[str, ...]:
    """VPN and tunnel interfaces that are up (``stats``: psutil.net_if_stats(), if the caller has it)."""
    up = psutil.net_if_stats() if stats is None else stats
    return tuple(sorted(n for n, s in up.items() if s.isup and n.lower().startswith(VPN_PREFIXES)))


def browser_processes(limit: int = 5) -> tuple[BrowserProcess, ...]:
    found: list[BrowserProcess] = []
    for proc in psutil.process_iter(["name", "memory_info"]):
        name = (proc.info.get("name") or "").lower()
        mem = proc.info.get("memory_info")
        if mem is None or not any(name.startswith(b) for b in BROWSER_NAMES):
            continue
        found.append(BrowserProcess(proc.info["name"], proc.pid, round(mem.rss / 2**20, 1)))
    found.sort(key=lambda p: p.rss_mb, reverse=True)
    return tuple(found[:limit]) if limit else tuple(found)


def take_sample(cpu_pct: float | None = None) -> HostSample:
    """Sample now. ``cpu_pct`` comes from the caller (it needs an interval to measure);
    without it, psutil's figure since its previous call is used.

    CPU and memory are the sample; every other figure the platform may refuse (Windows
    with performance counters off: swap) is read on its own, and one that fails is named
    in ``unreadable`` instead of failing the sample."""
    unreadable: dict[str, str] = {}

    def optional(name: str, read: Callable[[], T], default: T) -> T:
        try:
            return read()
        except Exception as exc:  # psutil raises RuntimeError, OSError or its own errors per platform
            unreadable[name] = (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)[:200]
            return default

    vm = psutil.virtual_memory()
    all_browsers = optional("browsers", lambda: browser_processes(limit=0), ())
    iface = optional("interface", default_interface, None)
    wifi = optional("wifi", lambda: is_wifi(iface), None) if iface else None
    return HostSample(
        cpu_pct=float(cpu_pct if cpu_pct is not None else psutil.cpu_percent(None)),
        load_1m=optional("load average", hoststats.load_average_1m, None),
        mem_used_pct=float(vm.percent),
        mem_available_mb=round(vm.available / 2**20, 1),
        swap_used_pct=optional("swap", hoststats.swap_used_pct, None),
        memory_pressure_avg10=_psi("memory"),
        cpu_pressure_avg10=_psi("cpu"),
        browser_rss_mb=round(sum(p.rss_mb for p in all_browsers), 1),
        browsers=all_browsers[:5],
        interface=iface,
        interface_is_wifi=wifi,
        wifi_signal_dbm=wifi_signal_dbm(iface) if wifi else None,
        vpn_interfaces=optional("VPN interfaces", vpn_interfaces, ()),
        unreadable=unreadable,
    )
