"""Linux side of :mod:`agentd.osdeps.netpath`: ping sockets, raw ICMP, UDP with IP_RECVERR.

Every socket is non-blocking and read from the event loop; every probe has a deadline
(``timeout_s`` after it was sent). Receive times are the kernel's (``SO_TIMESTAMPNS``), so
a busy event loop (the media check runs beside this) does not add to the round-trip times.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Callable

from .netpath import HOP_PORT_BASE, PathProbe, Route, Series, most_common

IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_EE_ORIGIN_ICMP = 2
ICMP_ECHO, ICMP_ECHO_REPLY, ICMP_UNREACH, ICMP_TIME_EXCEEDED = 8, 0, 3, 11
PROC_ROUTE = Path("/proc/net/route")
TARGET_WAIT_S = 0.4
"""How long the hop probes go up to ``max_hops`` before they stop at the highest hop that answered."""


# -- the route ---------------------------------------------------------------------------------


def route_to(address: str) -> Route:
    """``ip -j route get`` (the kernel's own answer, policy routing and VPNs included); the
    main table in ``/proc/net/route`` when the ``ip`` tool is missing."""
    try:
        proc = subprocess.run(["ip", "-j", "route", "get", address], capture_output=True, text=True, timeout=1.0)
    except (OSError, subprocess.TimeoutExpired):
        proc = None
    if proc is not None and proc.returncode == 0:
        try:
            entry = json.loads(proc.stdout)[0]
        except (ValueError, IndexError, TypeError):
            entry = None
        if isinstance(entry, dict):
            local = entry.get("type") == "local" or entry.get("dev") == "lo"
            return Route(
                destination=address,
                gateway=entry.get("gateway"),
                interface=entry.get("dev"),
                source=entry.get("prefsrc"),
                local=local,
                how="ip route get",
            )
    return _proc_route(address)


def _proc_route(address: str) -> Route:
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return Route(destination=address, how="no IPv4 route table for this address")
    if ip.is_loopback:
        return Route(destination=address, interface="lo", local=True, how="/proc/net/route")
    best: tuple[int, int, str, str | None] | None = None  # (prefix length, -metric, interface, gateway)
    try:
        lines = PROC_ROUTE.read_text().splitlines()[1:]
    except OSError:
        return Route(destination=address, how="no route table readable")
    for line in lines:
        parts = line.split()
        if len(parts) < 8:
            continue
        iface, dest, gw, flags, metric, mask = parts[0], parts[1], parts[2], int(parts[3], 16), int(parts[6]), parts[7]
        if not flags & 0x1:  # RTF_UP
            continue
        d, g, m = (int.from_bytes(bytes.fromhex(x), "little") for x in (dest, gw, mask))
        if int(ip) & m != d:
            continue
        length = bin(m).count("1")
        gateway = str(ipaddress.IPv4Address(g)) if flags & 0x2 else None  # RTF_GATEWAY
        key = (length, -metric, iface, gateway)
        if best is None or key[:2] > best[:2]:
            best = key
    if best is None:
        return Route(destination=address, how="/proc/net/route: no route")
    return Route(destination=address, gateway=best[3], interface=best[2], how="/proc/net/route")


# -- lanes: one socket, one address, probes numbered from 0 ---------------------------------------


class _Lane:
    """Probes of one socket to one address: when each was sent (wall clock, ns) and answered."""

    def __init__(self, sock: socket.socket, address: str, ttl: int | None) -> None:
        self.sock = sock
        self.address = address
        self.ttl = ttl
        self.sent: list[int] = []  # send time (ns, CLOCK_REALTIME) by sequence number
        self.rtt_ms: dict[int, float] = {}
        self.answered_by: list[str] = []
        self.kinds: list[str] = []
        self.on_answer: Callable[[_Lane, str, str], None] | None = None

    def send(self) -> None:
        seq = len(self.sent)
        self.sent.append(time.time_ns())
        for _ in range(3):
            try:
                self._send(seq)
                return
            except (BlockingIOError, InterruptedError):
                return  # a full send buffer: the probe counts as lost, as it would on the wire
            except OSError:
                # an earlier probe's ICMP answer is also the socket's pending error, which the
                # next send reports instead of sending (EHOSTUNREACH, ECONNREFUSED): send again
                continue

    def _send(self, seq: int) -> None:
        raise NotImplementedError

    def _answer(self, seq: int, received_ns: int, by: str, kind: str, deadline_ns: int) -> None:
        if not 0 <= seq < len(self.sent) or seq in self.rtt_ms:
            return
        rtt_ns = received_ns - self.sent[seq]
        if rtt_ns < 0 or rtt_ns > deadline_ns:
            return  # too late: lost
        self.rtt_ms[seq] = rtt_ns / 1e6
        self.answered_by.append(by)
        self.kinds.append(kind)
        if self.on_answer:
            self.on_answer(self, by, kind)

    def read(self, deadline_ns: int) -> None:
        raise NotImplementedError

    def pending(self, now_ns: int, deadline_ns: int) -> bool:
        """Some probe is neither answered nor past its deadline."""
        return any(seq not in self.rtt_ms and now_ns - sent <= deadline_ns for seq, sent in enumerate(self.sent))

    def series(self, deadline_ns: int) -> Series:
        rtts = tuple(self.rtt_ms.get(seq) for seq in range(len(self.sent)))
        return Series(rtts_ms=rtts, answered_by=most_common(self.answered_by), kind=most_common(self.kinds), ttl=self.ttl)

    def close(self) -> None:
        self.sock.close()


def _timestamp_ns(ancdata) -> int | None:
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack("@qq", data[:16])
            return sec * 1_000_000_000 + nsec
    return None


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


PAYLOAD = b"agentd-path-probe"


class _PingLane(_Lane):
    """An ICMP ping socket (``SOCK_DGRAM``, ``IPPROTO_ICMP``): the kernel sets the identifier
    and the checksum and hands back only this socket's echo replies."""

    def _send(self, seq: int) -> None:
        header = struct.pack("!BBHHH", ICMP_ECHO, 0, 0, 0, seq & 0xFFFF)
        self.sock.sendto(header + PAYLOAD, (self.address, 0))

    def read(self, deadline_ns: int) -> None:
        while True:
            try:
                data, anc, _flags, addr = self.sock.recvmsg(512, 256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                with contextlib.suppress(OSError):
                    self.sock.recvmsg(512, 256, socket.MSG_ERRQUEUE)
                continue
            if len(data) >= 8 and data[0] == ICMP_ECHO_REPLY:
                seq = struct.unpack("!H", data[6:8])[0]
                self._answer(seq, _timestamp_ns(anc) or time.time_ns(), addr[0], "echo", deadline_ns)


class _RawLane(_Lane):
    """A raw ICMP socket (``CAP_NET_RAW``): our own identifier, every ICMP packet read and filtered."""

    def __init__(self, sock: socket.socket, address: str, ttl: int | None) -> None:
        super().__init__(sock, address, ttl)
        self.ident = (os.getpid() ^ int.from_bytes(os.urandom(2), "big")) & 0xFFFF

    def _send(self, seq: int) -> None:
        header = struct.pack("!BBHHH", ICMP_ECHO, 0, 0, self.ident, seq & 0xFFFF)
        checksum = _checksum(header + PAYLOAD)
        header = struct.pack("!BBHHH", ICMP_ECHO, 0, checksum, self.ident, seq & 0xFFFF)
        self.sock.sendto(header + PAYLOAD, (self.address, 0))

    def read(self, deadline_ns: int) -> None:
        while True:
            try:
                data, anc, _flags, addr = self.sock.recvmsg(1024, 256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(data) < 28:
                continue
            icmp = data[(data[0] & 0x0F) * 4:]
            if len(icmp) >= 8 and icmp[0] == ICMP_ECHO_REPLY and addr[0] == self.address:
                ident, seq = struct.unpack("!HH", icmp[4:8])
                if ident == self.ident:
                    self._answer(seq, _timestamp_ns(anc) or time.time_ns(), addr[0], "echo", deadline_ns)


class _UdpLane(_Lane):
    """UDP probes to closed ports of ``address`` with a fixed TTL; ICMP answers arrive on
    the socket's error queue (``IP_RECVERR``) naming the probe's port and who answered."""

    def _send(self, seq: int) -> None:
        self.sock.sendto(PAYLOAD, (self.address, HOP_PORT_BASE + seq))

    def read(self, deadline_ns: int) -> None:
        while True:
            try:
                _data, anc, _flags, addr = self.sock.recvmsg(512, 512, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            stamp = _timestamp_ns(anc) or time.time_ns()
            for level, kind, payload in anc:
                if level != socket.IPPROTO_IP or kind != IP_RECVERR or len(payload) < 16:
                    continue
                _errno, origin, icmp_type, icmp_code = struct.unpack("@IBBB", payload[:7])
                if origin != SO_EE_ORIGIN_ICMP:
                    continue
                offender = socket.inet_ntoa(payload[20:24]) if len(payload) >= 24 else "?"
                what = {ICMP_TIME_EXCEEDED: "time_exceeded", ICMP_UNREACH: "unreachable"}.get(icmp_type, f"icmp{icmp_type}")
                port = addr[1] if addr else None
                if port is not None and addr[0] == self.address:
                    self._answer(port - HOP_PORT_BASE, stamp, offender, what, deadline_ns)
        while True:  # the target may answer a probe with data of its own: it is there
            try:
                self.sock.recvmsg(512, 256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return


def _answered_all(lane: _Lane, at_least: int, now_ns: int) -> bool:
    """``lane`` answered every probe old enough to have been answered (three times its
    slowest answer, at least 50 ms), and there are at least ``at_least`` of them."""
    slowest = max(lane.rtt_ms.values(), default=0.0)
    grace_ns = int(max(50.0, 3 * slowest) * 1e6)
    aged = [seq for seq, sent in enumerate(lane.sent) if now_ns - sent > grace_ns]
    return len(aged) >= at_least and all(seq in lane.rtt_ms for seq in aged)


def _timestamps(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)


def _udp_lane(address: str, ttl: int) -> _UdpLane:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        _timestamps(sock)
        sock.bind(("0.0.0.0", 0))
    except OSError:
        sock.close()
        raise
    return _UdpLane(sock, address, ttl)


def open_gateway_lane(gateway: str) -> tuple[_Lane | None, str | None, str | None]:
    """(lane, method, note): a ping socket, else a raw socket, else UDP (port unreachable)."""
    notes = []
    for kind, method, cls in ((socket.SOCK_DGRAM, "icmp", _PingLane), (socket.SOCK_RAW, "icmp-raw", _RawLane)):
        try:
            sock = socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP)
        except OSError as exc:
            if method == "icmp":
                notes.append(f"no ICMP ping socket ({exc.strerror or exc}; net.ipv4.ping_group_range does not admit this process's groups)")
            else:
                notes.append(f"no raw ICMP socket ({exc.strerror or exc}: needs CAP_NET_RAW)")
            continue
        sock.setblocking(False)
        _timestamps(sock)
        return cls(sock, gateway, None), method, "; ".join(notes) or None
    try:
        lane = _udp_lane(gateway, 64)
    except OSError as exc:
        notes.append(f"no UDP socket either ({exc.strerror or exc})")
        return None, None, "; ".join(notes)
    notes.append("UDP probes to a closed port instead: most routers rate-limit their port-unreachable answers, so loss here reads high")
    return lane, "udp", "; ".join(notes)


# -- the run --------------------------------------------------------------------------------------


async def probe_path(
    target: str, gateway: str | None, *, count: int, interval_s: float, hop_every: int, max_hops: int, timeout_s: float,
    stop: asyncio.Event | None = None,
    clean_after: int = 0,
) -> PathProbe:
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    deadline_ns = int(timeout_s * 1e9)
    gateway_lane, gateway_method, gateway_note = (None, None, None)
    if gateway:
        gateway_lane, gateway_method, gateway_note = open_gateway_lane(gateway)
    hops: list[_UdpLane] = []
    hops_note = None
    try:
        for ttl in range(1, max_hops + 1):
            hops.append(_udp_lane(target, ttl))
    except OSError as exc:
        hops_note = f"no UDP socket for the hop probes ({exc.strerror or exc})"
        for lane in hops:
            lane.close()
        hops = []
    state = {"target_ttl": None, "limit": max_hops}

    def on_hop_answer(lane: _Lane, by: str, kind: str) -> None:
        if by == target and lane.ttl is not None:
            if state["target_ttl"] is None or lane.ttl < state["target_ttl"]:
                state["target_ttl"] = lane.ttl
                state["limit"] = min(state["limit"], lane.ttl)

    for lane in hops:
        lane.on_answer = on_hop_answer
    lanes: list[_Lane] = ([gateway_lane] if gateway_lane else []) + list(hops)
    for lane in lanes:
        loop.add_reader(lane.sock.fileno(), lane.read, deadline_ns)
    try:
        stopped_early = None
        for i in range(count):
            if stop is not None and stop.is_set() and i >= max(1, count // 4):
                stopped_early = "asked"
                break
            if clean_after and state["target_ttl"] is not None and i % 10 == 0:
                checked = [(gateway_lane, clean_after * hop_every)] if gateway_lane else []
                checked += [(lane, clean_after) for lane in hops if lane.ttl is not None and lane.ttl <= state["target_ttl"]]
                if all(_answered_all(lane, at_least, time.time_ns()) for lane, at_least in checked):
                    stopped_early = "clean"
                    break
            elapsed = time.monotonic() - started
            if state["target_ttl"] is None and elapsed > TARGET_WAIT_S:
                answered = [lane.ttl for lane in hops if lane.rtt_ms and lane.ttl is not None]
                state["limit"] = min(max_hops, (max(answered) + 1) if answered else 1)
            if gateway_lane:
                gateway_lane.send()
            for lane in hops if i % hop_every == 0 else ():
                if lane.ttl is not None and lane.ttl <= state["limit"]:
                    lane.send()
            pause = started + (i + 1) * interval_s - time.monotonic()
            await asyncio.sleep(max(0.0, pause))
        end_by = time.monotonic() + timeout_s
        while time.monotonic() < end_by:
            now = time.time_ns()
            if not any(lane.pending(now, deadline_ns) for lane in lanes):
                break
            await asyncio.sleep(0.01)
        for lane in lanes:  # what arrived in the last moments
            lane.read(deadline_ns)
    finally:
        for lane in lanes:
            with contextlib.suppress(Exception):
                loop.remove_reader(lane.sock.fileno())
            lane.close()
    limit = state["target_ttl"] or state["limit"]
    hop_series = tuple(lane.series(deadline_ns) for lane in hops if lane.ttl is not None and lane.ttl <= limit)
    return PathProbe(
        target=target,
        gateway=gateway_lane.series(deadline_ns) if gateway_lane else None,
        gateway_method=gateway_method,
        gateway_note=gateway_note,
        hops=hop_series,
        hops_method="udp" if hops else None,
        hops_note=hops_note,
        target_ttl=state["target_ttl"],
        duration_ms=round((time.monotonic() - started) * 1000.0, 1),
        stopped_early=stopped_early,
    )
