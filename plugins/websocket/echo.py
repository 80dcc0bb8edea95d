"""``agentd ws-echo --listen HOST:PORT``: the seed 003 test backend.

A WebSocket server that greets each connection, answers each JSON message with how long
it took to process it (``latency_ms``), and answers anything else with an error message.
Point an integration (or ``agentd ws-probe``) at it to check the path end to end: the
round trip the client sees minus ``latency_ms`` is the network's share.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from dataclasses import dataclass

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from agentd.errors import UsageError

GREETING = {"status": "connected", "server": "agentd-ws-echo"}


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise UsageError(f"--listen {text!r}: expected HOST:PORT, for example 127.0.0.1:8765")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise UsageError(f"--listen {text!r}: the port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"--listen {text!r}: the port must be 0-65535")
    return host, port


@dataclass(frozen=True)
class EchoSettings:
    delay_ms: float = 0.0
    """Extra processing time per message, to play a slow backend."""


def make_handler(settings: EchoSettings, log=print):
    async def handler(connection: ServerConnection) -> None:
        peer = connection.remote_address[0] if connection.remote_address else "unknown"
        log(f"connection from {peer}")
        count = 0
        try:
            await connection.send(json.dumps(GREETING))
            async for message in connection:
                started = time.perf_counter()
                try:
                    data = json.loads(message)
                except ValueError:
                    await connection.send(json.dumps({"error": "Invalid JSON"}))
                    continue
                if settings.delay_ms:
                    await asyncio.sleep(settings.delay_ms / 1000)
                count += 1
                kind = data.get("type", "unknown") if isinstance(data, dict) else type(data).__name__
                reply = {
                    "type": "response",
                    "request_type": kind,
                    "id": data.get("id") if isinstance(data, dict) else None,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                }
                await connection.send(json.dumps(reply))
        except ConnectionClosed:
            pass
        finally:
            log(f"connection from {peer} ended after {count} message(s)")

    return handler


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default="127.0.0.1:8765", metavar="HOST:PORT", help="where to listen (default 127.0.0.1:8765; port 0 picks a free one)")
    parser.add_argument("--delay-ms", type=float, default=0.0, metavar="MS", help="extra processing time per message (plays a slow backend)")


def run_command(args: argparse.Namespace, app) -> "asyncio.Future[int]":
    host, port = parse_listen(args.listen)
    if args.delay_ms < 0 or args.delay_ms > 600_000:
        raise UsageError("--delay-ms must be between 0 and 600000")
    settings = EchoSettings(delay_ms=args.delay_ms)

    def log(line: str) -> None:
        print(line, flush=True)

    async def go() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            server = await serve(make_handler(settings, log), host, port)
        except OSError as exc:
            print(f"agentd ws-echo: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        async with server:
            for sock in server.sockets:
                address = sock.getsockname()
                shown = f"[{address[0]}]" if ":" in address[0] else address[0]
                log(f"listening on ws://{shown}:{address[1]}")
            await stop.wait()
        log("stopped")
        return 0

    return go()
