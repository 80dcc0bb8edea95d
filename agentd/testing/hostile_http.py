"""A loopback HTTP server that answers the way broken proxies and hostile servers do,
for the Genesys client's bounds (tests and ``python -m benchmarks``).

Paths: ``/huge?mb=N`` (N MB, no Content-Length, read until close), ``/huge-declared?mb=N``
(announces N MB), ``/nested?depth=N`` (``[[[...]]]``), ``/redirect`` (302 to another host,
with a JSON body), ``/moved`` (301, no body), ``/html`` (200, a login page),
``/drip`` (headers, then one byte every half second), ``/ok`` (a small JSON object).
Everything else: 404. Runs in its own thread with its own event loop.

:func:`flood_unterminated` is the same spirit on the daemon's control socket: many
clients each sending megabytes with no newline. :func:`client_reads_in_fresh_process`
lets the Genesys client read one path in a process of its own and reports that process's
peak memory.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

CHUNK = b"x" * 65536


class HostileServer:
    def __init__(self) -> None:
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> HostileServer:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="hostile-http", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        loop = self._loop
        if loop is None:
            return

        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            target = head.split(b" ", 2)[1].decode()
            self.requests.append(target)
            parts = urlsplit(target)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            await self._answer(parts.path, query, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()

    async def _answer(self, path: str, query: dict[str, str], writer: asyncio.StreamWriter) -> None:
        def head(status: str, headers: dict[str, str]) -> None:
            # one request per connection: say so, or a client reuses the socket this server closes
            headers = {**headers, "Connection": "close"}
            lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
            writer.write("\r\n".join(lines).encode())

        if path in ("/huge", "/huge-declared"):
            size = int(float(query.get("mb", "50")) * 2**20)
            headers = {"Content-Type": "application/json", "Connection": "close"}
            if path == "/huge-declared":
                headers["Content-Length"] = str(size)
            head("200 OK", headers)
            writer.write(b'["')
            sent = 2
            while sent < size - 2:
                piece = CHUNK[: min(len(CHUNK), size - 2 - sent)]
                writer.write(piece)
                sent += len(piece)
                await writer.drain()
            writer.write(b'"]')
            await writer.drain()
        elif path == "/nested":
            depth = int(query.get("depth", "100000"))
            body = b"[" * depth + b"]" * depth
            head("200 OK", {"Content-Type": "application/json", "Content-Length": str(len(body))})
            writer.write(body)
        elif path == "/redirect":
            body = json.dumps({"id": "not-the-answer"}).encode()
            head("302 Found", {"Location": "https://login.portal.invalid/landing?next=x", "Content-Type": "application/json",
                               "Content-Length": str(len(body))})
            writer.write(body)
        elif path == "/moved":
            head("301 Moved Permanently", {"Location": "/api/v2/elsewhere", "Content-Length": "0"})
        elif path == "/html":
            body = b"<!doctype html><html><body><form>Sign in to the proxy</form></body></html>"
            head("200 OK", {"Content-Type": "text/html; charset=utf-8", "Content-Length": str(len(body))})
            writer.write(body)
        elif path == "/drip":
            head("200 OK", {"Content-Type": "application/json", "Content-Length": "1000"})
            for _ in range(1000):
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.5)
        elif path == "/ok":
            body = json.dumps({"id": "fine", "entities": []}).encode()
            head("200 OK", {"Content-Type": "application/json", "Content-Length": str(len(body))})
            writer.write(body)
        else:
            head("404 Not Found", {"Content-Length": "0"})
        await writer.drain()


async def flood_unterminated(path: str, clients: int, line_bytes: int) -> tuple[int, int]:
    """Each client sends ``line_bytes`` without a newline; returns (answered, refused/reset)."""
    chunk = b"x" * 65536
    answered = reset = 0

    async def one() -> None:
        # a raw socket: after the daemon closes, its answer is still there to read
        # (asyncio's streams drop the transport at the first failed write)
        nonlocal answered, reset
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            for _ in range(100):  # a full listen backlog refuses at once: a real client tries again
                sock.setblocking(False)
                try:
                    await loop.sock_connect(sock, path)
                    sock.getpeername()  # asyncio takes a Unix socket's EAGAIN for "in progress": check
                    break
                except OSError:  # a full backlog: a new socket, a moment later
                    sock.close()
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    await asyncio.sleep(0.1)
            else:
                raise ConnectionRefusedError("listen backlog stayed full")
            sock.setblocking(False)
            sent = 0
            try:
                while sent < line_bytes:
                    await loop.sock_sendall(sock, chunk)
                    sent += len(chunk)
            except OSError:
                pass  # answered and closed before taking it all
            data = b""
            while b"\n" not in data:
                got = await asyncio.wait_for(loop.sock_recv(sock, 4096), 30)
                if not got:
                    break
                data += got
            if b"\n" in data and b'"ok": false' in data:
                answered += 1
            else:
                reset += 1
        except (OSError, asyncio.TimeoutError):
            reset += 1
        finally:
            sock.close()

    await asyncio.gather(*(one() for _ in range(clients)))
    return answered, reset


_CLIENT_READS = """
import asyncio, sys, time
from agentd.errors import MalformedResponse
from agentd_plugins.genesys.client import GenesysClient
from agentd_plugins.genesys.settings import GenesysSettings
from agentd_plugins.genesys.tokens import AccessToken, TokenManager

async def main():
    async def fixed():
        return AccessToken("t", time.time() + 3600, "client_credentials")
    settings = GenesysSettings(api_base_url=sys.argv[1], login_base_url=sys.argv[1], timeout_s=float(sys.argv[3]), max_retries=0)
    async with GenesysClient(settings, tokens=TokenManager(fixed)) as client:
        started = time.monotonic()
        try:
            await client.get(sys.argv[2])
            print(f"{time.monotonic() - started:.3f} READ WHOLE")
        except MalformedResponse as exc:
            print(f"{time.monotonic() - started:.3f} REFUSED {exc}")

asyncio.run(main())
# this process's own peak: VmHWM (ru_maxrss would count the parent's pages from before exec)
print("VmHWM", next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")))
"""


@dataclass(frozen=True)
class ClientRead:
    """What the Genesys client made of one hostile answer, in a process of its own."""

    refused: bool
    seconds: float | None
    message: str
    peak_mb: float


def client_reads_in_fresh_process(base_url: str, path: str, *, timeout_s: float = 60.0) -> ClientRead:
    """GET ``path`` with the Genesys client in a fresh Python (so the peak is its own)."""
    done = subprocess.run([sys.executable, "-c", _CLIENT_READS, base_url, path, str(timeout_s)],
                          capture_output=True, text=True, timeout=timeout_s + 60)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or len(lines) < 2 or not lines[-1].startswith("VmHWM"):
        raise RuntimeError(f"the client process failed (exit {done.returncode}): {done.stdout[-500:]}{done.stderr[-1500:]}")
    seconds, outcome, message = (lines[-2].split(" ", 2) + ["", ""])[:3]
    return ClientRead(outcome == "REFUSED", float(seconds), message, int(lines[-1].split()[1]) / 1024)
