"""The aiortc call: two peers in this process, a real call between them through a TURN relay.

It proves what the packet probes (:mod:`.relay_echo`) cannot: that a WebRTC call sets up
through the relay as the softphone's would (ICE, DTLS-SRTP) and carries real RTP audio
(a tone, both directions, Opus as negotiated); its RTCP figures go to ``details``.
Loss, delay and jitter come from the packet probes, which do not wait for handshakes.

    peer A ──(agent's network, up)──► TURN ──► relay ──(agent's network, down)──► peer B

Both peers are forced to relay (``iceTransportPolicy=RELAY``, ``MAX_BUNDLE``) on one TURN
url. Hard deadlines, because aiortc has none of its own that help (DESIGN.md): gathering
is bounded and its candidates are checked here (no relay candidate: fail at once rather
than hang in "new"); connecting is bounded by a deadline that follows the path (once
ICE has connected through the relay, the DTLS handshake gets until ``connect_max_s``);
closing is bounded (aioice waits for the TURN server to confirm the allocation's deletion).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fractions
import math
import ssl
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

AUDIO_MIN_FRAMES = 5
AUDIO_WAIT_S = 1.0
"""Once the probes are done, how long the call may still wait for its first 100 ms of audio each way."""

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
class CallResult:
    """What the aiortc call showed on one relay transport."""

    transport: str
    connected: bool
    connect_ms: float | None
    state: str
    """ICE and DTLS state when it ended ("ICE completed, DTLS/SRTP connected")."""
    reason: str | None = None
    error: str | None = None
    audio_a_to_b: AudioFlow | None = None
    audio_b_to_a: AudioFlow | None = None


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


def _state(pc: RTCPeerConnection) -> str:
    return f"ICE {pc.iceConnectionState}, DTLS/SRTP {pc.connectionState}"


async def _wait_connected(pc_a: RTCPeerConnection, pc_b: RTCPeerConnection, *, base_s: float, max_s: float) -> None:
    """Until both peers are connected (ICE and DTLS), one failed, or the deadline.

    The deadline follows the path: ``base_s`` for ICE to get a check through the relay;
    once it has (ICE connected), the DTLS handshake is making progress and gets until
    ``max_s`` (on a lossy path its retransmissions take seconds, and cutting it would
    report a working UDP path as broken).
    """
    started = time.monotonic()
    deadline = started + base_s
    while True:
        states = (pc_a.connectionState, pc_b.connectionState)
        if states == ("connected", "connected"):
            return
        if "failed" in states or "closed" in states:
            raise ProbeError(f"the call through the relay failed ({_state(pc_a)})", reason="protocol")
        now = time.monotonic()
        if now >= deadline:
            ice_up = any(pc.iceConnectionState in ("connected", "completed") for pc in (pc_a, pc_b))
            if ice_up and deadline < started + max_s:
                deadline = started + max_s
                continue
            raise ProbeTimeout(f"call not connected within {now - started:.1f} s ({_state(pc_a)})")
        await asyncio.sleep(0.02)


async def run_call(target: RelayTarget, *, connect_timeout_s: float, connect_max_s: float, hold: asyncio.Event) -> CallResult:
    """Connect two relay-only peers through ``target``, carry audio until ``hold`` is set, and report.

    Never raises for the path's own failures: they come back as ``connected=False`` with
    a FINDINGS.md ``reason``. Cancelling it closes both peers.
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
    started = time.monotonic()
    try:
        pc_a.addTrack(tracks[0])
        pc_b.addTrack(tracks[1])

        @pc_a.on("track")
        def on_track_a(track) -> None:
            sinks["a"].consume(track)

        @pc_b.on("track")
        def on_track_b(track) -> None:
            sinks["b"].consume(track)

        try:
            if target.ssl_context is not None:
                _use_ssl_context(pc_a, target.ssl_context)
                _use_ssl_context(pc_b, target.ssl_context)
            # both allocations at once; offer/answer then find their candidates ready
            await asyncio.gather(
                _gather_relay(pc_a, target, connect_timeout_s),
                _gather_relay(pc_b, target, connect_timeout_s),
            )
            await pc_a.setLocalDescription(await pc_a.createOffer())
            await pc_b.setRemoteDescription(pc_a.localDescription)
            await _permit_each_other(pc_a, pc_b, gather_s=time.monotonic() - started)
            await pc_b.setLocalDescription(await pc_b.createAnswer())
            await pc_a.setRemoteDescription(pc_b.localDescription)
            left = connect_timeout_s - (time.monotonic() - started)
            await _wait_connected(pc_a, pc_b, base_s=max(0.1, left), max_s=max(0.1, connect_max_s - (time.monotonic() - started)))
        except ProbeError as exc:
            return CallResult(target.transport, False, None, _state(pc_a), reason=exc.reason, error=str(exc))
        connect_ms = (time.monotonic() - started) * 1000.0
        await hold.wait()
        # audio both ways before the figures, unless it does not come within AUDIO_WAIT_S
        audio_by = time.monotonic() + AUDIO_WAIT_S
        while not all(sink.frames >= AUDIO_MIN_FRAMES for sink in sinks.values()) and time.monotonic() < audio_by:
            await asyncio.sleep(0.02)
        audio = await _audio_flows(pc_a, pc_b, sinks)
        return CallResult(target.transport, True, connect_ms, _state(pc_a), audio_a_to_b=audio[0], audio_b_to_a=audio[1])
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
