"""Windows side of :mod:`agentd.osdeps.netpath`: ``IcmpSendEcho2`` and ``GetBestRoute`` (iphlpapi).

``IcmpSendEcho2`` needs no privilege: the gateway gets echoes, and the hops echoes to the
target with the TTL limited in the request's IP options (a router where it runs out answers
``IP_TTL_EXPIRED_TRANSIT`` naming itself; the target answers ``IP_SUCCESS``). Each call
is synchronous with its own timeout, so each runs in a worker thread; the round-trip time
is taken around the call (the reply's own is in whole milliseconds).
"""

from __future__ import annotations

import asyncio
import ctypes
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from ctypes import wintypes

from .netpath import PathProbe, Route, Series, most_common

IP_SUCCESS = 0
IP_DEST_NET_UNREACHABLE = 11002
IP_DEST_HOST_UNREACHABLE = 11003
IP_DEST_PORT_UNREACHABLE = 11005
IP_REQ_TIMED_OUT = 11010
IP_TTL_EXPIRED_TRANSIT = 11013
PAYLOAD = b"agentd-path-probe"
WORKERS = 32
TARGET_WAIT_S = 0.4


class IP_OPTION_INFORMATION(ctypes.Structure):  # noqa: N801 (the Windows name)
    _fields_ = [("Ttl", ctypes.c_ubyte), ("Tos", ctypes.c_ubyte), ("Flags", ctypes.c_ubyte),
                ("OptionsSize", ctypes.c_ubyte), ("OptionsData", ctypes.c_void_p)]


class ICMP_ECHO_REPLY(ctypes.Structure):  # noqa: N801
    _fields_ = [("Address", wintypes.ULONG), ("Status", wintypes.ULONG), ("RoundTripTime", wintypes.ULONG),
                ("DataSize", wintypes.USHORT), ("Reserved", wintypes.USHORT), ("Data", ctypes.c_void_p),
                ("Options", IP_OPTION_INFORMATION)]


class MIB_IPFORWARDROW(ctypes.Structure):  # noqa: N801
    _fields_ = [(name, wintypes.DWORD) for name in (
        "dwForwardDest", "dwForwardMask", "dwForwardPolicy", "dwForwardNextHop", "dwForwardIfIndex", "dwForwardType",
        "dwForwardProto", "dwForwardAge", "dwForwardNextHopAS", "dwForwardMetric1", "dwForwardMetric2",
        "dwForwardMetric3", "dwForwardMetric4", "dwForwardMetric5")]


def _iphlpapi():
    lib = ctypes.WinDLL("iphlpapi.dll", use_last_error=True)
    lib.IcmpCreateFile.restype = wintypes.HANDLE
    lib.IcmpCloseHandle.argtypes = [wintypes.HANDLE]
    lib.IcmpSendEcho2.argtypes = [
        wintypes.HANDLE, wintypes.HANDLE, ctypes.c_void_p, ctypes.c_void_p, wintypes.ULONG,
        ctypes.c_void_p, wintypes.WORD, ctypes.POINTER(IP_OPTION_INFORMATION), ctypes.c_void_p, wintypes.DWORD, wintypes.DWORD,
    ]
    lib.IcmpSendEcho2.restype = wintypes.DWORD
    lib.GetBestRoute.argtypes = [wintypes.DWORD, wintypes.DWORD, ctypes.POINTER(MIB_IPFORWARDROW)]
    lib.GetBestRoute.restype = wintypes.DWORD
    return lib


def _addr(ip: str) -> int:
    return struct.unpack("<I", socket.inet_aton(ip))[0]  # IPAddr: the address's bytes in network order


def _ip(value: int) -> str:
    return socket.inet_ntoa(struct.pack("<I", value))


def _interface_name(index: int) -> str | None:
    try:
        for name, idx in socket.if_nameindex():  # Python 3.8+ on Windows
            if idx == index:
                return name
    except OSError:
        return None
    return None


def route_to(address: str) -> Route:
    try:
        lib = _iphlpapi()
        row = MIB_IPFORWARDROW()
        err = lib.GetBestRoute(_addr(address), 0, ctypes.byref(row))
    except (OSError, AttributeError) as exc:
        return Route(destination=address, how=f"GetBestRoute unavailable ({exc})")
    if err != 0:
        return Route(destination=address, how=f"GetBestRoute failed ({err})")
    next_hop = _ip(row.dwForwardNextHop)
    local = address.startswith("127.")
    # MIB_IPROUTE_TYPE_DIRECT (3): on-link, no gateway
    gateway = None if local or next_hop in ("0.0.0.0", address) or row.dwForwardType == 3 else next_hop
    return Route(destination=address, gateway=gateway, interface=_interface_name(row.dwForwardIfIndex), local=local, how="GetBestRoute")


class _EchoLane:
    """Echoes to one address with one TTL (None: the default), each in a worker thread."""

    def __init__(self, lib, handle, address: str, ttl: int | None, timeout_s: float) -> None:
        self.lib, self.handle, self.address, self.ttl, self.timeout_s = lib, handle, address, ttl, timeout_s
        self.futures: list[asyncio.Future] = []
        self.answered_by: list[str] = []
        self.kinds: list[str] = []

    def _one(self) -> tuple[float | None, str | None, str | None]:
        reply = ctypes.create_string_buffer(ctypes.sizeof(ICMP_ECHO_REPLY) + len(PAYLOAD) + 8 + 64)
        options = IP_OPTION_INFORMATION(Ttl=self.ttl or 128)
        data = ctypes.create_string_buffer(PAYLOAD)
        started = time.perf_counter()
        self.lib.IcmpSendEcho2(self.handle, None, None, None, _addr(self.address), data, len(PAYLOAD), ctypes.byref(options),
                               reply, ctypes.sizeof(reply), max(1, int(self.timeout_s * 1000)))
        elapsed = (time.perf_counter() - started) * 1000.0
        answer = ICMP_ECHO_REPLY.from_buffer_copy(reply.raw[: ctypes.sizeof(ICMP_ECHO_REPLY)])
        kind = {IP_SUCCESS: "echo", IP_TTL_EXPIRED_TRANSIT: "time_exceeded", IP_DEST_HOST_UNREACHABLE: "unreachable",
                IP_DEST_NET_UNREACHABLE: "unreachable", IP_DEST_PORT_UNREACHABLE: "unreachable"}.get(answer.Status)
        if kind is None or answer.Address == 0 or elapsed > self.timeout_s * 1000.0:
            return None, None, None
        return elapsed, _ip(answer.Address), kind

    def send(self, loop, pool) -> None:
        self.futures.append(loop.run_in_executor(pool, self._one))

    def series(self) -> Series:
        rtts = []
        for future in self.futures:
            rtt, by, kind = future.result() if future.done() and not future.exception() else (None, None, None)
            rtts.append(rtt)
            if by:
                self.answered_by.append(by)
                self.kinds.append(kind)
        return Series(rtts_ms=tuple(rtts), answered_by=most_common(self.answered_by), kind=most_common(self.kinds), ttl=self.ttl)


async def probe_path(
    target: str, gateway: str | None, *, count: int, interval_s: float, hop_every: int, max_hops: int, timeout_s: float,
    stop: asyncio.Event | None = None,
    clean_after: int = 0,
) -> PathProbe:
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    try:
        lib = _iphlpapi()
        handle = lib.IcmpCreateFile()
    except (OSError, AttributeError) as exc:
        raise OSError(f"IcmpCreateFile is not available: {exc}") from exc
    if not handle or handle == wintypes.HANDLE(-1).value:
        raise OSError(f"IcmpCreateFile failed (error {ctypes.get_last_error()})")
    pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="agentd-icmp")
    gateway_lane = _EchoLane(lib, handle, gateway, None, timeout_s) if gateway else None
    hops = [_EchoLane(lib, handle, target, ttl, timeout_s) for ttl in range(1, max_hops + 1)]
    target_ttl: int | None = None
    limit = max_hops
    try:
        stopped_early = None
        for i in range(count):
            if stop is not None and stop.is_set() and i >= max(1, count // 4):
                stopped_early = "asked"
                break
            for lane in hops:  # what the hops have answered so far sets how far up to probe
                if target_ttl is None or (lane.ttl or 0) < target_ttl:
                    if any(f.done() and not f.exception() and f.result()[1] == target for f in lane.futures):
                        target_ttl = lane.ttl
                        limit = min(limit, lane.ttl or limit)
            if target_ttl is None and time.monotonic() - started > TARGET_WAIT_S:
                answered = [lane.ttl for lane in hops if any(f.done() and not f.exception() and f.result()[0] is not None for f in lane.futures)]
                limit = min(max_hops, (max(answered) + 1) if answered else 1)
            if gateway_lane:
                gateway_lane.send(loop, pool)
            for lane in hops if i % hop_every == 0 else ():
                if (lane.ttl or 0) <= limit:
                    lane.send(loop, pool)
            await asyncio.sleep(max(0.0, started + (i + 1) * interval_s - time.monotonic()))
        pending = [f for lane in ([gateway_lane] if gateway_lane else []) + hops for f in lane.futures]
        if pending:
            await asyncio.wait(pending, timeout=timeout_s + 1.0)
    finally:
        pool.shutdown(wait=False)
        loop.run_in_executor(None, lib.IcmpCloseHandle, handle)  # after the calls still in flight
    final = target_ttl or limit
    return PathProbe(
        target=target,
        gateway=gateway_lane.series() if gateway_lane else None,
        gateway_method="icmp-win" if gateway_lane else None,
        gateway_note=None,
        hops=tuple(lane.series() for lane in hops if (lane.ttl or 0) <= final),
        hops_method="icmp-ttl",
        hops_note=None,
        target_ttl=target_ttl,
        duration_ms=round((time.monotonic() - started) * 1000.0, 1),
        stopped_early=stopped_early,
    )
