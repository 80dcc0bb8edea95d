"""``agentd ws-probe URL``: a long WebSocket probe for a helpdesk call.

One live line per ping; after a drop it reconnects with backoff (the delays of
``websockets.client.backoff``, the library's own reconnect pattern) and counts the
reconnects; at the end a summary: latency average, p95 and max, and every drop with its
time, close code and reason.

A missing pong is treated as websockets' keepalive treats it: the connection is
considered dead, recorded as a drop, and re-opened.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Callable

from websockets.client import backoff
from websockets.exceptions import ConnectionClosed

from agentd.errors import ProbeError, UsageError
from agentd.tls import client_context

from .probe import GENESYS_PING, Inbox, check_url, close_quietly, finish_reader, open_timed, shown_url, summarize_rtts


@dataclass(frozen=True)
class Drop:
    at: str
    close_code: int | None
    reason: str


@dataclass(frozen=True)
class ProbeSummary:
    url: str
    duration_s: float
    pings_sent: int
    pongs_received: int
    rtt_avg_ms: float | None
    rtt_p95_ms: float | None
    rtt_max_ms: float | None
    drops: tuple[Drop, ...]
    reconnects: int
    connect_failures: int
    connected: bool

    @property
    def healthy(self) -> bool:
        return self.connected and not self.drops and self.connect_failures == 0 and self.pings_sent == self.pongs_received

    def to_dict(self) -> dict:
        data = asdict(self)
        data["drops"] = [asdict(d) for d in self.drops]
        data["healthy"] = self.healthy
        return data


def _now_text() -> str:
    return datetime.now(timezone.utc).strftime("%H:%M:%S.%f")[:-3]


@dataclass
class _Tally:
    pings_sent: int = 0
    rtts: list[float] = field(default_factory=list)
    drops: list[Drop] = field(default_factory=list)
    reconnects: int = 0
    connect_failures: int = 0
    ever_connected: bool = False


async def run_probe(
    url: str,
    *,
    duration_s: float,
    interval_s: float,
    pong_timeout_s: float = 2.0,
    connect_timeout_s: float = 5.0,
    genesys_ping: bool = False,
    ca_file=None,
    headers: dict[str, str] | None = None,
    backoff_initial_s: float = 0.5,
    backoff_min_s: float = 0.5,
    backoff_max_s: float = 30.0,
    out: Callable[[str], None] = print,
    interruptible: bool = False,
) -> ProbeSummary:
    """Probe ``url`` for ``duration_s``, printing a line per event with ``out``.

    ``interruptible``: a cancellation (the command's SIGINT/SIGTERM handler) ends the
    probe early and still returns the summary.
    """
    check_url(url)
    context = client_context(ca_file)
    started = time.monotonic()
    deadline = started + duration_s
    tally = _Tally()
    delays = backoff(initial_delay=backoff_initial_s, min_delay=backoff_min_s, max_delay=backoff_max_s)
    dropped_before = False
    try:
        while time.monotonic() < deadline:
            left = deadline - time.monotonic()
            try:
                opened = await open_timed(url, ssl_context=context, timeout_s=min(connect_timeout_s, max(0.1, left)), headers=headers)
            except ProbeError as exc:
                tally.connect_failures += 1
                status = exc.details.get("handshake_status")
                out(f"{_now_text()}  connect failed: {exc}" + (f" [HTTP {status}]" if status else ""))
                if not await _wait_backoff(delays, deadline, out):
                    break
                continue
            phases = ", ".join(f"{k.removesuffix('_ms')} {v:.1f}" for k, v in opened.phases.items() if v is not None)
            if dropped_before:
                tally.reconnects += 1
                out(f"{_now_text()}  reconnected ({tally.reconnects}) in {opened.connect_ms:.1f} ms ({phases} ms)")
            else:
                out(f"{_now_text()}  connected to {shown_url(url)} in {opened.connect_ms:.1f} ms ({phases} ms)")
            tally.ever_connected = True
            delays = backoff(initial_delay=backoff_initial_s, min_delay=backoff_min_s, max_delay=backoff_max_s)
            drop = await _ping_until_drop(opened.connection, deadline, interval_s, pong_timeout_s, genesys_ping, tally, out)
            if drop is None:
                break  # the duration is over
            tally.drops.append(drop)
            dropped_before = True
            code = f"close {drop.close_code}" if drop.close_code is not None else "no close code"
            out(f"{drop.at}  DROP  {code}: {drop.reason}")
            if not await _wait_backoff(delays, deadline, out):
                break
    except asyncio.CancelledError:
        if not interruptible:
            raise
        # Ctrl-C or SIGTERM: a helpdesk call ends when it ends; the summary still counts
        asyncio.current_task().uncancel()
        out(f"{_now_text()}  interrupted")
    stats = summarize_rtts(tally.rtts)
    return ProbeSummary(
        url=shown_url(url),
        duration_s=round(time.monotonic() - started, 2),
        pings_sent=tally.pings_sent,
        pongs_received=len(tally.rtts),
        rtt_avg_ms=stats["avg"],
        rtt_p95_ms=stats["p95"],
        rtt_max_ms=stats["max"],
        drops=tuple(tally.drops),
        reconnects=tally.reconnects,
        connect_failures=tally.connect_failures,
        connected=tally.ever_connected,
    )


async def _wait_backoff(delays, deadline: float, out: Callable[[str], None]) -> bool:
    """Sleep the next backoff delay; False when the run's time is over first."""
    delay = next(delays)
    if time.monotonic() + delay >= deadline:
        return False
    out(f"{_now_text()}  reconnecting in {delay:.2f} s")
    await asyncio.sleep(delay)
    return True


async def _ping_until_drop(connection, deadline, interval_s, pong_timeout_s, genesys_ping, tally: _Tally, out) -> Drop | None:
    """Ping every ``interval_s`` until the deadline (None) or a drop (the Drop)."""
    inbox = Inbox()
    reader = asyncio.create_task(inbox.run(connection), name="ws-probe-inbox")
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                return None
            number = tally.pings_sent + 1
            try:
                if genesys_ping:
                    waiter = inbox.expect_pong()
                    sent = time.monotonic()
                    await connection.send(GENESYS_PING)
                else:
                    waiter = await connection.ping()
                    sent = time.monotonic()
                tally.pings_sent += 1
                async with asyncio.timeout(pong_timeout_s):
                    answered = await waiter
                rtt = (answered - sent) * 1000 if genesys_ping else answered * 1000
                tally.rtts.append(rtt)
                out(f"{_now_text()}  ping {number:>4}  rtt {rtt:8.2f} ms")
            except TimeoutError:
                out(f"{_now_text()}  ping {number:>4}  no pong within {pong_timeout_s:g} s")
                await close_quietly(connection)
                return Drop(_now_text(), None, f"no pong within {pong_timeout_s:g} s (keepalive timeout)")
            except (ConnectionClosed, ConnectionError):
                pass
            if inbox.closed is None and not reader.done():
                await asyncio.wait({reader}, timeout=max(0.0, min(interval_s, deadline - time.monotonic())))
            if reader.done() or inbox.closed is not None:
                await asyncio.sleep(0)
                code, why = inbox.closed or (None, "connection closed")
                return Drop(_now_text(), code, why or "no reason given")
    finally:
        if not reader.done():
            await close_quietly(connection)
            await finish_reader(reader)


def render_summary(summary: ProbeSummary, out: Callable[[str], None] = print) -> None:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} ms"

    lost = summary.pings_sent - summary.pongs_received
    out("")
    out(f"summary for {summary.url} over {summary.duration_s:g} s")
    out(f"  pings {summary.pings_sent}, pongs {summary.pongs_received}, lost {lost}")
    out(f"  latency avg {ms(summary.rtt_avg_ms)}, p95 {ms(summary.rtt_p95_ms)}, max {ms(summary.rtt_max_ms)}")
    out(f"  drops {len(summary.drops)}, reconnects {summary.reconnects}, failed connection attempts {summary.connect_failures}")
    for drop in summary.drops:
        code = f"close {drop.close_code}" if drop.close_code is not None else "no close code"
        out(f"    {drop.at}  {code}  {drop.reason}")
    if not summary.connected:
        out("  never connected")


# -- the command -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="ws:// or wss:// URL to probe")
    parser.add_argument("--duration", type=float, default=60.0, metavar="S", help="how long to probe, in seconds (default 60)")
    parser.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between pings (default 1)")
    parser.add_argument("--pong-timeout", type=float, default=2.0, metavar="S", help="a pong later than this counts as a drop (default 2)")
    parser.add_argument("--connect-timeout", type=float, default=5.0, metavar="S", help="deadline of one opening (default 5)")
    parser.add_argument(
        "--genesys-ping",
        action="store_true",
        help='send the Genesys text ping {"message":"ping"} (answered by a channel.metadata pong) instead of protocol pings',
    )
    parser.add_argument("--ca-file", default=None, metavar="FILE", help="extra CA bundle to trust (default: [websocket] ca_file)")
    parser.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'", help="extra HTTP header for the upgrade (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout (live lines go to stderr)")


def run_command(args: argparse.Namespace, app) -> "asyncio.Future[int] | int":
    if args.duration <= 0 or args.duration > 24 * 3600:
        raise UsageError("--duration must be between 0 and 86400 seconds")
    if args.interval < 0.01 or args.interval > 3600:
        raise UsageError("--interval must be between 0.01 and 3600 seconds")
    if args.pong_timeout <= 0 or args.connect_timeout <= 0:
        raise UsageError("--pong-timeout and --connect-timeout must be positive")
    try:
        check_url(args.url)
    except ProbeError as exc:
        raise UsageError(str(exc)) from None
    headers: dict[str, str] = {}
    for header in args.header:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header {header!r}: expected 'NAME: VALUE'")
        headers[name.strip()] = value.strip()
    ca_file = args.ca_file or app.config.section("websocket").ca_file
    stream = sys.stderr if args.json else sys.stdout

    def out(line: str) -> None:
        print(line, file=stream, flush=True)

    async def go() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        summary = await run_probe(
            args.url,
            duration_s=args.duration,
            interval_s=args.interval,
            pong_timeout_s=args.pong_timeout,
            connect_timeout_s=args.connect_timeout,
            genesys_ping=args.genesys_ping,
            ca_file=ca_file,
            headers=headers or None,
            out=out,
            interruptible=True,
        )
        render_summary(summary, out)
        if args.json:
            print(json.dumps(summary.to_dict(), indent=2), flush=True)
        return 0 if summary.healthy else 1

    return go()
