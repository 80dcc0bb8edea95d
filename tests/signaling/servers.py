"""Real WebSocket servers on loopback, each behaving one way a signaling path can fail.

They run on their own event loop in a background thread, so a test can drive them
while it runs ``agentd`` as a subprocess (blocking) or in-process (its own loop).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from concurrent.futures import Future
from http import HTTPStatus
from typing import Any, Awaitable, Callable

from websockets.asyncio.server import Server, ServerConnection, serve


class ServerThread:
    """An event loop in a daemon thread; servers are started on it with :meth:`call`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="ws-test-servers", daemon=True)
        self._thread.start()
        self._servers: list[Any] = []

    def call(self, factory: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
        future: Future = asyncio.run_coroutine_threadsafe(factory(), self.loop)
        return future.result(timeout)

    def serve(self, handler, *, process_request=None, ssl_context: ssl.SSLContext | None = None) -> str:
        """Start a websockets server on 127.0.0.1 (free port); returns its URL."""

        async def start() -> Server:
            return await serve(handler, "127.0.0.1", 0, process_request=process_request, ssl=ssl_context, ping_interval=None, close_timeout=0.3)

        server = self.call(start)
        self._servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"{'wss' if ssl_context else 'ws'}://127.0.0.1:{port}/"

    def add(self, thing: Any) -> None:
        self._servers.append(thing)

    def close(self) -> None:
        async def stop() -> None:
            for connection in list(STALLED):
                connection.transport.abort()  # they stopped reading: they would not see a close
            for server in self._servers:
                server.close()
            for server in self._servers:
                try:
                    async with asyncio.timeout(2):
                        await server.wait_closed()
                except Exception:
                    pass
            # end what is left (proxy pumps) so nothing is collected mid-flight
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        try:
            self.call(stop, timeout=5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)


# -- behaviours ------------------------------------------------------------------------------


async def healthy(connection: ServerConnection) -> None:
    """Answers pings (websockets does that) and echoes text messages."""
    async for message in connection:
        await connection.send(message)


def refuse(status: HTTPStatus):
    """Refuses the upgrade with ``status`` (401: no or a bad token)."""

    def process_request(connection: ServerConnection, request):
        return connection.respond(status, f"{status.phrase}\n")

    return process_request


def drop_after(seconds: float, *, times: int | None = None):
    """Cuts the TCP connection (no close frame: the client sees 1006) ``seconds`` after the
    upgrade; with ``times``, only the first ``times`` connections are cut."""
    state = {"dropped": 0}

    async def handler(connection: ServerConnection) -> None:
        if times is None or state["dropped"] < times:
            state["dropped"] += 1
            await asyncio.sleep(seconds)
            connection.transport.abort()
            return
        await healthy(connection)

    handler.state = state  # type: ignore[attr-defined]
    return handler


STALLED: set[ServerConnection] = set()
"""Connections of :func:`never_pongs`; the thread cuts them when it stops."""


async def never_pongs(connection: ServerConnection) -> None:
    """Stops reading right after the upgrade: pings pile up unanswered (a stalled backend)."""
    connection.transport.pause_reading()
    STALLED.add(connection)
    try:
        await connection.wait_closed()
    finally:
        STALLED.discard(connection)


def sends_large(size: int):
    async def handler(connection: ServerConnection) -> None:
        await connection.send(json.dumps({"padding": "x" * size}))
        await healthy(connection)

    return handler


def genesys_channel(*, heartbeat_s: float | None = None, answer_ping: bool = True):
    """What a Genesys notifications channel does: text ping -> channel.metadata pong, heartbeats."""

    async def handler(connection: ServerConnection) -> None:
        async def heartbeats() -> None:
            while True:
                await asyncio.sleep(heartbeat_s)
                await connection.send(json.dumps({"topicName": "channel.metadata", "eventBody": {"message": "WebSocket Heartbeat"}}))

        task = asyncio.create_task(heartbeats()) if heartbeat_s else None
        try:
            async for message in connection:
                if answer_ping and json.loads(message).get("message") == "ping":
                    await connection.send(json.dumps({"topicName": "channel.metadata", "eventBody": {"message": "pong"}}))
        finally:
            if task:
                task.cancel()

    return handler


class DelayProxy:
    """A TCP proxy on loopback that holds every server->client chunk for ``delay_s``:
    the server answers, but slowly (the upgrade and every pong arrive late)."""

    def __init__(self, target_port: int, delay_s: float) -> None:
        self.target_port = target_port
        self.delay_s = delay_s
        self.server: asyncio.base_events.Server | None = None
        self.tasks: set[asyncio.Task] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay: float) -> None:
            try:
                while data := await src.read(65536):
                    if delay:
                        await asyncio.sleep(delay)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        for task in (
            asyncio.create_task(pump(reader, up_writer, 0.0)),
            asyncio.create_task(pump(up_reader, writer, self.delay_s)),
        ):
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def close(self) -> None:
        if self.server:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()

    async def wait_closed(self) -> None:
        if self.server:
            await self.server.wait_closed()


def close_after(seconds: float, code: int, reason: str, *, times: int = 1):
    """Sends a proper close frame (``code``, ``reason``) ``seconds`` after the upgrade, ``times`` times."""
    state = {"closed": 0}

    async def handler(connection: ServerConnection) -> None:
        if state["closed"] < times:
            state["closed"] += 1
            await asyncio.sleep(seconds)
            await connection.close(code, reason)
            return
        await healthy(connection)

    return handler
