"""The client side of ``path.load``: a session with the load service, the load flows, and
the round-trip probes that run under them.

Everything here has a deadline; the load flows count every byte they hand to the socket
and never pass their share of the cap (``Content-Length`` and ``bytes=`` are the shares).
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import struct
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aioice import stun

from agentd.errors import ProbeError

from .server import CHUNK, PREFIX

_BLOCK = bytes(CHUNK)


@dataclass(frozen=True)
class Target:
    """Where the load service is: ``http(s)://host:port[/base]``."""

    scheme: str
    host: str
    port: int
    base: str

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http:// or https:// url with a host")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ValueError(f"{url!r} has a bad port") from None
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/") + PREFIX)

    @property
    def shown(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


@dataclass(frozen=True)
class Busy:
    """The service answered 429: this many tests run already (a site's other PCs)."""

    retry_after_s: float


@dataclass
class Counter:
    uploaded: int = 0
    downloaded: int = 0
    flows_done: int = 0
    last_flow_end: float = 0.0


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a reset: the kernel drops what is still in the send buffer, so the load
    stops when the check says (a plain close would go on sending it after the deadline)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class LoadClient:
    """HTTP/1.1 over asyncio streams, one connection per request (no library: exact byte counts)."""

    def __init__(self, target: Target, *, token: str | None, ssl_context: ssl.SSLContext | None, timeout_s: float) -> None:
        self.target = target
        self.token = token
        self.ssl = ssl_context if target.scheme == "https" else None
        self.timeout_s = timeout_s

    async def _open(self, timeout_s: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.open_connection(self.target.host, self.target.port, ssl=self.ssl)
        except TimeoutError:
            raise ProbeError(f"load service {self.target.shown}: no connection within {timeout_s:g} s", reason="timeout") from None
        except ssl.SSLError as exc:
            raise ProbeError(f"load service {self.target.shown}: TLS failed: {exc.reason or exc}", reason="tls") from None
        except OSError as exc:
            reason = "refused" if isinstance(exc, ConnectionRefusedError) else "unreachable"
            raise ProbeError(f"load service {self.target.shown}: {exc.strerror or exc}", reason=reason) from None

    def _head(self, method: str, path: str, extra: dict[str, str] | None = None) -> bytes:
        lines = [f"{method} {self.target.base}{path} HTTP/1.1", f"Host: {self.target.host}:{self.target.port}", "User-Agent: agentd-path.load"]
        if self.token:
            lines.append(f"Authorization: Bearer {self.token}")
        lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def _response(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ")[1])
        except (IndexError, ValueError):
            raise ProbeError(f"load service {self.target.shown}: not an HTTP answer", reason="protocol") from None
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        body = await reader.readexactly(min(length, 65536)) if length else b""
        return status, headers, body

    async def _small(self, method: str, path: str) -> tuple[int, dict[str, str], dict]:
        reader, writer = await self._open(self.timeout_s)
        try:
            async with asyncio.timeout(self.timeout_s):
                writer.write(self._head(method, path, {"Content-Length": "0", "Connection": "close"}))
                await writer.drain()
                status, headers, body = await self._response(reader)
        except TimeoutError:
            raise ProbeError(f"load service {self.target.shown}: no answer within {self.timeout_s:g} s", reason="timeout") from None
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
            raise ProbeError(f"load service {self.target.shown}: the connection broke ({type(exc).__name__})", reason="protocol") from None
        finally:
            writer.close()
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            data = {}
        return status, headers, data if isinstance(data, dict) else {}

    async def start(self) -> tuple[str, int] | Busy:
        """A session id and its byte budget per direction, or :class:`Busy`."""
        status, headers, data = await self._small("POST", "/session")
        if status == 429:
            try:
                wait = float(headers.get("retry-after", "5"))
            except ValueError:
                wait = 5.0
            return Busy(max(0.0, min(wait, 3600.0)))
        if status == 401:
            raise ProbeError(f"load service {self.target.shown} refused the token (401): check [loaded_latency] token", reason="auth")
        if status != 200 or not isinstance(data.get("session"), str):
            raise ProbeError(f"load service {self.target.shown} answered {status} to a new test: {data.get('error', 'no session')}", reason="protocol")
        budget = data.get("max_bytes")
        return data["session"], int(budget) if isinstance(budget, int) else 0

    async def end(self, session: str) -> dict:
        """End the session; the service's own byte counts (``uploaded``: what arrived), or {}."""
        try:
            status, _, data = await self._small("DELETE", f"/session?session={session}")
        except ProbeError:
            return {}  # the service expires it anyway
        return data if status == 200 else {}

    async def upload(self, session: str, size: int, end_at: float, counter: Counter) -> None:
        """POST ``size`` bytes, stopping at ``end_at`` (the connection is then cut)."""
        try:
            reader, writer = await self._open(max(0.1, end_at - time.monotonic()))
        except ProbeError:
            return
        try:
            writer.write(self._head("POST", f"/upload?session={session}", {"Content-Length": str(size), "Content-Type": "application/octet-stream"}))
            sent = 0
            while sent < size:
                left = end_at - time.monotonic()
                if left <= 0:
                    break
                n = min(CHUNK, size - sent)
                writer.write(_BLOCK[:n])
                sent += n
                counter.uploaded += n
                async with asyncio.timeout(left):
                    await writer.drain()
        except (TimeoutError, ConnectionError, OSError):
            pass
        finally:
            _reset(writer)
            counter.flows_done += 1
            counter.last_flow_end = time.monotonic()

    async def download(self, session: str, size: int, end_at: float, counter: Counter) -> None:
        """GET ``size`` bytes, reading until ``end_at`` or the end of the body."""
        try:
            reader, writer = await self._open(max(0.1, end_at - time.monotonic()))
        except ProbeError:
            return
        try:
            writer.write(self._head("GET", f"/download?session={session}&bytes={size}"))
            async with asyncio.timeout(max(0.05, end_at - time.monotonic())):
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
                length = next((int(line.split(":", 1)[1]) for line in head.split("\r\n") if line.startswith("content-length:")), 0)
                got = 0
                while got < min(length, size):  # never more than asked, whatever the service says
                    data = await reader.read(min(CHUNK, size - got))
                    if not data:
                        break
                    got += len(data)
                    counter.downloaded += len(data)
        except (TimeoutError, ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            _reset(writer)
            counter.flows_done += 1
            counter.last_flow_end = time.monotonic()


# -- round-trip probes ----------------------------------------------------------------------------


@dataclass
class Sample:
    sent: float
    rtt_ms: float | None = None


@dataclass
class Prober:
    """Round trips every ``interval_s`` until stopped; every sample keeps its send time."""

    interval_s: float
    samples: list[Sample] = field(default_factory=list)

    def answered(self, start: float, end: float) -> list[float]:
        return [s.rtt_ms for s in self.samples if start <= s.sent < end and s.rtt_ms is not None]

    def lost(self, start: float, end: float) -> int:
        return sum(1 for s in self.samples if start <= s.sent < end and s.rtt_ms is None)

    def outstanding(self) -> int:
        return sum(1 for s in self.samples if s.rtt_ms is None)


class _StunProtocol(asyncio.DatagramProtocol):
    def __init__(self, pending: dict[bytes, Sample]) -> None:
        self.pending = pending
        self.error: Exception | None = None

    def datagram_received(self, data: bytes, addr) -> None:
        now = time.monotonic()
        try:
            message = stun.parse_message(data)
        except Exception:  # noqa: BLE001 - not an answer
            return
        sample = self.pending.pop(message.transaction_id, None)
        if sample is not None:
            sample.rtt_ms = round((now - sample.sent) * 1000.0, 2)

    def error_received(self, exc: Exception) -> None:
        self.error = exc


async def run_stun_prober(prober: Prober, address: str, port: int, stop: asyncio.Event, drain_s: float) -> None:
    """STUN Binding requests on one connected UDP socket, one every ``interval_s`` (no
    retransmission: a request without an answer is a lost probe); after ``stop``, answers
    still on their way are awaited for up to ``drain_s``."""
    loop = asyncio.get_running_loop()
    pending: dict[bytes, Sample] = {}
    transport, protocol = await loop.create_datagram_endpoint(lambda: _StunProtocol(pending), remote_addr=(address, port))
    try:
        while not stop.is_set():
            message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
            sample = Sample(time.monotonic())
            pending[message.transaction_id] = sample
            prober.samples.append(sample)
            transport.sendto(bytes(message))
            if len(prober.samples) > 100_000:  # bounded whatever the caller does
                break
            try:
                await asyncio.wait_for(stop.wait(), prober.interval_s)
            except TimeoutError:
                pass
        drain_end = time.monotonic() + drain_s
        while pending and time.monotonic() < drain_end:
            await asyncio.sleep(0.02)
    finally:
        transport.close()


async def run_tcp_prober(prober: Prober, host: str, port: int, stop: asyncio.Event, drain_s: float) -> None:
    """The draft's "foreign" probe: a new TCP connection's handshake time, every ``interval_s``."""

    async def one(sample: Sample) -> None:
        try:
            async with asyncio.timeout(drain_s):
                _, writer = await asyncio.open_connection(host, port)
            sample.rtt_ms = round((time.monotonic() - sample.sent) * 1000.0, 2)
            writer.transport.abort()
        except (TimeoutError, OSError):
            pass

    tasks: set[asyncio.Task] = set()
    try:
        while not stop.is_set() and len(prober.samples) < 100_000:
            sample = Sample(time.monotonic())
            prober.samples.append(sample)
            task = asyncio.ensure_future(one(sample))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            try:
                await asyncio.wait_for(stop.wait(), prober.interval_s)
            except TimeoutError:
                pass
        if tasks:
            await asyncio.wait(tasks, timeout=drain_s)
    finally:
        for task in tasks:
            task.cancel()
