"""The media engine: two aiortc peers in this process, a call between them through a TURN relay.

What the softphone does, seen from the agent's PC: its audio leaves through the TURN
relay's allocation and comes back the same way. Here both ends are local:

    peer A ──(agent's network, up)──► TURN ──► relay ──(agent's network, down)──► peer B
    peer A ◄─(agent's network, down)── TURN ◄── relay ◄─(agent's network, up)──── peer B

Both peers are forced to relay (``iceTransportPolicy=RELAY``, ``MAX_BUNDLE``) on one TURN
url, so every packet crosses the agent's network twice each way. They carry real RTP
audio (a tone, both directions, Opus as negotiated) and timestamped probes about every
20 ms over an unordered, ``maxRetransmits=0`` data channel that peer B echoes at once.
Both peers share one clock, so each probe gives its round-trip time and both one-way
transit times.

Hard deadlines, because aiortc has none of its own that help (DESIGN.md): gathering is
bounded and its candidates are checked here (no relay candidate: fail at once rather
than hang in "new"); connecting is bounded; closing is bounded (aioice waits for the
TURN server to confirm the allocation's deletion).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fractions
import math
import ssl
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
)
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError
from av import AudioFrame

from agentd.errors import ProbeError, ProbeTimeout

PROBE = struct.Struct("!Id")
"""A probe: sequence number, send time (this process's monotonic clock, seconds)."""

SCTP_HANDSHAKE_RTO_S = 1.0
SCTP_RTO_MAX_S = 60.0
"""Retransmission timer of the data channel's SCTP handshake (see :func:`_quicken_sctp_setup`)."""

CLOSE_TIMEOUT_S = 1.0
"""How long closing both peers may take; aioice waits for the TURN server to confirm each
allocation's deletion and a dead server would hold that for a minute."""


@dataclass(frozen=True)
class RelayTarget:
    """One TURN url to carry the media: how to reach it and with which credentials."""

    url: str
    transport: str  # "udp" | "tcp" | "tls"
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    def ice_server(self) -> RTCIceServer:
        """The RTCIceServer aiortc needs: it uses only the first TURN url, so one url per attempt."""
        if ":" in self.host:
            raise ProbeError(f"{self.url}: aiortc cannot use IPv6 literal TURN hosts", reason="protocol")
        if self.transport == "tls":
            url = f"turns:{self.host}:{self.port}?transport=tcp"
        else:
            url = f"turn:{self.host}:{self.port}?transport={self.transport}"
        return RTCIceServer(urls=[url], username=self.username, credential=self.password)


@dataclass(frozen=True)
class ProbePlan:
    """How long and how often to probe, and the deadlines of the steps before."""

    duration_s: float = 3.0
    interval_ms: float = 20.0
    connect_timeout_s: float = 2.0
    drain_s: float = 0.5
    """After the last probe, how long to wait for late echoes (capped at a few RTTs)."""

    @property
    def probe_count(self) -> int:
        return max(1, int(round(self.duration_s * 1000.0 / self.interval_ms)))


@dataclass(frozen=True)
class ProbeRecord:
    """One probe: when it left (s after the first), and what came back (None: lost)."""

    seq: int
    sent_s: float
    forward_ms: float | None
    """A → relay → B (one crossing up, one down)."""
    echo_rtt_ms: float | None
    """A → relay → B → relay → A (two crossings each way)."""


@dataclass(frozen=True)
class AudioFlow:
    """RTP audio one way, as the receiving peer saw it and RTCP reported it."""

    frames_received: int
    peak_level: float
    """Highest absolute decoded sample, 0..1 (the tone is sent at 0.25; 0 means silence arrived)."""
    packets_sent: int | None
    packets_lost: int | None
    rtcp_rtt_ms: float | None
    rtcp_jitter_ms: float | None


@dataclass(frozen=True)
class PathRun:
    """What one media attempt measured."""

    transport: str
    url: str
    connect_ms: float
    records: tuple[ProbeRecord, ...]
    audio_a_to_b: AudioFlow
    audio_b_to_a: AudioFlow
    ended_early: str | None = None
    """Why probing stopped before its time (the connection failed), else None."""


class ToneTrack(AudioStreamTrack):
    """A 400 Hz tone at a quarter of full scale, 8 kHz mono, 20 ms frames: real audio to encode."""

    SAMPLE_RATE = 8000
    FRAME_SAMPLES = 160
    _FRAME = array.array(
        "h", (int(8192 * math.sin(2 * math.pi * 400 * i / 8000)) for i in range(160))
    ).tobytes()  # 400 Hz fits 8 whole periods in 160 samples: one buffer repeats cleanly

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if hasattr(self, "_timestamp"):
            self._timestamp += self.FRAME_SAMPLES
            wait = self._start + self._timestamp / self.SAMPLE_RATE - time.time()
            await asyncio.sleep(wait)
        else:
            self._start = time.time()
            self._timestamp = 0
        frame = AudioFrame(format="s16", layout="mono", samples=self.FRAME_SAMPLES)
        frame.planes[0].update(self._FRAME)
        frame.pts = self._timestamp
        frame.sample_rate = self.SAMPLE_RATE
        frame.time_base = fractions.Fraction(1, self.SAMPLE_RATE)
        return frame


class _AudioSink:
    """Reads a received track to its end: counts frames and keeps the peak level."""

    def __init__(self) -> None:
        self.frames = 0
        self.peak = 0
        self.task: asyncio.Task | None = None

    def consume(self, track) -> None:
        self.task = asyncio.ensure_future(self._run(track))

    async def _run(self, track) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()
                self.frames += 1
                if self.frames % 5 == 0:  # a sample of frames is enough for a level
                    samples = array.array("h", bytes(frame.planes[0]))
                    if samples:
                        self.peak = max(self.peak, max(samples), -min(samples))


def _gatherer(pc: RTCPeerConnection):
    """The one ICE gatherer of a MAX_BUNDLE peer (the first transceiver's transport)."""
    return pc.getTransceivers()[0].receiver.transport.transport.iceGatherer


def _use_ssl_context(pc: RTCPeerConnection, context: ssl.SSLContext) -> None:
    """Give aioice our TLS context for ``turns:`` (a private CA from ``[ice] ca_file``).

    aiortc passes ``turn_ssl=True`` to aioice, which hands it to
    ``loop.create_connection(ssl=...)``: the system's default trust. aioice accepts an
    SSLContext there too; it reads the attribute when it gathers, so setting it on the
    gatherer's connection before gathering is enough.
    """
    connection = _gatherer(pc)._connection
    if not hasattr(connection, "turn_ssl"):  # pragma: no cover - guards an aioice change
        raise ProbeError("this aioice has no turn_ssl attribute; cannot use [ice] ca_file", reason="tls")
    connection.turn_ssl = context


async def _gather_relay(pc: RTCPeerConnection, target: RelayTarget, timeout_s: float) -> None:
    """Gather under our deadline and insist on a relay candidate (aiortc would hang in "new")."""
    gatherer = _gatherer(pc)
    try:
        async with asyncio.timeout(timeout_s):
            await gatherer.gather()
    except TimeoutError:
        raise ProbeTimeout(f"no TURN allocation from {target.url} within {timeout_s:g} s") from None
    if not any(c.type == "relay" for c in gatherer.getLocalCandidates()):
        raise ProbeError(f"no relay candidate from {target.url} (the allocation failed)", reason="protocol")


def _quicken_sctp_setup(pc: RTCPeerConnection) -> None:
    """Retry the data channel's SCTP handshake as RFC 9260 does: after 1 s, then backing off.

    aiortc retries INIT and COOKIE-ECHO every ``SCTP_RTO_INITIAL`` (3 s) without backing
    off, and gives up after 8 retries. On a lossy path one lost handshake chunk then costs
    3 s of the check's deadline; retrying every 0.5-1 s without backing off instead gives
    up within seconds while the far end's DTLS handshake is still retransmitting (measured
    at 20 % loss each way). RTO.Initial 1 s doubling to 60 s (RFC 9260 §6.3.3 E2) is quick
    on a clean path and patient on a bad one. Guarded: without these attributes aiortc
    keeps its own timer.
    """
    sctp = pc.sctp
    if sctp is None or not hasattr(sctp, "_rto") or not hasattr(sctp, "_t1_expired"):
        return
    sctp._rto = SCTP_HANDSHAKE_RTO_S
    expire = sctp._t1_expired

    def back_off() -> None:
        sctp._rto = min(sctp._rto * 2, SCTP_RTO_MAX_S)  # before aiortc schedules the next retry with it
        expire()

    sctp._t1_expired = back_off  # aiortc looks the timer callback up on the instance each time


def _relay_transport(pc: RTCPeerConnection):
    """The relay candidate's address and its aioice TurnTransport (aioice internals, guarded)."""
    for protocol in getattr(_gatherer(pc)._connection, "_protocols", ()):
        candidate = getattr(protocol, "local_candidate", None)
        if candidate is not None and candidate.type == "relay":
            return (candidate.host, candidate.port), protocol.transport
    return None, None


async def _permit_each_other(pc_a: RTCPeerConnection, pc_b: RTCPeerConnection, *, gather_s: float) -> None:
    """Bind a TURN channel on each allocation for the other's relay address before ICE starts.

    Without it the first peer to start its checks sends into an allocation that has no
    permission for it yet; the server drops the check and aioice retries 0.5 s later,
    which adds half a second to every run. The softphone's far end is not behind a relay,
    so this delay is an artefact of the two-peer set-up, not something to measure. A
    one-byte datagram (first byte 0: neither STUN, DTLS nor RTP, so ignored) binds it.
    """
    address_a, transport_a = _relay_transport(pc_a)
    address_b, transport_b = _relay_transport(pc_b)
    if transport_a is None or transport_b is None:
        return  # internals moved: correct, just half a second slower
    transport_a.sendto(b"\x00", address_b)
    transport_b.sendto(b"\x00", address_a)
    # a channel binding is one round trip; gathering took about two (401, then success)
    await asyncio.sleep(min(0.3, max(0.005, gather_s / 2)))


async def _wait_open(channels, pc_a: RTCPeerConnection, pc_b: RTCPeerConnection, timeout_s: float) -> None:
    """Until both ends' data channels are open (both SCTP ends established), or fail/deadline."""
    loop = asyncio.get_running_loop()
    failed = loop.create_future()

    def on_state() -> None:
        for pc in (pc_a, pc_b):
            if pc.connectionState == "failed" and not failed.done():
                failed.set_exception(ProbeError("ICE/DTLS failed through the relay", reason="protocol"))

    def opened(channel) -> asyncio.Future:
        future = loop.create_future()
        if channel.readyState == "open":
            future.set_result(None)
        else:
            channel.on("open", lambda: future.done() or future.set_result(None))
        return future

    pc_a.on("connectionstatechange", on_state)
    pc_b.on("connectionstatechange", on_state)
    waiting = asyncio.gather(*(opened(c) for c in channels))
    try:
        done, _ = await asyncio.wait({waiting, failed}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if failed in done:
            failed.result()  # raises the ProbeError
        if waiting not in done:
            raise ProbeTimeout(
                f"relay path not connected within {timeout_s:g} s (ICE {pc_a.iceConnectionState}, "
                f"DTLS/SCTP {pc_a.connectionState})"
            )
    finally:
        waiting.cancel()
        if not failed.done():
            failed.cancel()


async def run_media_path(target: RelayTarget, plan: ProbePlan) -> PathRun:
    """One attempt: connect two relay-only peers through ``target`` and probe the path.

    Raises :class:`ProbeError` (``reason`` from FINDINGS.md) when the path cannot be set up.
    """
    configuration = RTCConfiguration(
        iceServers=[target.ice_server()],
        iceTransportPolicy=RTCIceTransportPolicy.RELAY,
        bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
    )
    pc_a = RTCPeerConnection(configuration)
    pc_b = RTCPeerConnection(configuration)
    sinks = {"a": _AudioSink(), "b": _AudioSink()}
    tracks = [ToneTrack(), ToneTrack()]
    try:
        started = time.monotonic()
        pc_a.addTrack(tracks[0])
        pc_b.addTrack(tracks[1])
        # negotiated: no DCEP handshake to lose; unordered, no retransmission: like RTP
        channel_a = pc_a.createDataChannel("probes", ordered=False, maxRetransmits=0, negotiated=True, id=0)
        channel_b = pc_b.createDataChannel("probes", ordered=False, maxRetransmits=0, negotiated=True, id=0)

        @pc_a.on("track")
        def on_track_a(track) -> None:
            sinks["a"].consume(track)

        @pc_b.on("track")
        def on_track_b(track) -> None:
            sinks["b"].consume(track)

        _quicken_sctp_setup(pc_a)
        _quicken_sctp_setup(pc_b)
        if target.ssl_context is not None:
            _use_ssl_context(pc_a, target.ssl_context)
            _use_ssl_context(pc_b, target.ssl_context)
        # both allocations at once; offer/answer then find their candidates ready
        await asyncio.gather(
            _gather_relay(pc_a, target, plan.connect_timeout_s),
            _gather_relay(pc_b, target, plan.connect_timeout_s),
        )
        await pc_a.setLocalDescription(await pc_a.createOffer())
        await pc_b.setRemoteDescription(pc_a.localDescription)
        await _permit_each_other(pc_a, pc_b, gather_s=time.monotonic() - started)
        await pc_b.setLocalDescription(await pc_b.createAnswer())
        await pc_a.setRemoteDescription(pc_b.localDescription)
        remaining = max(0.1, plan.connect_timeout_s - (time.monotonic() - started))
        await _wait_open((channel_a, channel_b), pc_a, pc_b, remaining)
        connect_ms = (time.monotonic() - started) * 1000.0

        records, ended_early = await _probe(channel_a, channel_b, pc_a, plan)
        audio = await _audio_flows(pc_a, pc_b, sinks)
        return PathRun(
            transport=target.transport,
            url=target.url,
            connect_ms=connect_ms,
            records=records,
            audio_a_to_b=audio[0],
            audio_b_to_a=audio[1],
            ended_early=ended_early,
        )
    finally:
        for track in tracks:
            track.stop()
        for sink in sinks.values():
            if sink.task:
                sink.task.cancel()
        await close_peers(pc_a, pc_b)


async def close_peers(*peers: RTCPeerConnection) -> None:
    """Close every peer, bounded: what aioice has not finished by then goes on in the background."""
    closing = [asyncio.ensure_future(pc.close()) for pc in peers]
    done, pending = await asyncio.wait(closing, timeout=CLOSE_TIMEOUT_S)
    for task in done:
        task.exception()  # retrieved: a failure to close must not be logged as unhandled


async def _probe(channel_a, channel_b, pc_a: RTCPeerConnection, plan: ProbePlan) -> tuple[tuple[ProbeRecord, ...], str | None]:
    """Send ``plan.probe_count`` probes from A at a steady pace; B echoes each at once."""
    count = plan.probe_count
    interval = plan.interval_ms / 1000.0
    sent_at: list[float | None] = [None] * count
    arrived_b: list[float | None] = [None] * count
    echoed: list[float | None] = [None] * count
    all_back = asyncio.get_running_loop().create_future()
    received = 0

    @channel_b.on("message")
    def on_b(message) -> None:
        if isinstance(message, bytes) and len(message) == PROBE.size:
            seq, _ = PROBE.unpack(message)
            if seq < count and arrived_b[seq] is None:
                arrived_b[seq] = time.monotonic()
                channel_b.send(message)

    @channel_a.on("message")
    def on_a(message) -> None:
        nonlocal received
        if isinstance(message, bytes) and len(message) == PROBE.size:
            seq, _ = PROBE.unpack(message)
            if seq < count and echoed[seq] is None and sent_at[seq] is not None:
                echoed[seq] = time.monotonic()
                received += 1
                if received == count and not all_back.done():
                    all_back.set_result(None)

    ended_early = None
    start = time.monotonic()
    for seq in range(count):
        if pc_a.connectionState in ("failed", "closed"):
            ended_early = f"the connection went {pc_a.connectionState} after {seq} probes"
            break
        # absolute schedule: a late wake-up does not push every later probe back
        delay = start + seq * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.monotonic()
        sent_at[seq] = now
        channel_a.send(PROBE.pack(seq, now))
    rtts = [(e - s) * 1000.0 for s, e in zip(sent_at, echoed) if s is not None and e is not None]
    # late echoes: a few round trips (at least 100 ms), never more than drain_s
    drain = min(plan.drain_s, max(0.1, 4 * max(rtts, default=plan.drain_s * 250) / 1000.0))
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(drain):
            await all_back
    records = tuple(
        ProbeRecord(
            seq=seq,
            sent_s=sent_at[seq] - start,
            forward_ms=None if arrived_b[seq] is None else (arrived_b[seq] - sent_at[seq]) * 1000.0,
            echo_rtt_ms=None if echoed[seq] is None else (echoed[seq] - sent_at[seq]) * 1000.0,
        )
        for seq in range(count)
        if sent_at[seq] is not None
    )
    return records, ended_early


async def _audio_flows(pc_a: RTCPeerConnection, pc_b: RTCPeerConnection, sinks: dict[str, _AudioSink]) -> tuple[AudioFlow, AudioFlow]:
    """A→B and B→A audio: what each receiver decoded, and each sender's RTCP view."""
    stats_a, stats_b = await asyncio.gather(pc_a.getStats(), pc_b.getStats())
    return _flow(stats_a, sinks["b"]), _flow(stats_b, sinks["a"])


def _flow(sender_stats: Any, receiver_sink: _AudioSink) -> AudioFlow:
    sent = remote = None
    for stat in sender_stats.values():
        if stat.type == "outbound-rtp" and stat.kind == "audio":
            sent = stat
        elif stat.type == "remote-inbound-rtp" and stat.kind == "audio":
            remote = stat
    return AudioFlow(
        frames_received=receiver_sink.frames,
        peak_level=round(receiver_sink.peak / 32768.0, 3),
        packets_sent=getattr(sent, "packetsSent", None),
        packets_lost=getattr(remote, "packetsLost", None),
        rtcp_rtt_ms=None if remote is None or remote.roundTripTime is None else round(remote.roundTripTime * 1000.0, 1),
        # RTP clock of the negotiated codec: Opus 48 kHz
        rtcp_jitter_ms=None if remote is None or remote.jitter is None else round(remote.jitter / 48.0, 1),
    )
