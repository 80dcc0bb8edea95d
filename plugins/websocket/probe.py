"""One WebSocket connection, measured: every phase of the opening, pings, what arrives, how it ends.

Used by the ``websocket`` check, ``agentd ws-probe`` and the notifications monitor.

The opening is split into phases the way the softphone's path splits it: DNS (our
resolver with a hard deadline), TCP (our own non-blocking connect), then TLS and the
HTTP upgrade inside ``websockets.connect(sock=...)``. TLS and upgrade are told apart by
the moment asyncio hands the (TLS-wrapped) transport to the protocol: ``connection_made``
runs once the TLS handshake is done.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from agentd.errors import ProbeError
from agentd.net import resolve
from agentd.tls import peek_certificate

log = structlog.get_logger("agentd.websocket")

ABNORMAL_CLOSURE = 1006
"""RFC 6455: the connection ended without a close frame (TCP reset, EOF, a dead path)."""

LARGE_MESSAGE_BYTES = 10 * 1024
GENESYS_PING = json.dumps({"message": "ping"})
HEARTBEAT_TEXT = "WebSocket Heartbeat"
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def close_code_of(exc: ConnectionClosed) -> tuple[int, str]:
    """The close code and reason a person should see: the peer's frame, else 1006."""
    if exc.rcvd is not None:
        return exc.rcvd.code, exc.rcvd.reason
    return ABNORMAL_CLOSURE, "connection closed without a close frame"


def check_url(url: str) -> tuple[str, str, int, bool]:
    """(scheme, host, port, secure) of a ws:// or wss:// URL; ProbeError(reason=config) otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ProbeError(f"{url!r} is not a ws:// or wss:// URL", reason="config")
    try:
        port = parts.port or (443 if parts.scheme == "wss" else 80)
    except ValueError:
        raise ProbeError(f"{url!r} has an invalid port", reason="config") from None
    return parts.scheme, parts.hostname, port, parts.scheme == "wss"


def shown_url(url: str) -> str:
    """The URL as reports and logs show it: no user info and no query (either may carry a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path or '/'}"


class TimedConnection(ClientConnection):
    """A ClientConnection that notes when its transport is ready (after TLS, before upgrade)."""

    transport_ready_at: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport_ready_at = time.monotonic()
        super().connection_made(transport)


@dataclass
class Opened:
    connection: ClientConnection
    phases: dict[str, float | None]
    connect_ms: float
    address: str


async def open_timed(
    url: str,
    *,
    ssl_context: ssl.SSLContext | None,
    timeout_s: float,
    headers: dict[str, str] | None = None,
    close_timeout_s: float = 1.0,
    subprotocols: list[str] | None = None,
) -> Opened:
    """Open ``url`` within ``timeout_s``, timing each phase.

    Raises :class:`ProbeError` whose ``reason`` follows plugins/FINDINGS.md and whose
    ``details`` carry ``phases`` (what was reached) and ``handshake_status`` (the HTTP
    status of a refused upgrade).
    """
    _, host, port, secure = check_url(url)
    where = shown_url(url)
    phases: dict[str, float | None] = {"dns_ms": None, "tcp_ms": None, "tls_ms": None, "upgrade_ms": None}
    started = time.monotonic()
    deadline = started + timeout_s

    def left() -> float:
        return max(0.01, deadline - time.monotonic())

    def fail(message: str, reason: str, **extra: Any) -> ProbeError:
        return ProbeError(message, reason=reason, details={"phases": dict(phases), **extra})

    try:
        found = await resolve(host, port, timeout_s=timeout_s)
    except ProbeError as exc:  # dns, or timeout: the reason stays, the message names the target
        raise ProbeError(f"{where}: {exc}", reason=exc.reason, details={"phases": dict(phases)}) from None
    phases["dns_ms"] = round(found.elapsed_ms, 1)
    address = found.addresses[0]
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    handed_over = False
    phase = "TCP connect"
    try:
        t_tcp = time.monotonic()
        try:
            async with asyncio.timeout(left()):
                await loop.sock_connect(sock, (address, port))
        except TimeoutError:
            raise fail(f"{where}: no TCP answer within {timeout_s:g} s", "timeout") from None
        except ConnectionRefusedError:
            raise fail(f"{where}: connection refused", "refused") from None
        except OSError as exc:
            raise fail(f"{where}: {exc.strerror or exc}", "unreachable") from None
        phases["tcp_ms"] = round((time.monotonic() - t_tcp) * 1000, 1)
        t_open = time.monotonic()
        phase = "TLS handshake" if secure else "upgrade"
        kwargs: dict[str, Any] = {}
        if secure:
            kwargs.update(ssl=ssl_context or ssl.create_default_context(), server_hostname=host)
        attempt = connect(
            url,
            sock=sock,
            proxy=None,
            open_timeout=None,  # our own deadline below covers every phase
            ping_interval=None,  # pings are ours, to measure them
            close_timeout=close_timeout_s,
            max_size=MAX_MESSAGE_BYTES,
            additional_headers=headers,
            user_agent_header="agentd",
            subprotocols=subprotocols,
            create_connection=TimedConnection,
            **kwargs,
        )
        handed_over = True  # from here websockets owns the socket and closes it on failure
        try:
            async with asyncio.timeout(left()):
                connection = await attempt
        except TimeoutError:
            raise fail(f"{where}: no answer within {timeout_s:g} s ({_phase_reached(attempt, phase)})", "timeout") from None
        except InvalidStatus as exc:
            status = exc.response.status_code
            reason = {401: "auth", 403: "forbidden"}.get(status, "protocol")
            raise fail(
                f"{where}: WebSocket handshake refused with HTTP {status} {exc.response.reason_phrase}".rstrip(),
                reason,
                handshake_status=status,
            ) from None
        except ssl.SSLCertVerificationError as exc:
            seen = await peek_certificate(address, port, host, timeout_s=min(2.0, left()))
            extra: dict[str, Any] = {}
            message = f"{where}: certificate not trusted ({exc.verify_message})"
            if seen is not None:
                extra["certificate"] = seen.to_dict()
                message += f"; it names {seen.subject}, issued by {seen.issuer}"
            raise fail(message, "tls_untrusted", **extra) from None
        except ssl.SSLError as exc:
            raise fail(f"{where}: TLS failed ({exc.reason or exc})", "tls") from None
        except InvalidURI as exc:
            raise fail(f"{url!r}: {exc}", "config") from None
        except (InvalidHandshake, EOFError) as exc:
            raise fail(f"{where}: the server did not complete a WebSocket upgrade ({exc})", "protocol") from None
        except ConnectionError as exc:
            raise fail(f"{where}: connection lost during the {phase} ({exc.strerror or exc})", "refused") from None
        except OSError as exc:
            raise fail(f"{where}: {exc.strerror or exc}", "unreachable") from None
        opened = time.monotonic()
        ready = getattr(connection, "transport_ready_at", None) or t_open
        if secure:
            phases["tls_ms"] = round((ready - t_open) * 1000, 1)
        phases["upgrade_ms"] = round((opened - ready) * 1000, 1)
        return Opened(connection, phases, round((opened - started) * 1000, 1), address)
    finally:
        if not handed_over:
            sock.close()


def _phase_reached(attempt: Any, default: str) -> str:
    connection = getattr(attempt, "connection", None)
    if connection is not None and getattr(connection, "transport_ready_at", None):
        return "upgrade"
    return default


async def close_quietly(connection: ClientConnection, timeout_s: float = 1.0) -> None:
    """Send a normal close; a peer that does not answer costs ``timeout_s``, then the socket is cut."""
    try:
        async with asyncio.timeout(timeout_s):
            await connection.close()
    except (TimeoutError, OSError, ConnectionClosed):
        pass
    finally:
        transport = getattr(connection, "transport", None)
        if transport is not None and not transport.is_closing():
            transport.abort()


async def finish_reader(reader: asyncio.Task, timeout_s: float = 1.0) -> None:
    """Let a connection's reader task see the end of its connection; cancel it if it does not."""
    try:
        async with asyncio.timeout(timeout_s):
            await reader
    except (TimeoutError, asyncio.CancelledError):
        reader.cancel()


# -- what arrives on an open connection ---------------------------------------------------


@dataclass
class Inbox:
    """Watches every message of one connection: Genesys pongs, heartbeats, large messages.

    ``on_message`` (optional) sees each decoded JSON message, for callers that care
    about events (the monitor).
    """

    large_message_bytes: int = LARGE_MESSAGE_BYTES
    on_message: Callable[[dict], None] | None = None
    opened_at: float = field(default_factory=time.monotonic)
    messages: int = 0
    last_message_at: float = 0.0
    heartbeats: list[float] = field(default_factory=list)
    large_messages: list[dict] = field(default_factory=list)
    closed: tuple[int, str] | None = None
    _pong_waiters: list[asyncio.Future] = field(default_factory=list)

    async def run(self, connection: ClientConnection) -> None:
        try:
            async for message in connection:
                self.take(message)
        except ConnectionClosed as exc:
            self.closed = close_code_of(exc)
        else:
            self.closed = close_code_of_connection(connection)
        for waiter in self._pong_waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionError("closed"))

    def take(self, message: str | bytes) -> None:
        now = time.monotonic()
        self.messages += 1
        self.last_message_at = now
        size = len(message.encode("utf-8") if isinstance(message, str) else message)
        if size > self.large_message_bytes:
            self.large_messages.append({"bytes": size, "at_ms": round((now - self.opened_at) * 1000, 1)})
        if isinstance(message, bytes):
            return
        try:
            data = json.loads(message)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        if data.get("topicName") == "channel.metadata":
            body = data.get("eventBody") or {}
            text = body.get("message") if isinstance(body, dict) else None
            if text == HEARTBEAT_TEXT:
                self.heartbeats.append(now)
            elif text == "pong":
                for waiter in self._pong_waiters:
                    if not waiter.done():
                        waiter.set_result(now)
                        break
        if self.on_message is not None:
            try:
                self.on_message(data)
            except Exception as exc:  # one odd event must not end the reader (it would look like a drop)
                log.warning("a WebSocket message could not be handled", error=f"{type(exc).__name__}: {exc}")

    def expect_pong(self) -> asyncio.Future:
        waiter = asyncio.get_running_loop().create_future()
        self._pong_waiters = [w for w in self._pong_waiters if not w.done()]
        self._pong_waiters.append(waiter)
        return waiter

    def max_heartbeat_gap_s(self, until: float | None = None) -> float | None:
        """Longest time without a heartbeat, from the opening to ``until`` (None: no heartbeat seen)."""
        if not self.heartbeats:
            return None
        marks = [self.opened_at, *self.heartbeats]
        if until is not None:
            marks.append(until)
        return round(max(b - a for a, b in zip(marks, marks[1:])), 3)


def close_code_of_connection(connection: ClientConnection) -> tuple[int, str]:
    rcvd = getattr(connection.protocol, "close_rcvd", None)
    if rcvd is not None:
        return rcvd.code, rcvd.reason
    return ABNORMAL_CLOSURE, "connection closed without a close frame"


# -- the probe of one target ---------------------------------------------------------------


@dataclass(frozen=True)
class ProbePlan:
    """How to probe one target."""

    connect_timeout_s: float = 5.0
    ping_count: int = 3
    ping_interval_s: float = 0.2
    pong_timeout_s: float = 2.0
    genesys_ping: bool = False
    """Also send the Genesys text ping ``{"message":"ping"}`` and wait for the channel.metadata pong."""
    observe_s: float = 0.0
    """Stay connected this long after the pings, watching heartbeats and drops."""
    heartbeat_timeout_s: float | None = None
    """When set, no heartbeat for this long is a missed heartbeat (Genesys: every 30 s)."""
    large_message_bytes: int = LARGE_MESSAGE_BYTES


def empty_row(target: str, *, reason: str | None = None, error: str | None = None) -> dict[str, Any]:
    """A target's details row before anything is known (FINDINGS.md ``websocket``)."""
    return {
        "target": target,
        "ok": False,
        "phases": {"dns_ms": None, "tcp_ms": None, "tls_ms": None, "upgrade_ms": None},
        "connect_ms": None,
        "handshake_status": None,
        "close_code": None,
        "close_reason": None,
        "reason": reason,
        "error": error,
        "pings_sent": 0,
        "pongs_received": 0,
        "ping_rtts_ms": [],
        "genesys_pings_sent": 0,
        "genesys_pongs_received": 0,
        "genesys_ping_rtts_ms": [],
        "heartbeats": 0,
        "max_heartbeat_gap_s": None,
        "large_messages": [],
    }


async def probe_target(
    url: str,
    plan: ProbePlan,
    *,
    ssl_context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
    after_open: Callable[[ClientConnection], Awaitable[None]] | None = None,
    display_url: str | None = None,
) -> dict:
    """Probe ``url`` once and return its details row (plugins/FINDINGS.md, ``websocket``).

    ``after_open`` runs right after the upgrade (subscribing a Genesys channel).
    ``display_url`` is what the report shows instead of ``url`` (a connectUri carries a
    channel id, no secret, but a caller may prefer a shorter name).
    """
    row = empty_row(display_url or shown_url(url))
    try:
        opened = await open_timed(url, ssl_context=ssl_context, timeout_s=plan.connect_timeout_s, headers=headers)
    except ProbeError as exc:
        row.update(reason=exc.reason, error=str(exc))
        row["phases"].update(exc.details.get("phases", {}))
        for key in ("handshake_status", "certificate"):
            if key in exc.details:
                row[key] = exc.details[key]
        return row
    row["phases"] = opened.phases
    row["connect_ms"] = opened.connect_ms
    row["handshake_status"] = 101
    connection = opened.connection
    inbox = Inbox(large_message_bytes=plan.large_message_bytes)
    reader = asyncio.create_task(inbox.run(connection), name=f"ws-inbox:{row['target']}")
    observed_until: float | None = None
    try:
        if after_open is not None:
            await after_open(connection)
        await _ping_loop(connection, inbox, plan, row)
        if row["reason"] is None and plan.observe_s > 0 and not reader.done():
            done, _ = await asyncio.wait({reader}, timeout=plan.observe_s)
            observed_until = None if done else time.monotonic()
    except ConnectionClosed:
        pass
    except ProbeError as exc:  # from after_open: the subscription failed
        row.update(reason=exc.reason, error=str(exc))
    finally:
        await asyncio.sleep(0)  # let the reader see a close that already arrived
        peer_closed = inbox.closed
        if peer_closed is None and row["reason"] == "no_pong":
            connection.transport.abort()  # a stalled peer would not answer a close either
        elif peer_closed is None:
            # we end it with a normal close, so a close code in the row is always the peer's
            await close_quietly(connection)
        await finish_reader(reader)
    row["heartbeats"] = len(inbox.heartbeats)
    row["max_heartbeat_gap_s"] = inbox.max_heartbeat_gap_s(until=observed_until)
    row["large_messages"] = inbox.large_messages
    if peer_closed is not None:
        code, why = peer_closed
        row["close_code"], row["close_reason"] = code, why
        if row["reason"] is None or row["reason"] == "no_pong":
            row["reason"] = "dropped" if code == ABNORMAL_CLOSURE else "closed"
            row["error"] = f"{row['target']}: the server ended the connection with close code {code}" + (f" ({why})" if why else "")
    if row["reason"] is None and plan.heartbeat_timeout_s and observed_until is not None:
        gap = row["max_heartbeat_gap_s"]
        if gap is None:  # not one heartbeat: the gap is the whole time connected
            gap = row["max_heartbeat_gap_s"] = round(observed_until - inbox.opened_at, 3)
        if gap > plan.heartbeat_timeout_s:
            row["reason"] = "no_heartbeat"
            row["error"] = f"{row['target']}: no heartbeat for more than {plan.heartbeat_timeout_s:g} s"
    row["ok"] = row["reason"] is None
    return row


async def _ping_loop(connection: ClientConnection, inbox: Inbox, plan: ProbePlan, row: dict) -> None:
    for i in range(plan.ping_count):
        if i:
            await asyncio.sleep(plan.ping_interval_s)
        try:
            waiter = await connection.ping()
            row["pings_sent"] += 1
            async with asyncio.timeout(plan.pong_timeout_s):
                latency = await waiter
            row["pongs_received"] += 1
            row["ping_rtts_ms"].append(round(latency * 1000, 2))
        except TimeoutError:
            # TCP does not lose a pong: a missing one means the peer (or the path) stalled
            row.update(reason="no_pong", error=f"{row['target']}: no pong within {plan.pong_timeout_s:g} s (ping {i + 1})")
            return
        except ConnectionClosed:
            return  # the inbox has the close code
        if plan.genesys_ping:
            pong = inbox.expect_pong()
            sent = time.monotonic()
            try:
                await connection.send(GENESYS_PING)
                row["genesys_pings_sent"] += 1
                async with asyncio.timeout(plan.pong_timeout_s):
                    answered = await pong
                row["genesys_pongs_received"] += 1
                row["genesys_ping_rtts_ms"].append(round((answered - sent) * 1000, 2))
            except TimeoutError:
                row.update(
                    reason="no_pong",
                    error=f"{row['target']}: no channel.metadata pong to the Genesys ping within {plan.pong_timeout_s:g} s",
                )
                return
            except (ConnectionClosed, ConnectionError):
                return  # the inbox has the close code


def summarize_rtts(values: list[float]) -> dict[str, float | None]:
    """avg, median, p95 and max of round trips in ms (None when there are none)."""
    if not values:
        return {"avg": None, "median": None, "p95": None, "max": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, int(round(0.95 * len(ordered) + 0.5)) - 1))]
    return {
        "avg": round(statistics.fmean(ordered), 2),
        "median": round(statistics.median(ordered), 2),
        "p95": round(p95, 2),
        "max": round(ordered[-1], 2),
    }
