"""STUN bindings and TURN allocations with hard deadlines, and a precise reason when they fail.

aioice's ``stun.Transaction`` retransmits for 63.5 s on a silent server and its TURN
client has no timeout at all, so every call here runs under the caller's deadline.
UDP sockets are *connected*: an ICMP port-unreachable then arrives as
``ConnectionRefusedError`` in under a millisecond instead of costing the whole deadline.

Failures come back as :class:`agentd.errors.ProbeError` whose ``reason`` is one of
plugins/FINDINGS.md's reasons (``timeout``, ``refused``, ``unreachable``, ``auth``,
``forbidden``, ``tls_untrusted``, ``tls``, ``protocol``, ``dns``); the ``*_result``
functions turn them into result rows and never raise.

    binding = await stun_binding(parse_ice_url("stun:192.0.2.1:3478"), "udp", timeout_s=2)
    allocation = await turn_allocation(endpoint, timeout_s=2, ca_file=None)  # allocated and released
    async with open_allocation(endpoint, timeout_s=2) as relay: ...          # kept while inside
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
import struct
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import AsyncIterator

from aioice import stun
from aioice.turn import TurnClientTcpProtocol, TurnClientUdpProtocol

from agentd.errors import ProbeError, ProbeTimeout
from agentd.net import resolve
from agentd.tls import client_context, peek_certificate

from . import IceEndpoint
from .urls import IceUrl

RELEASE_TIMEOUT_S = 1.0
"""How long a TURN allocation's release (REFRESH lifetime 0) may take before the socket is closed anyway."""

# STUN error codes that mean "the server will not give you an allocation" (RFC 8656)
_FORBIDDEN_CODES = {403, 486, 508}
_UNREACHABLE_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN, errno.EADDRNOTAVAIL}


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


def format_address(addr: tuple | None) -> str | None:
    if not addr:
        return None
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- errors -------------------------------------------------------------------------------


def probe_error(exc: BaseException, where: str, timeout_s: float) -> ProbeError:
    """Name why a probe to ``where`` failed, as a :class:`ProbeError` with a FINDINGS reason."""
    if isinstance(exc, ProbeError):
        return exc
    if isinstance(exc, TimeoutError):
        return ProbeTimeout(f"{where}: no answer within {timeout_s:g} s")
    if isinstance(exc, stun.TransactionTimeout):
        return ProbeTimeout(f"{where}: no answer (STUN retransmissions exhausted)")
    if isinstance(exc, stun.TransactionFailed):
        code, text = exc.response.attributes.get("ERROR-CODE", (0, "error"))
        text = str(text).rstrip("\x00").strip()  # some servers pad the reason phrase with NULs
        if code == 401:
            return ProbeError(f"{where}: 401 {text}: the TURN username or credential is wrong", reason="auth", details={"code": code})
        if code in _FORBIDDEN_CODES:
            return ProbeError(f"{where}: {code} {text}: the server refused the allocation", reason="forbidden", details={"code": code})
        return ProbeError(f"{where}: the server answered {code} {text}", reason="protocol", details={"code": code})
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ProbeError(f"{where}: certificate not trusted ({exc.verify_message})", reason="tls_untrusted")
    if isinstance(exc, ssl.SSLError):
        return ProbeError(f"{where}: TLS failed ({exc.reason or exc})", reason="tls")
    if isinstance(exc, ConnectionRefusedError):
        return ProbeError(f"{where}: connection refused", reason="refused")
    if isinstance(exc, asyncio.IncompleteReadError):
        return ProbeError(f"{where}: the server closed the connection without answering", reason="protocol")
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE_ERRNOS:
        return ProbeError(f"{where}: {exc.strerror}", reason="unreachable")
    if isinstance(exc, (ConnectionError, ValueError, struct.error)):
        return ProbeError(f"{where}: unexpected answer ({exc})", reason="protocol")
    if isinstance(exc, OSError):
        return ProbeError(f"{where}: {exc.strerror or exc}", reason="unreachable", details={"errno": exc.errno})
    return ProbeError(f"{where}: {type(exc).__name__}: {exc}", reason="protocol")


async def resolve_url(url: IceUrl, *, timeout_s: float) -> str:
    """The address to use for ``url``'s host (the first the resolver gives)."""
    found = await resolve(url.host, url.port, timeout_s=timeout_s)
    return found.addresses[0]


class _Deadline:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.end = time.monotonic() + timeout_s

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())


# -- STUN over UDP ---------------------------------------------------------------------------


class StunUdpClient(asyncio.DatagramProtocol):
    """A datagram endpoint that runs STUN transactions; connected or not.

    On a connected socket, ICMP errors reach ``error_received`` and fail the waiting
    transactions at once.
    """

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.transactions: dict[bytes, stun.Transaction] = {}
        self.failure: asyncio.Future = asyncio.get_running_loop().create_future()
        self.connected = False

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.connected = transport.get_extra_info("peername") is not None

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            message = stun.parse_message(data)
        except Exception:  # noqa: BLE001 - whatever a broken or hostile server sends is just not an answer
            return
        transaction = self.transactions.get(message.transaction_id)
        if transaction is not None:
            transaction.response_received(message, addr)

    def error_received(self, exc: Exception) -> None:
        if not self.failure.done():
            self.failure.set_exception(exc)

    def connection_lost(self, exc) -> None:
        _settle(self.failure)

    def send_stun(self, message: stun.Message, addr) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self.connected:
            self.transport.sendto(bytes(message))
        else:
            self.transport.sendto(bytes(message), addr)

    async def request(self, message: stun.Message, addr: tuple[str, int], *, timeout_s: float) -> stun.Message:
        """One transaction within ``timeout_s``; ICMP errors (connected sockets) end it early."""
        transaction = stun.Transaction(message, addr, self)
        self.transactions[message.transaction_id] = transaction
        task = asyncio.ensure_future(transaction.run())
        try:
            done, _ = await asyncio.wait({task, self.failure}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                response, _ = task.result()
                return response
            if self.failure in done and not self.failure.cancelled():
                raise self.failure.exception()  # type: ignore[misc]
            raise TimeoutError
        finally:
            task.cancel()
            self.transactions.pop(message.transaction_id, None)

    def close(self) -> None:
        _settle(self.failure)
        if self.transport is not None:
            self.transport.close()


def binding_request() -> stun.Message:
    return stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)


def _mapped(response: stun.Message) -> str:
    mapped = format_address(response.attributes.get("XOR-MAPPED-ADDRESS") or response.attributes.get("MAPPED-ADDRESS"))
    if mapped is None:
        raise ValueError("a Binding success response without a mapped address")
    return mapped


@dataclass(frozen=True)
class BindingAnswer:
    mapped: str | None
    rtt_ms: float
    local: str | None
    other_address: str | None = None


async def open_udp_client(
    *, remote: tuple[str, int] | None = None, local: tuple[str, int] | None = None, timeout_s: float = 1.0
) -> StunUdpClient:
    """A :class:`StunUdpClient` on a new socket, connected to ``remote`` when given."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ((remote or local or ("",))[0] or "").count(":") else socket.AF_INET
    async with asyncio.timeout(timeout_s):
        _, client = await loop.create_datagram_endpoint(StunUdpClient, remote_addr=remote, local_addr=local, family=family)
    return client


async def stun_binding_udp(address: str, port: int, *, timeout_s: float, local_port: int | None = None, where: str | None = None) -> BindingAnswer:
    """One Binding over a connected UDP socket; raises :class:`ProbeError`."""
    where = where or format_address((address, port)) or address
    started = time.monotonic()
    client = None
    try:
        local = (("::" if ":" in address else "0.0.0.0"), local_port) if local_port else None
        client = await open_udp_client(remote=(address, port), local=local, timeout_s=timeout_s)
        sent = time.monotonic()  # the round trip starts with the first send (retransmissions count in it)
        response = await client.request(binding_request(), (address, port), timeout_s=max(0.05, timeout_s - (sent - started)))
        return BindingAnswer(
            mapped=_mapped(response),
            rtt_ms=_ms(time.monotonic() - sent),
            local=format_address(client.transport.get_extra_info("sockname")) if client.transport else None,
            other_address=format_address(response.attributes.get("OTHER-ADDRESS")),
        )
    except Exception as exc:  # noqa: BLE001 - every failure becomes a named reason
        raise probe_error(exc, where, timeout_s) from None
    finally:
        if client is not None:
            client.close()


# -- STUN over TCP / TLS -------------------------------------------------------------------------


async def read_stun_frame(reader: asyncio.StreamReader) -> bytes:
    """One STUN message (or TURN ChannelData frame) from a stream (RFC 8489 section 6.2.2)."""
    header = await reader.readexactly(4)
    kind, length = struct.unpack("!HH", header)
    if kind & 0xC000 == 0x4000:  # ChannelData: 4-byte header, padded to 4 on streams
        return header + await reader.readexactly(length + (-length % 4))
    return header + await reader.readexactly(16 + length)


async def stun_binding_stream(
    address: str, port: int, *, timeout_s: float, ssl_context: ssl.SSLContext | None = None, server_hostname: str | None = None, where: str | None = None
) -> BindingAnswer:
    """One Binding over TCP (or TLS with ``ssl_context``); raises :class:`ProbeError`."""
    where = where or format_address((address, port)) or address
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            # racing TCP connections (connect_stream): a lost SYN does not cost the kernel's 1 s retransmission
            connected = await connect_stream(address, port, timeout_s=timeout_s)
            try:
                reader, writer = await asyncio.open_connection(sock=connected.sock, ssl=ssl_context, server_hostname=server_hostname if ssl_context else None)
            except BaseException:
                connected.sock.close()
                raise
            request = binding_request()
            sent = time.monotonic()  # the round trip, without the connection set-up
            writer.write(bytes(request))
            await writer.drain()
            while True:
                response = stun.parse_message(await read_stun_frame(reader))
                if response.transaction_id == request.transaction_id:
                    break
        if response.message_class != stun.Class.RESPONSE:
            raise stun.TransactionFailed(response)
        return BindingAnswer(mapped=_mapped(response), rtt_ms=_ms(time.monotonic() - sent), local=format_address(writer.get_extra_info("sockname")))
    except Exception as exc:  # noqa: BLE001
        raise probe_error(exc, where, timeout_s) from None
    finally:
        if writer is not None:
            writer.close()


# -- results that never raise ----------------------------------------------------------------


@dataclass(frozen=True)
class Binding:
    """One STUN binding as the ``stun`` check reports it (plugins/FINDINGS.md)."""

    server: str
    transport: str
    ok: bool
    address: str | None = None
    mapped: str | None = None
    rtt_ms: float | None = None
    local: str | None = None
    other_address: str | None = None
    reason: str | None = None
    error: str | None = None
    source: str | None = None
    """Where the url came from (``config``, ``genesys``), set by the check."""

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k == "ok"}


async def stun_binding(url: IceUrl, transport: str, *, timeout_s: float, ca_file: Path | None = None) -> Binding:
    """A binding to ``url`` over ``transport`` ("udp", "tcp" or "tls"), within ``timeout_s`` in all."""
    deadline = _Deadline(timeout_s)
    server = url.url
    address = None
    try:
        address = await resolve_url(url, timeout_s=deadline.left())
        where = f"{url.hostport} ({transport})"
        if transport == "udp":
            answer = await stun_binding_udp(address, url.port, timeout_s=deadline.left(), where=where)
        else:
            context = tls_context(ca_file) if transport == "tls" else None
            answer = await stun_binding_stream(address, url.port, timeout_s=deadline.left(), ssl_context=context, server_hostname=url.host, where=where)
    except ProbeError as exc:
        return Binding(server=server, transport=transport, ok=False, address=address, reason=exc.reason, error=str(exc))
    return Binding(
        server=server, transport=transport, ok=True, address=address, mapped=answer.mapped, rtt_ms=answer.rtt_ms,
        local=answer.local, other_address=answer.other_address,
    )


TLS_CONTEXT_TTL_S = 300.0
"""How long one TLS client context serves the ICE probes before the trust store is read again."""
_tls_contexts: dict[Path | None, tuple[float, ssl.SSLContext]] = {}


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """The client context for STUN/TURN over TLS, shared by the probes of a run.

    Building one reads the system's trust store (50-85 ms of the event loop, which holds
    the GIL throughout, on the project's machine); a pre-shift needs it for turn.tls,
    stun over TLS and media.path's TLS pre-check at the same moment. None of them changes
    the context (no ALPN, no client certificate), so they share it; it is rebuilt after
    ``TLS_CONTEXT_TTL_S`` so a long-running daemon sees a renewed trust store.
    """
    now = time.monotonic()
    cached = _tls_contexts.get(ca_file)
    if cached is None or now - cached[0] > TLS_CONTEXT_TTL_S:
        cached = (now, client_context(ca_file))
        _tls_contexts[ca_file] = cached
    return cached[1]


# -- TURN ---------------------------------------------------------------------------------------------


MIN_SENDS = 3
"""A UDP request sent fewer times than this when its deadline comes has not had its
chance (a busy event loop sent it late): with ``patience_s``, it is waited for, in steps
of ``UNSENT_STEP_S`` (its next retransmission, and time for an answer)."""
UNSENT_STEP_S = 0.5


class _TurnUdp(TurnClientUdpProtocol):
    """aioice's UDP TURN client, plus: ICMP errors on the connected socket end the wait,
    and it counts the requests it sent (retransmissions included)."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.failure: asyncio.Future = asyncio.get_running_loop().create_future()
        self.sends = 0

    def send_stun(self, message, addr) -> None:
        self.sends += 1
        super().send_stun(message, addr)

    def error_received(self, exc: Exception) -> None:
        if not self.failure.done():
            self.failure.set_exception(exc)


class _TurnTcp(TurnClientTcpProtocol):
    """aioice's stream TURN client, plus: a closed connection ends the wait."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.failure: asyncio.Future = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc) -> None:
        super().connection_lost(exc)
        if not self.failure.done():
            self.failure.set_exception(exc or ConnectionResetError("the server closed the connection"))


class ServerProgress:
    """Shared by allocations to one server: an answer to any of them shows the server is
    reachable, so each of them may use its ``patience_s`` (see :func:`open_allocation`)."""

    def __init__(self) -> None:
        self._protocols: list = []

    def watch(self, protocol) -> None:
        self._protocols.append(protocol)

    def answered(self) -> bool:
        return any(getattr(p, "nonce", None) is not None or getattr(p, "relayed_address", None) is not None for p in self._protocols)


CONNECT_STAGGER_S = 0.25
"""A TCP connection not answered within this starts another beside it (up to
``CONNECT_ATTEMPTS``). A lost SYN or SYN-ACK costs one connection the kernel's 1 s
retransmission, two of them 3 s: on a line losing 10 % of every packet that is one
connection in 30 beyond a 2 s deadline. A blocked port answers none of them, a lossy line
some: several SYNs, each its own draw, tell them apart within the deadline."""
CONNECT_ATTEMPTS = 8


@dataclass(frozen=True)
class Connected:
    sock: socket.socket
    attempts: int
    """TCP connections started (one every ``CONNECT_STAGGER_S`` until one was answered)."""
    winner: int
    """Which of them got through first (1: the first; more: the first one's SYN or its answer was lost)."""


async def connect_stream(address: str, port: int, *, timeout_s: float) -> Connected:
    """A TCP connection to ``address``:``port`` within ``timeout_s``, staggered attempts racing
    (see :data:`CONNECT_STAGGER_S`); the first answered wins, the rest are closed.
    A refusal (RST) or an unreachable network ends it at once, as one would."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    end = time.monotonic() + timeout_s
    tasks: dict[asyncio.Task, int] = {}

    async def one() -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (address, port))
        except BaseException:
            sock.close()
            raise
        return sock

    kept: socket.socket | None = None
    try:
        while True:
            if len(tasks) < CONNECT_ATTEMPTS:
                tasks[asyncio.ensure_future(one())] = len(tasks) + 1
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError
            wait = min(left, CONNECT_STAGGER_S) if len(tasks) < CONNECT_ATTEMPTS else left
            pending = [t for t in tasks if not t.done()]
            if pending:
                await asyncio.wait(pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            for task, number in sorted(tasks.items(), key=lambda kv: kv[1]):
                if task.done() and not task.cancelled() and task.exception() is None:
                    kept = task.result()
                    return Connected(kept, attempts=len(tasks), winner=number)
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # refused or unreachable: a definite answer
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:  # answered too, but not the one kept
            if not task.cancelled() and task.exception() is None and task.result() is not kept:
                task.result().close()


@dataclass
class Relay:
    """An open TURN allocation (inside :func:`open_allocation`)."""

    endpoint: IceEndpoint
    address: str
    protocol: TurnClientUdpProtocol | TurnClientTcpProtocol
    relayed: str | None
    mapped: str | None
    alloc_ms: float
    connect_ms: float | None
    connect_attempts: int | None = None
    connect_winner: int | None = None


async def _race(coro, failure: asyncio.Future, timeout_s: float, *, patience_s: float = 0.0, more=None):
    """Await ``coro`` unless ``failure`` (an ICMP error, a closed connection) or the deadline comes first.

    With ``patience_s`` and ``more``: when the deadline comes, ``more()`` says how much
    longer is worth waiting (0: nothing), within ``patience_s`` in all.
    """
    task = asyncio.ensure_future(coro)
    try:
        wait_s = timeout_s
        end = time.monotonic() + timeout_s + patience_s
        while True:
            done, _ = await asyncio.wait({task, failure}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                return task.result()
            if failure in done and not failure.cancelled():
                raise failure.exception()  # type: ignore[misc]
            left = end - time.monotonic()
            extra = min(more(), left) if more is not None and left > 0 else 0.0
            if extra <= 0:
                raise TimeoutError
            wait_s = extra
    finally:
        task.cancel()


def _settle(future: asyncio.Future | None) -> None:
    """Mark a failure future handled, so a late ICMP error or close is not logged as unretrieved."""
    if future is None:
        return
    if not future.done():
        future.cancel()
    elif not future.cancelled():
        future.exception()


async def _release(protocol, transport) -> None:
    """Delete the allocation (REFRESH lifetime 0) within RELEASE_TIMEOUT_S, then close the socket."""
    _settle(getattr(protocol, "failure", None))
    try:
        if getattr(protocol, "refresh_task", None) is not None or getattr(protocol, "relayed_address", None) is not None:
            await asyncio.wait_for(protocol.delete(), RELEASE_TIMEOUT_S)
    except (Exception, asyncio.TimeoutError):  # noqa: BLE001 - the server frees it on expiry anyway
        pass
    finally:
        if protocol.refresh_task is not None:
            protocol.refresh_task.cancel()
        transport.close()


@contextlib.asynccontextmanager
async def open_allocation(
    endpoint: IceEndpoint,
    *,
    timeout_s: float,
    ca_file: Path | None = None,
    lifetime_s: int = 600,
    patience_s: float = 0.0,
    progress: ServerProgress | None = None,
) -> AsyncIterator[Relay]:
    """Allocate on ``endpoint`` (a turn:/turns: url) within ``timeout_s``; released on exit.

    ``patience_s``: when ``timeout_s`` ends after the server has answered (its 401
    challenge came back), up to this much longer: the allocation is retransmitting on a
    lossy path, not talking to a dead server. A silent server still costs ``timeout_s``.
    ``progress``: shared with other allocations to the same server; an answer to any of
    them counts. A UDP request sent fewer than ``MIN_SENDS`` times by then (a busy event
    loop) is waited for too.

    Raises :class:`ProbeError` with the reason; for ``tls_untrusted`` its ``details``
    carry ``certificate`` (subject, issuer, ...) as the server presented it.
    """
    url = endpoint.url
    deadline = _Deadline(timeout_s)
    where = f"{url.hostport} ({url.transport})"
    loop = asyncio.get_running_loop()
    password = endpoint.credential.reveal() if endpoint.credential is not None else None
    address = await resolve_url(url, timeout_s=deadline.left())
    server = (address, url.port)
    started = time.monotonic()
    transport = protocol = None
    connected: Connected | None = None
    try:
        try:
            if url.transport == "udp":
                async with asyncio.timeout(deadline.left()):
                    transport, protocol = await loop.create_datagram_endpoint(
                        lambda: _TurnUdp(server, username=endpoint.username, password=password, lifetime=lifetime_s, channel_refresh_time=500),
                        remote_addr=server,
                    )
            else:
                try:
                    connected = await connect_stream(address, url.port, timeout_s=deadline.left())
                except TimeoutError:
                    raise ProbeTimeout(
                        f"{where}: no answer within {timeout_s:g} s (none of {CONNECT_ATTEMPTS} TCP connections was answered)",
                        details={"connect_attempts": CONNECT_ATTEMPTS},
                    ) from None
                context = tls_context(ca_file) if url.transport == "tls" else None
                try:
                    async with asyncio.timeout(deadline.left()):
                        transport, protocol = await loop.create_connection(
                            lambda: _TurnTcp(server, username=endpoint.username, password=password, lifetime=lifetime_s, channel_refresh_time=500),
                            sock=connected.sock,
                            ssl=context,
                            server_hostname=url.host if context else None,
                        )
                except BaseException:
                    connected.sock.close()
                    raise
            connect_ms = _ms(time.monotonic() - started) if url.transport != "udp" else None
            if progress is not None:
                progress.watch(protocol)

            def more() -> float:
                if protocol.nonce is not None or (progress is not None and progress.answered()):
                    return patience_s  # the server answers: the rest is retransmission on a lossy path
                if getattr(protocol, "sends", MIN_SENDS) < MIN_SENDS:
                    return UNSENT_STEP_S  # a busy event loop sent it late: a little longer, then look again
                return 0.0

            await _race(protocol.connect(), protocol.failure, deadline.left(), patience_s=patience_s, more=more)
        except Exception as exc:  # noqa: BLE001
            error = probe_error(exc, where, timeout_s)
            if connected is not None:
                # TCP got through: whatever failed after it, the port is not blocked
                error = ProbeError(
                    str(error) + ("; TCP connected" if error.reason == "timeout" else ""),
                    reason=error.reason,
                    details={**error.details, "connected": True, "connect_attempts": connected.attempts, "connect_winner": connected.winner},
                )
            if error.reason == "tls_untrusted":
                seen = await peek_certificate(address, url.port, url.host, timeout_s=max(0.3, min(1.0, deadline.left())))
                if seen is not None:
                    error = ProbeError(f"{error}; it names {seen.subject}, issued by {seen.issuer}", reason="tls_untrusted", details={"certificate": seen.to_dict()})
            raise error from None
        relay = Relay(
            endpoint=endpoint,
            address=address,
            protocol=protocol,
            relayed=format_address(protocol.relayed_address),
            mapped=format_address(protocol.mapped_address),
            alloc_ms=_ms(time.monotonic() - started),
            connect_ms=connect_ms,
            connect_attempts=connected.attempts if connected else None,
            connect_winner=connected.winner if connected else None,
        )
        yield relay
    finally:
        if transport is not None:
            await _release(protocol, transport)


@dataclass(frozen=True)
class Allocation:
    """One TURN allocation attempt as the ``turn.*`` checks report it (plugins/FINDINGS.md)."""

    server: str
    transport: str
    ok: bool
    address: str | None = None
    relay: str | None = None
    mapped: str | None = None
    alloc_ms: float | None = None
    connect_ms: float | None = None
    reason: str | None = None
    error: str | None = None
    certificate: dict | None = None
    source: str | None = None
    refetched: bool | None = None
    """True when the first credentials were rejected (401) and fresh ones from the same source were used."""
    connect_attempts: int | None = None
    """TCP/TLS: the TCP connections started (staggered, racing; :data:`CONNECT_STAGGER_S`)."""
    connect_winner: int | None = None
    """TCP/TLS: which of them was answered first; above 1 the first SYN or its answer was lost."""
    connected: bool | None = None
    """TCP/TLS: the TCP connection was answered (a failure after it is not a blocked port)."""

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k == "ok"}


async def turn_allocation(endpoint: IceEndpoint, *, timeout_s: float, ca_file: Path | None = None, patience_s: float = 0.0) -> Allocation:
    """Allocate and release at once; never raises. ``patience_s``: see :func:`open_allocation`."""
    url = endpoint.url
    try:
        async with open_allocation(endpoint, timeout_s=timeout_s, ca_file=ca_file, lifetime_s=60, patience_s=patience_s) as relay:
            pass
    except ProbeError as exc:
        return Allocation(
            server=url.url, transport=url.transport, ok=False, reason=exc.reason, error=str(exc), certificate=exc.details.get("certificate"),
            source=endpoint.source, connect_attempts=exc.details.get("connect_attempts"), connect_winner=exc.details.get("connect_winner"),
            connected=exc.details.get("connected"),
        )
    return Allocation(
        server=url.url, transport=url.transport, ok=True, address=relay.address, relay=relay.relayed, mapped=relay.mapped,
        alloc_ms=relay.alloc_ms, connect_ms=relay.connect_ms, source=endpoint.source, connect_attempts=relay.connect_attempts,
        connect_winner=relay.connect_winner, connected=True if relay.connect_attempts else None,
    )
