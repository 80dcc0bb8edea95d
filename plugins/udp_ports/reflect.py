"""``agentd reflect``: a small UDP echo service for testing destination ports, and its client.

An organisation runs ``agentd reflect --listen HOST --ports A-B`` in its data centre;
the ``udp.ports`` check then sends probes from sampled local media ports to sampled
ports of that range and counts the echoes.

Bounded by design, so it cannot be abused as a reflector/amplifier:
- it answers only datagrams that start with :data:`MAGIC` and are at most
  ``max_payload`` bytes; the answer is the same bytes (never larger than the request);
- a token bucket caps replies per second in all and per source address;
- at most ``max_sockets`` ports (one socket each), checked against the file limit.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import time
from dataclasses import dataclass, field

from agentd.errors import UsageError

try:
    import resource  # Unix only; elsewhere the file limit is not checked ahead
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

MAGIC = b"AGENTD-REFLECT/1 "
"""Every probe starts with this; anything else is ignored."""


@dataclass
class TokenBucket:
    rate: float
    burst: float
    tokens: float = 0.0
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class ReflectorStats:
    replied: int = 0
    ignored: int = 0
    rate_limited: int = 0


class Reflector:
    """The echo service: one datagram socket per port, shared limits."""

    MAX_TRACKED_SOURCES = 4096
    """Per-source buckets kept at most (oldest dropped): memory stays bounded under a flood."""

    def __init__(self, *, max_rate: float = 500.0, per_source_rate: float = 100.0, max_payload: int = 512) -> None:
        self.max_payload = max_payload
        self.total = TokenBucket(max_rate, max(1.0, max_rate))
        self.per_source_rate = per_source_rate
        self.sources: dict[str, TokenBucket] = {}
        self.stats = ReflectorStats()
        self.transports: list[asyncio.DatagramTransport] = []

    def answer(self, data: bytes, addr, transport: asyncio.DatagramTransport) -> None:
        if len(data) > self.max_payload or not data.startswith(MAGIC):
            self.stats.ignored += 1
            return
        now = time.monotonic()
        bucket = self.sources.get(addr[0])
        if bucket is None:
            if len(self.sources) >= self.MAX_TRACKED_SOURCES:
                self.sources.pop(next(iter(self.sources)))
            bucket = self.sources[addr[0]] = TokenBucket(self.per_source_rate, max(1.0, self.per_source_rate))
        if not bucket.take(now) or not self.total.take(now):
            self.stats.rate_limited += 1
            return
        transport.sendto(data, addr)
        self.stats.replied += 1

    async def open(self, host: str, first: int, last: int, *, max_sockets: int = 2048) -> int:
        count = last - first + 1
        if count > max_sockets:
            raise UsageError(f"--ports {first}-{last} needs {count} sockets; the limit is {max_sockets} (raise it with --max-sockets)")
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0] if resource is not None else None
        if soft is not None and soft != resource.RLIM_INFINITY and count + 64 > soft:
            raise UsageError(f"--ports {first}-{last} needs {count} sockets but the open-file limit is {soft} (ulimit -n)")
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        reflector = self

        class Port(asyncio.DatagramProtocol):
            def connection_made(self, transport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr) -> None:
                reflector.answer(data, addr, self.transport)

            def error_received(self, exc: Exception) -> None:  # ICMP from a departed client: nothing to do
                pass

        try:
            for port in range(first, last + 1):
                transport, _ = await loop.create_datagram_endpoint(Port, local_addr=(host, port), family=family)
                self.transports.append(transport)
        except OSError as exc:
            self.close()
            raise UsageError(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from None
        return len(self.transports)

    def close(self) -> None:
        for transport in self.transports:
            transport.close()
        self.transports.clear()


async def serve(
    host: str,
    first: int | None,
    last: int | None,
    *,
    duration_s: float | None,
    max_rate: float,
    per_source_rate: float,
    max_payload: int,
    max_sockets: int,
    load=None,
    http_port: int | None = None,
) -> int:
    """The UDP echo on ``first``-``last`` (when given) and the HTTP load service ``load`` on
    ``http_port`` (when given), until SIGINT/SIGTERM or ``duration_s``."""
    reflector = Reflector(max_rate=max_rate, per_source_rate=per_source_rate, max_payload=max_payload)
    if first is not None and last is not None:
        opened = await reflector.open(host, first, last, max_sockets=max_sockets)
        print(f"agentd reflect: listening on {host} ports {first}-{last} ({opened} sockets), pid {os.getpid()}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    http = None
    try:
        if load is not None and http_port is not None:
            from agentd_plugins.loaded_latency.server import serve_http

            http = asyncio.ensure_future(serve_http(load, host, http_port, stop=stop))
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({http, stopped}, return_when=asyncio.FIRST_COMPLETED, timeout=duration_s)
            stopped.cancel()
            if http.done():
                http.result()  # it could not listen: the UsageError names why
        elif duration_s is None:
            await stop.wait()
        else:
            try:
                await asyncio.wait_for(stop.wait(), duration_s)
            except TimeoutError:
                pass
    finally:
        stop.set()
        if http is not None and not http.done():
            await asyncio.wait({http}, timeout=5.0)
        reflector.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if first is not None:
        s = reflector.stats
        print(f"agentd reflect: stopped; replied {s.replied}, ignored {s.ignored}, rate-limited {s.rate_limited}", flush=True)
    return 0


# -- the client side (used by the udp.ports check) -------------------------------------------------------


class _EchoClient(asyncio.DatagramProtocol):
    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.answer: asyncio.Future = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if data == self.payload and not self.answer.done():
            self.answer.set_result(time.monotonic())

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable on the connected socket
        if not self.answer.done():
            self.answer.set_exception(exc)


async def echo_probe(address: str, port: int, *, local_port: int | None, timeout_s: float, resend_s: float = 0.3) -> float:
    """Send a probe to a reflector and wait for its echo, resending every ``resend_s``.

    Returns the round-trip time in ms (from the first send). Raises ``TimeoutError``,
    ``ConnectionRefusedError`` or ``OSError``.
    """
    loop = asyncio.get_running_loop()
    payload = MAGIC + secrets.token_hex(8).encode()
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    local = (("::" if family == socket.AF_INET6 else "0.0.0.0"), local_port) if local_port else None
    transport, client = await loop.create_datagram_endpoint(lambda: _EchoClient(payload), remote_addr=(address, port), local_addr=local, family=family)
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                transport.sendto(payload)
                done, _ = await asyncio.wait({client.answer}, timeout=resend_s)
                if done:
                    return round((client.answer.result() - started) * 1000.0, 1)
    finally:
        if client.answer.done() and not client.answer.cancelled():
            client.answer.exception()
        transport.close()
