"""The load target of ``path.load``: a small HTTP/1.1 service that sinks uploads and serves
byte-capped downloads, run by ``agentd reflect --http-port PORT`` (asyncio only: no hub deps).

Bounded by design, so it cannot be used to flood anyone:
- a test starts with ``POST /load/v1/session`` and gets a session id; at most
  ``max_tests`` sessions live at once (the rest get ``429`` with ``Retry-After``), so many
  PCs of one site never load their shared line at the same time;
- every session has a byte budget per direction (``max_bytes``) and a lifetime
  (``ttl_s``); transfers stop at either; a download never sends more than asked;
- ``token``, when set, must come as ``Authorization: Bearer <token>`` (else ``401``);
- requests are small and read under deadlines; anything malformed is answered ``400`` and
  closed.

Paths (all answers JSON except the download body)::

    POST   /load/v1/session                 -> 200 {"session", "max_bytes", "ttl_s"} | 429 | 401
    POST   /load/v1/upload?session=S        Content-Length: N (<= budget left) -> 200 {"received"}
    GET    /load/v1/download?session=S&bytes=N                  -> 200, N bytes (<= budget left)
    DELETE /load/v1/session?session=S                           -> 200 {"uploaded", "downloaded"}
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from agentd.errors import UsageError

PREFIX = "/load/v1"
CHUNK = 64 * 1024
_BLOCK = os.urandom(CHUNK)  # incompressible filler for downloads
HEADER_LIMIT = 8192
HEADER_TIMEOUT_S = 5.0


@dataclass
class LoadSession:
    id: str
    started: float
    expires: float
    max_bytes: int
    uploaded: int = 0
    downloaded: int = 0
    peer: str = ""

    def left_up(self) -> int:
        return max(0, self.max_bytes - self.uploaded)

    def left_down(self) -> int:
        return max(0, self.max_bytes - self.downloaded)


@dataclass
class LoadStats:
    admitted: int = 0
    busy: int = 0
    refused: int = 0
    uploaded: int = 0
    downloaded: int = 0
    ended: list[dict] = field(default_factory=list)
    """The last sessions' byte counts (at most 100), for ``agentd reflect``'s own log and the tests."""


class LoadService:
    """The service's state, independent of the HTTP front end: sessions, budgets, limits."""

    def __init__(self, *, max_tests: int = 2, max_bytes: int = 64 * 2**20, ttl_s: float = 30.0, token: str | None = None) -> None:
        if max_tests < 1 or max_bytes < CHUNK or ttl_s <= 0:
            raise UsageError("load service: max_tests must be at least 1, max_bytes at least 64 KiB, ttl positive")
        self.max_tests = max_tests
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.token = token
        self.sessions: dict[str, LoadSession] = {}
        self.stats = LoadStats()

    def authorised(self, header: str | None) -> bool:
        if not self.token:
            return True
        scheme, _, value = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode())

    def _expire(self, now: float) -> None:
        for sid in [s.id for s in self.sessions.values() if s.expires <= now]:
            self.end(sid)

    def retry_after_s(self, now: float) -> int:
        soonest = min((s.expires for s in self.sessions.values()), default=now)
        return max(1, int(soonest - now + 0.999))

    def admit(self, peer: str = "") -> LoadSession | None:
        """A new session, or None when ``max_tests`` are running (answer busy)."""
        now = time.monotonic()
        self._expire(now)
        if len(self.sessions) >= self.max_tests:
            self.stats.busy += 1
            return None
        session = LoadSession(secrets.token_hex(16), now, now + self.ttl_s, self.max_bytes, peer=peer)
        self.sessions[session.id] = session
        self.stats.admitted += 1
        return session

    def get(self, sid: str | None) -> LoadSession | None:
        self._expire(time.monotonic())
        return self.sessions.get(sid or "")

    def end(self, sid: str) -> LoadSession | None:
        session = self.sessions.pop(sid, None)
        if session is not None:
            self.stats.ended.append({"uploaded": session.uploaded, "downloaded": session.downloaded, "max_bytes": session.max_bytes})
            del self.stats.ended[:-100]
        return session


# -- the HTTP front end -----------------------------------------------------------------------


class _Bad(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            410: "Gone", 413: "Content Too Large", 429: "Too Many Requests"}


async def _answer(writer: asyncio.StreamWriter, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
    data = json.dumps(body).encode()
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", "Content-Type: application/json",
            f"Content-Length: {len(data)}", "Cache-Control: no-store"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
    await writer.drain()


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]] | None:
    try:
        async with asyncio.timeout(HEADER_TIMEOUT_S):
            raw = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    except asyncio.LimitOverrunError:
        raise _Bad(400, "request head too large") from None
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _Bad(400, "not an HTTP/1.x request line")
    headers = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise _Bad(400, "a header line without a colon")
            headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1], headers


class LoadHttpServer:
    """``asyncio.start_server`` front end of a :class:`LoadService`."""

    def __init__(self, service: LoadService) -> None:
        self.service = service
        self.server: asyncio.base_events.Server | None = None
        self._handlers: set[asyncio.Task] = set()

    async def start(self, host: str, port: int) -> int:
        try:
            self.server = await asyncio.start_server(self._handle, host, port, limit=HEADER_LIMIT)
        except OSError as exc:
            raise UsageError(f"cannot listen on {host} port {port} (HTTP): {exc.strerror or exc}") from None
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=2.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        peer = writer.get_extra_info("peername")
        try:
            while True:
                try:
                    head = await _read_head(reader)
                    if head is None:
                        return
                    keep = await self._route(*head, reader, writer, peer[0] if peer else "")
                except _Bad as exc:
                    await _answer(writer, exc.status, {"error": str(exc)}, {**exc.headers, "Connection": "close"})
                    return
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            return
        finally:
            if task is not None:
                self._handlers.discard(task)
            writer.close()

    async def _route(self, method: str, target: str, headers: dict[str, str], reader, writer, peer: str) -> bool:
        service = self.service
        split = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(split.query).items()}
        path = split.path.rstrip("/")
        if not path.startswith(PREFIX):
            raise _Bad(404, f"no such path; the load service answers under {PREFIX}/")
        if not service.authorised(headers.get("authorization")):
            service.stats.refused += 1
            raise _Bad(401, "a valid load token is needed (Authorization: Bearer ...)")
        name = path[len(PREFIX):]
        if name == "/session" and method == "POST":
            session = service.admit(peer)
            if session is None:
                wait = service.retry_after_s(time.monotonic())
                raise _Bad(429, f"{service.max_tests} load test(s) already running here; try again later", {"Retry-After": str(wait)})
            await _answer(writer, 200, {"session": session.id, "max_bytes": session.max_bytes, "ttl_s": service.ttl_s})
            return True
        if name not in ("/session", "/upload", "/download"):
            raise _Bad(404, "no such path")
        session = service.get(query.get("session"))
        if session is None:
            raise _Bad(410, "no such session (ended or expired)")
        if name == "/session":
            if method != "DELETE":
                raise _Bad(405, "POST to start a session, DELETE to end one")
            service.end(session.id)
            await _answer(writer, 200, {"uploaded": session.uploaded, "downloaded": session.downloaded})
            return True
        if name == "/upload":
            if method != "POST":
                raise _Bad(405, "POST the upload")
            try:
                length = int(headers.get("content-length", ""))
            except ValueError:
                raise _Bad(400, "an upload needs a Content-Length") from None
            if length < 0 or length > session.left_up():
                raise _Bad(413, f"an upload of {length} bytes exceeds the session's budget ({session.left_up()} left)")
            await self._sink(reader, session, length)
            await _answer(writer, 200, {"received": length})
            return True
        if method != "GET":
            raise _Bad(405, "GET the download")
        try:
            wanted = int(query.get("bytes", ""))
        except ValueError:
            raise _Bad(400, "a download needs bytes=N") from None
        if wanted < 0:
            raise _Bad(400, "bytes must not be negative")
        size = min(wanted, session.left_down())
        session.downloaded += size  # reserved up front: two parallel downloads never exceed the budget
        service.stats.downloaded += size
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\nCache-Control: no-store\r\n\r\n".encode())
        sent = 0
        while sent < size:
            if time.monotonic() > session.expires:
                return False  # the session's time is up: cut the transfer (the client sees a short body)
            n = min(CHUNK, size - sent)
            writer.write(_BLOCK[:n])
            sent += n
            await writer.drain()
        return True

    async def _sink(self, reader: asyncio.StreamReader, session: LoadSession, length: int) -> None:
        got = 0
        while got < length:
            left = session.expires - time.monotonic()
            if left <= 0:
                raise ConnectionError("session expired")
            async with asyncio.timeout(left):
                data = await reader.read(min(CHUNK, length - got))
            if not data:
                raise ConnectionError("upload cut short")
            got += len(data)
            session.uploaded += len(data)
            self.service.stats.uploaded += len(data)


async def serve_http(service: LoadService, host: str, port: int, *, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set; prints its address once listening."""
    front = LoadHttpServer(service)
    bound = await front.start(host, port)
    print(f"agentd reflect: load service on http://{host}:{bound}{PREFIX}/ (at most {service.max_tests} tests at once, "
          f"{service.max_bytes // 2**20} MiB each way per test), pid {os.getpid()}", flush=True)
    try:
        await stop.wait()
    finally:
        await front.close()
    s = service.stats
    print(f"agentd reflect: load service stopped; {s.admitted} tests, {s.busy} turned away busy, "
          f"{s.uploaded} bytes up, {s.downloaded} bytes down", flush=True)
