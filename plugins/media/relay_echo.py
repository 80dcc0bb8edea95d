"""Packets through the TURN relay as RTP would travel: RTP-sized probes as TURN ChannelData.

Two allocations on the same TURN url (two sockets of this PC, ends A and B), a channel
bound on each for the other's relayed address, and then RTP-sized packets at the
softphone's cadence (one every ``interval_ms`` per stream) both ways::

    A ──(agent's network, up)──► TURN: relay A ─► relay B ──(agent's network, down)──► B
    B echoes each packet at once, the same way back.

Every pass through the relay is one *leg*: one crossing of the agent's network up and one
down, which is exactly the softphone's round trip to the media edge. A probe gives one
leg, and a second (its echo) when the first arrived; loss is lost legs / legs tried, so
it needs no conversion. Both ends share this process's clock: each leg's transit time
is measured directly.

Nothing here waits for a handshake: probes start as soon as both allocations and both
channel bindings exist, and they are counted from the first packet. Probing stops when
the sequential test of :func:`quality.decide_loss` is done (pre-shift), at the plan's
fixed duration (full profile), at the cap, or when nothing at all crossed the relay
within ``no_packet_s`` (this transport cannot carry packets).

No aiortc here: this module loads with the check, the aiortc call loads in a thread.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

from agentd.errors import ProbeError, ProbeTimeout
from agentd.osdeps import rxstamp

from .quality import LossDecision, decide_loss

RTP = struct.Struct("!BBHII")
"""RTP fixed header (RFC 3550): V=2, payload type, sequence, timestamp, SSRC."""
SENT = struct.Struct("!d")
RTP_SIZE = 92
"""An Opus packet of 20 ms at 32 kbit/s with its RTP header (12 + 80 bytes)."""
OPUS_PT = 111
DRAIN_MIN_S = 0.2
STALL_S = 0.010
"""The sender waking this much later than planned means the event loop was held up."""
SEND_SLACK_S = 0.001
"""A send call that took longer than this (a thread switch, a busy PC between the clock
read and the packet leaving) leaves its leg's start uncertain: out of delay and jitter."""
SSRC_BASE = 0x5A6E0000
"""Stream ``i`` uses SSRC ``SSRC_BASE + i``: streams ``0..n-1`` start at A, ``n..2n-1`` at B."""


@dataclass(frozen=True)
class EchoPlan:
    """How to probe: cadence, how many streams, and when to stop."""

    interval_ms: float = 20.0
    streams: int = 2
    """RTP-like streams each way (A→B and B→A), each one packet every ``interval_ms``."""
    max_s: float = 5.0
    """The cap: probing never lasts longer."""
    sequential: bool = True
    """Stop as soon as the loss decision is done; False: probe for ``max_s`` (full profile)."""
    threshold: float = 0.01
    precision: float = 0.025
    min_legs: int = 100
    no_packet_s: float = 1.5
    """Nothing crossed the relay for this long from the first send: this transport cannot carry packets."""
    drain_s: float = 0.5
    """After the last send, how long late packets are waited for (capped at a few transit times)."""


@dataclass(frozen=True)
class EchoRecord:
    """One probe: its stream and sequence, when it left (s after the first), and each leg's transit."""

    stream: int
    seq: int
    sent_s: float
    forward_ms: float | None
    """First leg (origin → relay → other end); None: lost."""
    back_ms: float | None
    """The echo's leg back; None: lost, or never sent because the first leg was lost."""
    stalled: bool = False
    """Its transit times say more about this process than about the network (a send call
    that took over SEND_SLACK_S: a thread switch between the clock read and the packet
    leaving; without kernel receive stamps also an arrival read while the event loop was
    held up), so delay and jitter leave it out. It still counts for loss."""


@dataclass(frozen=True)
class EchoRun:
    """What one transport's packet probing measured."""

    transport: str
    url: str
    streams: int
    records: tuple[EchoRecord, ...]
    decision: LossDecision
    stopped: str
    """``decided``, ``cap``, ``duration`` (fixed, full profile), ``deadline``, ``no_packets`` or ``closed``."""
    setup_ms: float
    """From the start of both allocations to the first probe (allocations and channel bindings)."""
    probing_ms: float

    @property
    def carried(self) -> bool:
        """Whether any packet crossed the relay."""
        return any(r.forward_ms is not None for r in self.records)


class _End:
    """One allocation's receiver: aioice hands it each ChannelData payload."""

    def __init__(self, prober: "_Prober", name: str) -> None:
        self.prober = prober
        self.name = name

    def datagram_received(self, data: bytes, addr) -> None:
        self.prober.received(self.name, data)

    def connection_lost(self, exc) -> None:
        self.prober.closed(self.name)

    def error_received(self, exc) -> None:  # pragma: no cover - aioice does not forward it
        pass


def _socket_of(protocol):
    """The socket under an aioice TURN protocol's transport, or None."""
    transport = getattr(protocol, "transport", None)
    return transport.get_extra_info("socket") if transport is not None else None


def _channel_frame(protocol, peer: tuple[str, int], payload: bytes) -> None:
    """Send ``payload`` to ``peer`` as ChannelData on the channel bound for it (synchronous)."""
    channel = protocol.peer_to_channel[peer]
    protocol._send(struct.pack("!HH", channel, len(payload)) + payload)  # aioice pads it on streams


class _Prober:
    def __init__(self, relay_a, relay_b, plan: EchoPlan) -> None:
        self.plan = plan
        self.protocols = {"a": relay_a.protocol, "b": relay_b.protocol}
        self.peers = {"a": relay_b.protocol.relayed_address, "b": relay_a.protocol.relayed_address}
        # arrivals are read from the kernel's receive timestamps where the platform has them
        # (agentd.osdeps.rxstamp): how long this process took to read a probe is not the network's
        self.sockets = {name: _socket_of(protocol) for name, protocol in self.protocols.items()}
        # UDP only: a TCP socket's stamp is not per segment (a stream's arrivals are read with the clock)
        datagram = all(getattr(sock, "type", None) == socket.SOCK_DGRAM for sock in self.sockets.values())
        self.kernel_stamps = datagram and all(rxstamp.enable(sock) for sock in self.sockets.values())
        # per probe (stream, seq): [sent, arrived at the other end, arrived back, echo sent]
        self.probes: dict[tuple[int, int], list[float | None]] = {}
        self.order: list[tuple[int, int]] = []
        self.arrivals = 0
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.closed_end: str | None = None
        self.stalls: list[tuple[float, float]] = []
        self.uncertain: set[tuple[tuple[int, int], int]] = set()  # (probe, leg 1|2) whose send took > SEND_SLACK_S
        self.padding = bytes(RTP_SIZE - RTP.size - SENT.size)

    def owner(self, stream: int) -> str:
        return "a" if stream < self.plan.streams else "b"

    def send(self, stream: int, seq: int) -> None:
        name = self.owner(stream)
        packet = RTP.pack(0x80, OPUS_PT, seq & 0xFFFF, (seq * 960) & 0xFFFFFFFF, SSRC_BASE + stream) + SENT.pack(time.monotonic()) + self.padding
        key = (stream, seq)
        now = time.monotonic()
        self.probes[key] = [now, None, None, None]
        self.order.append(key)
        try:
            _channel_frame(self.protocols[name], self.peers[name], packet)
        except (OSError, KeyError, AttributeError):  # a closed socket: counted as lost, ended by closed()
            pass
        if time.monotonic() - now > SEND_SLACK_S:
            self.uncertain.add((key, 1))

    def received(self, at: str, data: bytes) -> None:
        now = (rxstamp.last_arrival(self.sockets[at]) if self.kernel_stamps else None) or time.monotonic()
        if len(data) < RTP.size + SENT.size:
            return  # the one-byte datagram that bound the channel, or not ours
        _, _, seq16, timestamp, ssrc = RTP.unpack_from(data)
        stream = ssrc - SSRC_BASE
        if not 0 <= stream < 2 * self.plan.streams:
            return
        seq = timestamp // 960  # the full sequence (seq16 wraps after 21 min; timestamps do not here)
        record = self.probes.get((stream, seq))
        if record is None:
            return
        if self.owner(stream) == at:  # our own probe, echoed back
            if record[1] is not None and record[2] is None:
                record[2] = now
                self._transit(now - (record[3] or record[1]))
        elif record[1] is None:  # the other end's probe: note it and echo it at once
            record[1] = now
            self.arrivals += 1
            self._transit(now - record[0])
            record[3] = echoed = time.monotonic()  # the echo's leg starts when it leaves, not when its probe was taken in
            try:
                _channel_frame(self.protocols[at], self.peers[at], data)
            except (OSError, KeyError, AttributeError):
                pass
            if time.monotonic() - echoed > SEND_SLACK_S:
                self.uncertain.add(((stream, seq), 2))

    def closed(self, name: str) -> None:
        self.closed_end = self.closed_end or name

    def _transit(self, seconds: float) -> None:
        """Smoothed transit and its variation, as TCP smooths RTT (RFC 6298)."""
        if self.srtt is None:
            self.srtt, self.rttvar = seconds, seconds / 2
        else:
            self.rttvar += (abs(self.srtt - seconds) - self.rttvar) / 4
            self.srtt += (seconds - self.srtt) / 8

    def horizon(self) -> float:
        """How old a leg must be to count as lost when nothing came: TCP's retransmission
        timeout over the leg transit (srtt + 4 rttvar), at least 50 ms, at most ``drain_s``.
        A leg later than that is counted lost while probing, and found again in the final count."""
        if self.srtt is None:
            return self.plan.drain_s
        return min(self.plan.drain_s, max(0.05, self.srtt + 4 * self.rttvar))

    def legs(self, settled_before: float | None = None) -> tuple[int, int]:
        """(lost, tried) over legs whose outcome is known by ``settled_before`` (None: all)."""
        lost = tried = 0
        for key in self.order:
            sent, there, back, _ = self.probes[key]
            if settled_before is not None and sent > settled_before:
                break  # sends are in order: later ones are not settled either
            tried += 1
            if there is None:
                lost += 1
                continue
            if settled_before is not None and there > settled_before:
                continue  # its echo left too recently to count either way
            tried += 1
            if back is None:
                lost += 1
        return lost, tried

    def decision(self, settled_before: float | None = None) -> LossDecision:
        lost, tried = self.legs(settled_before)
        return decide_loss(lost, tried, threshold=self.plan.threshold, precision=self.plan.precision, min_tried=self.plan.min_legs)

    def all_back(self) -> bool:
        return all(r[1] is not None and r[2] is not None for r in self.probes.values())

    def stalled(self, at: float | None) -> bool:
        """Whether a packet noted at ``at`` was read late: during a stall, or just after it
        (what queued up in the socket is read in the first turns of the loop)."""
        return at is not None and any(begin <= at <= end + STALL_S for begin, end in self.stalls)

    def leg_unreliable(self, key: tuple[int, int], there: float | None, back: float | None) -> bool:
        """Whether a probe's transit times say more about this process than the network: a
        send whose clock read and departure were more than SEND_SLACK_S apart; without the
        kernel's receive stamps also an arrival read during (or just after) a stall."""
        if (key, 1) in self.uncertain or (back is not None and (key, 2) in self.uncertain):
            return True
        return not self.kernel_stamps and (self.stalled(there) or self.stalled(back))

    def records(self, start: float) -> tuple[EchoRecord, ...]:
        out = []
        for stream, seq in self.order:
            sent, there, back, echoed = self.probes[(stream, seq)]
            out.append(
                EchoRecord(
                    stream=stream,
                    seq=seq,
                    sent_s=sent - start,
                    forward_ms=None if there is None else (there - sent) * 1000.0,
                    back_ms=None if back is None or there is None else (back - (echoed or there)) * 1000.0,
                    stalled=self.leg_unreliable((stream, seq), there, back),
                )
            )
        return tuple(out)


async def bind_channels(relay_a, relay_b, *, timeout_s: float, copies: int = 3) -> None:
    """A channel (and so a permission) on each allocation for the other's relayed address.

    ``copies`` ChannelBind requests per allocation at once (the same channel for the same
    peer, which a server must accept again, RFC 8656 section 12); the first answer
    counts. On a lossy path one lost request then does not cost aioice's 0.5-1.5 s
    retransmission; on a clean one the extra answers cost a few bytes.
    """
    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(
                _bind(relay_a.protocol, relay_b.protocol.relayed_address, copies), _bind(relay_b.protocol, relay_a.protocol.relayed_address, copies)
            )
    except TimeoutError:
        raise ProbeTimeout(f"TURN channel binding not confirmed within {timeout_s:g} s") from None
    except ProbeError:
        raise
    except Exception as exc:  # noqa: BLE001 - a 403 or a closed socket: this transport cannot carry packets
        from agentd_plugins.ice.probes import probe_error

        raise probe_error(exc, "TURN channel binding", timeout_s) from None


async def _bind(protocol, peer: tuple[str, int], copies: int) -> None:
    """Bind one channel for ``peer`` on ``protocol`` and record it where aioice's send_data does."""
    channel = protocol.channel_number
    protocol.channel_number += 1
    tries = [asyncio.ensure_future(protocol.channel_bind(channel, peer)) for _ in range(max(1, copies))]
    try:
        pending = set(tries)
        error: BaseException | None = None
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is None:
                    protocol.channel_refresh_at[channel] = time.time() + protocol.channel_refresh_time
                    protocol.channel_to_peer[channel] = peer
                    protocol.peer_to_channel[peer] = channel
                    return
                error = error or task.exception()
        assert error is not None
        raise error
    finally:
        for task in tries:
            task.cancel()


async def probe(relay_a, relay_b, plan: EchoPlan, *, transport: str, url: str, setup_ms: float, end_by: float | None = None) -> EchoRun:
    """Probe between two open allocations (channels bound) until the plan says stop.

    ``end_by``: a monotonic time probing must end before (the check's own deadline).
    """
    prober = _Prober(relay_a, relay_b, plan)
    relay_a.protocol.receiver = _End(prober, "a")
    relay_b.protocol.receiver = _End(prober, "b")
    total = 2 * plan.streams
    slot = plan.interval_ms / 1000.0 / total  # streams staggered across one interval
    start = time.monotonic()
    cap = start + plan.max_s
    if end_by is not None:
        cap = min(cap, end_by)
    stopped = "duration" if not plan.sequential else "cap"
    k = 0
    awake = start
    try:
        while True:
            at = start + k * slot
            if at >= cap:
                if end_by is not None and cap == end_by and end_by < start + plan.max_s:
                    stopped = "deadline"
                break
            delay = at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            woke = time.monotonic()
            if woke - max(at, awake) > STALL_S:  # held up since it last ran
                prober.stalls.append((awake, woke))
            awake = woke
            if prober.closed_end:
                stopped = "closed"
                break
            prober.send(k % total, k // total)
            k += 1
            if k % total == 0:  # every interval: look at what is settled
                now = time.monotonic()
                if prober.arrivals == 0 and now - start >= plan.no_packet_s:
                    stopped = "no_packets"
                    break
                # nothing crossed yet: not a measurement to stop on (see no_packet_s)
                if plan.sequential and prober.arrivals and prober.decision(now - prober.horizon()).done:
                    stopped = "decided"
                    break
        if prober.arrivals == 0:
            stopped = "no_packets"
        # late packets: the final count takes every leg that left by the last send, and each
        # gets at least DRAIN_MIN_S (a few transit times, at most drain_s) to arrive; a slow
        # straggler counted lost would bias loss up on a busy PC
        last_send = time.monotonic()
        drain_end = last_send + (min(plan.drain_s, max(DRAIN_MIN_S, 3 * prober.horizon())) if prober.arrivals else 0.0)
        while time.monotonic() < drain_end and not prober.all_back() and not prober.closed_end:
            await asyncio.sleep(0.01)
        probing_ms = (time.monotonic() - start) * 1000.0
        return EchoRun(
            transport=transport,
            url=url,
            streams=plan.streams,
            records=prober.records(start),
            decision=prober.decision(last_send),
            stopped=stopped,
            setup_ms=setup_ms,
            probing_ms=probing_ms,
        )
    finally:
        relay_a.protocol.receiver = None
        relay_b.protocol.receiver = None


def summary_of(run: EchoRun) -> dict[str, Any]:
    """A short dict of one transport's packet figures (for a fallback report's ``details.udp``)."""
    lost, tried = run.decision.lost, run.decision.tried
    return {
        "transport": run.transport,
        "probes_sent": len(run.records),
        "legs_tried": tried,
        "legs_lost": lost,
        "loss_pct": round(100.0 * lost / tried, 2) if tried else None,
        "stopped": run.stopped,
        "probing_ms": round(run.probing_ms, 1),
    }
