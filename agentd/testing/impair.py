"""Delay, jitter and loss on a real kernel path, without netem: a userspace NFQUEUE stage.

This kernel has no ``netem``. A router namespace hands the packets it forwards to this
stage through NFQUEUE (an ``iptables-nft`` rule in its ``mangle FORWARD`` chain: the
native nft ``queue`` statement is not built here, the xtables ``NFQUEUE`` target is);
the stage holds each packet and gives the kernel its verdict (accept) later, so the
packet goes on through the same namespace, conntrack, NAT and nftables rules as any
other. The netlink protocol is spoken directly (``NETLINK_NETFILTER``, ``nfnetlink_queue``
messages): no C binding, no extra Python package; the Debian package ``iptables`` (for
``iptables-nft``) is in tests/run's PACKAGES.

Placing it on a link::

    from agentd.testing.impair import Impairment

    # on a netlab router: packets arriving on "lan" (agent -> server) get 80 ms plus a
    # uniform 0-30 ms each, no reordering within an RTP stream
    with Impairment.attach(lab.router, iif="lan", delay_ms=80, jitter_ms=30) as stage:
        ...                                  # run the probe
        truth = stage.stats()                # what was applied: ImpairStats
        stage.set(delay_ms=200, loss_pct=5)  # change it on the fly (applies to new packets)
        stage.reset()                        # forget the records (a new run)

    lab.impair("up", delay_ms=20)           # the same on Netlab's router (up: iif lan, down: iif wan)

``attach(namespace, *, iif=None, oif=None, protocol="all", delay_ms=0, jitter_ms=0,
loss_pct=0, order="stream", seed=None)``: ``namespace`` is any namespace that forwards
(a router of a netlab-style topology; the stage runs in it with ``ip netns exec``); ``iif``
and ``oif`` select the link and direction (the interface the packet came in on / leaves
by, as iptables ``-i``/``-o``; give one or both); ``protocol`` ``"udp"``, ``"tcp"``,
``"icmp"`` or ``"all"``. Several stages may sit in one namespace (each binds its own
queue number) or on several routers at once. Only forwarded packets are seen: to impair
a host's own link, place the stage on the router at the other end of it.

What a packet gets:

- ``delay_ms`` + an independent uniform draw from ``[0, jitter_ms]``;
- dropped with probability ``loss_pct`` / 100 (independent; nftables' ``numgen`` rules in
  netlab do the same in the kernel);
- ``order``: ``"stream"`` (default): never released before an earlier packet of its
  stream, where a stream is the 5-tuple plus, for RTP (plain or inside TURN ChannelData),
  its SSRC: an RTP stream is never reordered, two streams on one socket may overtake
  each other. ``"flow"``: FIFO per 5-tuple (TCP: every segment of a connection in order).
  ``"none"``: independent delays, packets reorder as they fall.

No reordering means a packet that drew a short delay behind one that drew a long one
waits for it: its delay is ``max(own draw, previous release - own arrival)``. While a
stream's packets are spaced farther apart than ``jitter_ms`` (an RTP stream's 20 ms
against a uniform 0-18 ms) that never happens, the delays stay independent, and the RFC
3550 jitter (the mean of ``|D|``, the difference of consecutive packets' transit times,
that the running estimate converges to) is the uniform's ``E|X1 - X2| = jitter_ms / 3``
(6 ms for 0-18 ms). Wider than the spacing, waiting makes consecutive delays alike and
the jitter comes out below ``jitter_ms / 3``. So the truth of a run is not assumed: the
stage records the delay each packet really got (from its arrival at the stage to the
verdict, the stage's own scheduling late-ness included) and :meth:`Impairment.stats`
gives per stream the mean ``|D|`` of consecutive packets and the median delay.

Bounded: the stage holds at most ``maxlen`` packets (the kernel's queue length; beyond
it the kernel drops, which ``stats().kernel_overflow`` would show as missing packets);
every wait has a deadline; the stage exits when its controller's pipe closes, and
:meth:`Impairment.close` removes the iptables rule first and releases what it still
holds. A stage process killed hard leaves its rule with ``--queue-bypass``: packets pass
unimpaired, none is lost to a dead queue.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import json
import os
import random
import select
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Iterator, Literal, Sequence

Order = Literal["stream", "flow", "none"]
Protocol = Literal["udp", "tcp", "icmp", "all"]

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_PAYLOAD = 1, 2, 10
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQNL_CFG_CMD_BIND, NFQNL_CFG_CMD_UNBIND = 1, 2
NFQNL_COPY_PACKET = 2
NF_DROP, NF_ACCEPT = 0, 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
NLMSG_HDR = struct.Struct("=IHHII")
NFGEN = struct.Struct("=BBH")  # family, version, res_id (big-endian queue number, packed by hand)
NLA = struct.Struct("=HH")

QUEUE_RANGE = range(100, 164)
"""Queue numbers the stage tries, first free one wins (per namespace)."""
STARTUP_S = 10.0
STOP_S = 5.0
COMMAND_S = 5.0


class ImpairError(RuntimeError):
    """The stage could not be placed or answered wrongly (the message names what)."""


# -- the stage (runs inside the namespace) ------------------------------------------------------------


def _attr(kind: int, data: bytes) -> bytes:
    raw = NLA.pack(NLA.size + len(data), kind) + data
    return raw + bytes(-len(raw) % 4)


def _message(kind: int, queue: int, attrs: bytes, *, flags: int = NLM_F_REQUEST, seq: int = 0) -> bytes:
    body = NFGEN.pack(socket.AF_UNSPEC, 0, 0)[:2] + struct.pack("!H", queue) + attrs
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, flags, seq, 0) + body


def _attrs(buf: bytes, offset: int, end: int) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    while offset + NLA.size <= end:
        length, kind = NLA.unpack_from(buf, offset)
        if length < NLA.size:
            break
        found[kind & 0x3FFF] = buf[offset + NLA.size : offset + length]
        offset += (length + 3) & ~3
    return found


class _Queue:
    """One bound nfnetlink_queue: packets in, verdicts out."""

    def __init__(self, queue_range: Sequence[int] = QUEUE_RANGE, maxlen: int = 8192) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE (root)
        self.seq = 0
        self.queue = -1
        for number in queue_range:
            if self._config(number, _attr(NFQA_CFG_CMD, struct.pack("!BBH", NFQNL_CFG_CMD_BIND, 0, socket.AF_INET))) == 0:
                self.queue = number
                break
        if self.queue < 0:
            raise ImpairError(f"no free NFQUEUE number in {queue_range.start}-{queue_range.stop - 1}")
        params = _attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0xFFFF, NFQNL_COPY_PACKET))
        maxlen_attr = _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", maxlen))
        for attrs in (params, maxlen_attr):
            err = self._config(self.queue, attrs)
            if err:
                raise ImpairError(f"configuring NFQUEUE {self.queue} failed: {os.strerror(err)}")
        self.sock.setblocking(False)

    def _config(self, queue: int, attrs: bytes) -> int:
        """Send one config message and return the kernel's errno (0: done)."""
        self.seq += 1
        self.sock.setblocking(True)
        self.sock.settimeout(2.0)
        self.sock.send(_message(NFQNL_MSG_CONFIG, queue, attrs, flags=NLM_F_REQUEST | NLM_F_ACK, seq=self.seq))
        while True:
            buf = self.sock.recv(65536)
            offset = 0
            while offset + NLMSG_HDR.size <= len(buf):
                length, kind, _, seq, _ = NLMSG_HDR.unpack_from(buf, offset)
                if kind == NLMSG_ERROR and seq == self.seq:
                    return -struct.unpack_from("=i", buf, offset + NLMSG_HDR.size)[0]
                offset += (length + 3) & ~3

    def fileno(self) -> int:
        return self.sock.fileno()

    def packets(self) -> list[tuple[int, bytes]]:
        """Every packet waiting on the socket now: (packet id, the IP packet)."""
        out: list[tuple[int, bytes]] = []
        while True:
            try:
                buf = self.sock.recv(1 << 18)
            except BlockingIOError:
                return out
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # the socket overflowed: the kernel still holds them (they time out as drops)
                    continue
                raise
            offset = 0
            while offset + NLMSG_HDR.size <= len(buf):
                length, kind, _, _, _ = NLMSG_HDR.unpack_from(buf, offset)
                if length < NLMSG_HDR.size:
                    break
                if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    attrs = _attrs(buf, offset + NLMSG_HDR.size + NFGEN.size, offset + length)
                    header = attrs.get(NFQA_PACKET_HDR)
                    if header is not None and len(header) >= 4:
                        out.append((struct.unpack_from("!I", header)[0], attrs.get(NFQA_PAYLOAD, b"")))
                offset += (length + 3) & ~3

    def verdicts(self, items: Sequence[tuple[int, int]]) -> None:
        """Send (packet id, verdict) for each, batched into few sendto calls."""
        chunk = 256
        for start in range(0, len(items), chunk):
            data = b"".join(
                _message(NFQNL_MSG_VERDICT, self.queue, _attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, pid))) for pid, verdict in items[start : start + chunk]
            )
            while True:
                try:
                    self.sock.send(data)
                    break
                except BlockingIOError:
                    select.select([], [self.sock], [], 0.01)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.setblocking(True)
            self.sock.send(_message(NFQNL_MSG_CONFIG, self.queue, _attr(NFQA_CFG_CMD, struct.pack("!BBH", NFQNL_CFG_CMD_UNBIND, 0, socket.AF_INET))))
        self.sock.close()


def stream_key(packet: bytes, order: Order) -> tuple:
    """The stream a packet belongs to: its 5-tuple, plus the SSRC of RTP (plain, or in TURN
    ChannelData) for ``order="stream"``. Anything unparsable is one stream of its own."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return ("other",)
    ihl = (packet[0] & 0x0F) * 4
    proto = packet[9]
    src, dst = packet[12:16], packet[16:20]
    if proto not in (6, 17) or len(packet) < ihl + 4:
        return (proto, src, dst)
    sport, dport = struct.unpack_from("!HH", packet, ihl)
    key: tuple = (proto, src, sport, dst, dport)
    if order == "stream" and proto == 17:
        payload = packet[ihl + 8 :]
        for start in (0, 4):  # plain RTP; RTP inside ChannelData (channel 0x4000-0x7FFF, length)
            if start == 4 and not (len(payload) >= 4 and 0x40 <= payload[0] <= 0x7F):
                continue
            rtp = payload[start:]
            if len(rtp) >= 12 and rtp[0] >> 6 == 2 and not 192 <= rtp[1] <= 223:  # V=2, not RTCP
                return key + (struct.unpack_from("!I", rtp, 8)[0],)
    return key


@dataclass
class _Settings:
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    order: Order = "stream"


class _Stage:
    def __init__(self, queue: _Queue, settings: _Settings, seed: int | None) -> None:
        self.queue = queue
        self.settings = settings
        self.rng = random.Random(seed)
        self.held: list[tuple[float, int, int]] = []  # (release at, tie-break, packet id)
        self.meta: dict[int, tuple[tuple, float, float]] = {}  # packet id -> (stream, arrived, planned)
        self.last_release: dict[tuple, float] = {}
        self.records: dict[tuple, list[float]] = {}  # stream -> delays (ms) in arrival order
        self.lateness_ms: list[float] = []
        self.packets = 0
        self.dropped = 0
        self.count = 0

    def take(self, now: float) -> None:
        drops = []
        s = self.settings
        for pid, packet in self.queue.packets():
            self.packets += 1
            if s.loss_pct > 0 and self.rng.random() * 100.0 < s.loss_pct:
                self.dropped += 1
                drops.append((pid, NF_DROP))
                continue
            key = stream_key(packet, s.order)
            planned = now + (s.delay_ms + self.rng.uniform(0.0, s.jitter_ms)) / 1000.0
            if s.order != "none":
                planned = max(planned, self.last_release.get(key, 0.0))
                self.last_release[key] = planned
            self.count += 1
            heapq.heappush(self.held, (planned, self.count, pid))
            self.meta[pid] = (key, now, planned)
            self.records.setdefault(key, [])  # arrival order: the slot is filled at release
        if drops:
            self.queue.verdicts(drops)

    def release(self, now: float, *, everything: bool = False) -> None:
        due = []
        while self.held and (everything or self.held[0][0] <= now + 0.0002):
            _, _, pid = heapq.heappop(self.held)
            due.append(pid)
        if not due:
            return
        self.queue.verdicts([(pid, NF_ACCEPT) for pid in due])
        sent = time.monotonic()
        for pid in due:
            key, arrived, planned = self.meta.pop(pid)
            self.records[key].append((sent - arrived) * 1000.0)
            self.lateness_ms.append(max(0.0, (sent - planned) * 1000.0))

    def next_timeout(self, now: float) -> float:
        return 0.5 if not self.held else max(0.0, self.held[0][0] - now)

    def stats(self) -> dict:
        # releases of one stream happen in arrival order (ordered modes), so each list is in
        # arrival order; with order="none" the list is in release order, still the order a
        # receiver sees them, which is what RFC 3550's consecutive packets are
        streams = []
        for key, delays in self.records.items():
            if not delays:
                continue
            diffs = [abs(b - a) for a, b in zip(delays, delays[1:])]
            streams.append({"key": repr(key), "packets": len(delays), "mean_ms": sum(delays) / len(delays), "pairs": len(diffs), "sum_abs_d_ms": sum(diffs)})
        every = sorted(d for delays in self.records.values() for d in delays)
        late = sorted(self.lateness_ms)
        return {
            "packets": self.packets,
            "dropped": self.dropped,
            "held": len(self.held),
            "released": len(every),
            "delays_ms": _summary(every),
            "late_ms": _summary(late),
            "streams": streams,
            "settings": vars(self.settings),
        }

    def reset(self) -> None:
        self.records = {key: [] for key in self.records}
        self.lateness_ms = []
        self.packets = self.dropped = 0


def _summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    n = len(values)
    return {"n": n, "min": values[0], "median": values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2, "p95": values[min(n - 1, int(0.95 * n))], "max": values[-1], "mean": sum(values) / n}


def _apply(settings: _Settings, changes: dict) -> None:
    for name in ("delay_ms", "jitter_ms", "loss_pct"):
        if name in changes and changes[name] is not None:
            value = float(changes[name])
            if not 0 <= value <= (100 if name == "loss_pct" else 60_000):
                raise ImpairError(f"{name} out of range: {value!r}")
            setattr(settings, name, value)
    if changes.get("order") is not None:
        if changes["order"] not in ("stream", "flow", "none"):
            raise ImpairError(f"order must be stream, flow or none, not {changes['order']!r}")
        settings.order = changes["order"]


def _realtime() -> None:
    """Run the stage ahead of the machine's other work: a real-time priority (root), else the
    highest nice. A loaded machine would otherwise add its own scheduling delay to every
    packet's. The loop always blocks in select, and the kernel's RT throttling caps it."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    except (OSError, AttributeError):
        with contextlib.suppress(OSError):
            os.nice(-20)


def stage_main(argv: Sequence[str]) -> int:
    """The stage process: ``python -m agentd.testing.impair '<json settings>'`` in the namespace.

    Commands on stdin, one JSON object a line: ``{"cmd": "stats"|"reset"|"set"|"stop", ...}``;
    one JSON answer a line on stdout. Stdin closing is ``stop``.
    """
    settings = _Settings()
    config = json.loads(argv[0]) if argv else {}
    _realtime()
    _apply(settings, config)
    queue = _Queue(maxlen=int(config.get("maxlen", 8192)))
    stage = _Stage(queue, settings, config.get("seed"))
    out = sys.stdout
    out.write(json.dumps({"ready": True, "queue": queue.queue}) + "\n")
    out.flush()
    stdin = sys.stdin.buffer.raw if hasattr(sys.stdin.buffer, "raw") else sys.stdin.buffer
    os.set_blocking(stdin.fileno(), False)
    pending = b""
    try:
        while True:
            now = time.monotonic()
            readable, _, _ = select.select([queue, stdin], [], [], stage.next_timeout(now))
            now = time.monotonic()
            if queue in readable:
                stage.take(now)
            stage.release(time.monotonic())
            if stdin in readable:
                chunk = os.read(stdin.fileno(), 65536)
                if not chunk:
                    return 0
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if not line.strip():
                        continue
                    answer: dict
                    try:
                        command = json.loads(line)
                        cmd = command.get("cmd")
                        if cmd == "stats":
                            answer = stage.stats()
                        elif cmd == "reset":
                            stage.reset()
                            answer = {"ok": True}
                        elif cmd == "set":
                            _apply(settings, command)
                            answer = {"ok": True, "settings": vars(settings)}
                        elif cmd == "stop":
                            stage.release(time.monotonic(), everything=True)
                            out.write(json.dumps(stage.stats()) + "\n")
                            out.flush()
                            return 0
                        else:
                            answer = {"error": f"unknown command {cmd!r}"}
                    except (ValueError, ImpairError, AttributeError) as exc:
                        answer = {"error": str(exc)}
                    out.write(json.dumps(answer) + "\n")
                    out.flush()
    finally:
        stage.release(time.monotonic(), everything=True)
        queue.close()


# -- the controller (the test's process) ----------------------------------------------------------------


@dataclass(frozen=True)
class StreamTruth:
    key: str
    packets: int
    mean_ms: float
    jitter_ms: float | None
    """Mean |D| of consecutive packets' delays: RFC 3550 jitter's expectation."""


@dataclass(frozen=True)
class ImpairStats:
    """What the stage really did since it started (or since :meth:`Impairment.reset`)."""

    packets: int
    dropped: int
    released: int
    delay_median_ms: float | None
    delay_mean_ms: float | None
    delay_p95_ms: float | None
    late_p95_ms: float | None
    """How much later than planned the stage released (its own scheduling; included in the delays)."""
    streams: tuple[StreamTruth, ...]

    @property
    def loss_pct(self) -> float | None:
        return None if not self.packets else 100.0 * self.dropped / self.packets

    def jitter_ms(self, min_packets: int = 2) -> float | None:
        """RFC 3550 jitter of the delays applied: mean |D| over every consecutive pair of every
        stream with at least ``min_packets`` packets (pairs weigh equally)."""
        chosen = [s for s in self.streams if s.packets >= max(2, min_packets) and s.jitter_ms is not None]
        pairs = sum(s.packets - 1 for s in chosen)
        return None if not pairs else sum(s.jitter_ms * (s.packets - 1) for s in chosen) / pairs

    @classmethod
    def from_json(cls, raw: dict) -> "ImpairStats":
        delays, late = raw.get("delays_ms", {}), raw.get("late_ms", {})
        streams = tuple(
            StreamTruth(s["key"], s["packets"], s["mean_ms"], s["sum_abs_d_ms"] / s["pairs"] if s["pairs"] else None) for s in raw.get("streams", [])
        )
        return cls(
            packets=raw["packets"],
            dropped=raw["dropped"],
            released=raw["released"],
            delay_median_ms=delays.get("median"),
            delay_mean_ms=delays.get("mean"),
            delay_p95_ms=delays.get("p95"),
            late_p95_ms=late.get("p95"),
            streams=streams,
        )


def _rule(iif: str | None, oif: str | None, protocol: Protocol) -> list[str]:
    if iif is None and oif is None:
        raise ImpairError("an impairment needs a link: give iif (the interface packets come in on), oif, or both")
    if protocol not in ("udp", "tcp", "icmp", "all"):
        raise ImpairError(f"protocol must be udp, tcp, icmp or all, not {protocol!r}")
    match = []
    for flag, name in (("-i", iif), ("-o", oif)):
        if name is not None:
            if not name or len(name) > 15 or not all(c.isalnum() or c in "-_.@" for c in name):
                raise ImpairError(f"not an interface name: {name!r}")
            match += [flag, name]
    if protocol != "all":
        match += ["-p", protocol]
    return match


def unavailable_reason() -> str | None:
    """Why a stage cannot be placed here, or None (iptables-nft with the NFQUEUE target)."""
    for tool in ("iptables", "ip"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            return f"{tool!r} is not installed (Debian packages iptables, iproute2)"
    return None


class Impairment:
    """A running stage on one link; see the module docstring. Use :meth:`attach`."""

    def __init__(self, namespace: str, match: list[str], proc: subprocess.Popen, queue: int) -> None:
        self.namespace = namespace
        self.match = match
        self.proc = proc
        self.queue = queue
        self._rule_in = False

    @classmethod
    @contextlib.contextmanager
    def attach(
        cls,
        namespace: str,
        *,
        iif: str | None = None,
        oif: str | None = None,
        protocol: Protocol = "all",
        delay_ms: float = 0.0,
        jitter_ms: float = 0.0,
        loss_pct: float = 0.0,
        order: Order = "stream",
        seed: int | None = None,
    ) -> Iterator["Impairment"]:
        stage = cls.start(namespace, iif=iif, oif=oif, protocol=protocol, delay_ms=delay_ms, jitter_ms=jitter_ms, loss_pct=loss_pct, order=order, seed=seed)
        try:
            yield stage
        finally:
            stage.close()

    @classmethod
    def start(
        cls,
        namespace: str,
        *,
        iif: str | None = None,
        oif: str | None = None,
        protocol: Protocol = "all",
        delay_ms: float = 0.0,
        jitter_ms: float = 0.0,
        loss_pct: float = 0.0,
        order: Order = "stream",
        seed: int | None = None,
    ) -> "Impairment":
        """Start the stage and insert its rule; the caller must :meth:`close` it (``attach`` does)."""
        match = _rule(iif, oif, protocol)
        _apply(_Settings(), {"delay_ms": delay_ms, "jitter_ms": jitter_ms, "loss_pct": loss_pct, "order": order})  # fail early, here
        reason = unavailable_reason()
        if reason:
            raise ImpairError(reason)
        config = json.dumps({"delay_ms": delay_ms, "jitter_ms": jitter_ms, "loss_pct": loss_pct, "order": order, "seed": seed})
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        proc = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-m", "agentd.testing.impair", config],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        stage = cls(namespace, match, proc, -1)
        try:
            ready = stage._read(STARTUP_S)
            if not ready.get("ready"):
                raise ImpairError(f"the stage in {namespace} did not start: {ready}")
            stage.queue = int(ready["queue"])
            stage._iptables("-I")
            stage._rule_in = True
        except BaseException:
            stage.close()
            raise
        return stage

    def _iptables(self, op: str) -> subprocess.CompletedProcess:
        args = ["ip", "netns", "exec", self.namespace, "iptables", "-w", "5", "-t", "mangle", op, "FORWARD", *self.match]
        args += ["-j", "NFQUEUE", "--queue-num", str(self.queue), "--queue-bypass"]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=15)
        if op == "-I" and proc.returncode != 0:
            raise ImpairError(f"iptables in {self.namespace} refused the NFQUEUE rule: {proc.stderr.strip()}")
        return proc

    def _read(self, timeout_s: float) -> dict:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            err = b""
            if self.proc.poll() is not None and self.proc.stderr is not None:
                err = self.proc.stderr.read()[-2000:]
            raise ImpairError(f"the stage in {self.namespace} gave no answer within {timeout_s:g} s" + (f": {err.decode(errors='replace').strip()}" if err else ""))
        return json.loads(line)

    def _command(self, **command) -> dict:
        if self.proc.poll() is not None or self.proc.stdin is None:
            raise ImpairError(f"the stage in {self.namespace} is not running")
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        self.proc.stdin.flush()
        answer = self._read(COMMAND_S)
        if "error" in answer:
            raise ImpairError(f"the stage in {self.namespace}: {answer['error']}")
        return answer

    def stats(self) -> ImpairStats:
        return ImpairStats.from_json(self._command(cmd="stats"))

    def reset(self) -> None:
        self._command(cmd="reset")

    def set(self, *, delay_ms: float | None = None, jitter_ms: float | None = None, loss_pct: float | None = None, order: Order | None = None) -> None:
        """Change what new packets get (packets already held keep their release time)."""
        self._command(cmd="set", delay_ms=delay_ms, jitter_ms=jitter_ms, loss_pct=loss_pct, order=order)

    def close(self) -> ImpairStats | None:
        """Remove the rule, release what is held, stop the stage; its last stats. Idempotent."""
        if self._rule_in:
            self._iptables("-D")
            self._rule_in = False
        final = None
        if self.proc.poll() is None:
            with contextlib.suppress(ImpairError, OSError, ValueError):
                final = ImpairStats.from_json(self._command(cmd="stop"))
            try:
                self.proc.wait(timeout=STOP_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_S)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        return final


if __name__ == "__main__":
    try:
        sys.exit(stage_main(sys.argv[1:]))
    except (ImpairError, OSError, ValueError) as exc:
        print(json.dumps({"ready": False, "error": str(exc)}), flush=True)
        sys.exit(1)
