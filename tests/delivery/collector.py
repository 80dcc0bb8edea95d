"""A real report collector on loopback, for delivery tests.

It dedupes on ``Idempotency-Key`` (as a collector must for exactly-once), checks the
bearer token or the HMAC signature, and can be switched between behaviours:
``down`` (the port refuses connections), ``unavailable`` (503), ``store_then_hang``
(keeps the report, then holds the answer back: a client killed now never learns it
was stored), ``stall`` (holds every answer ``stall_s`` seconds, then stores: a collector
behind an overloaded proxy) and ``up``. ``answers`` maps a report id to the status the
collector gives it instead of storing it (413, 422: a report it refuses for good).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Collector:
    port: int = field(default_factory=free_port)
    token: str | None = None
    hmac_key: str | None = None
    mode: str = "down"
    retry_after: str | None = None
    unavailable_posts: int = 0  # answer 503 to this many posts, then store (no timer races)
    stall_s: float = 60.0
    answers: dict[str, int] = field(default_factory=dict)
    stored: dict[str, bytes] = field(default_factory=dict)
    stores: Counter = field(default_factory=Counter)
    posts: Counter = field(default_factory=Counter)
    rejected: list[str] = field(default_factory=list)
    in_flight: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    tls: "ssl.SSLContext | None" = None
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/agentd/reports"

    def set(self, mode: str) -> None:
        """Switch behaviour; ``down`` closes the listening socket (connection refused)."""
        self.mode = mode
        if mode == "down":
            self._stop()
        elif self._server is None:
            self._start()

    def _start(self) -> None:
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                key = self.headers.get("Idempotency-Key", "")
                collector.posts[key] += 1
                problem = collector.authenticate(self.headers, body)
                if problem:
                    collector.rejected.append(problem)
                    return self._answer(401, {"error": problem})
                if collector.mode == "unavailable" or collector.unavailable_posts > 0:
                    collector.unavailable_posts = max(0, collector.unavailable_posts - 1)
                    headers = {"Retry-After": collector.retry_after} if collector.retry_after else {}
                    return self._answer(503, {"error": "warming up"}, headers)
                refused = collector.answers.get(key)
                if refused is not None:
                    return self._answer(refused, {"error": f"refused with {refused}"})
                if collector.mode == "stall":
                    collector.release.wait(collector.stall_s)  # bounded; close() releases it
                duplicate = collector.keep(key, body)
                if collector.mode == "store_then_hang":
                    collector.in_flight.set()
                    collector.release.wait(30)  # bounded: the test kills the client long before
                return self._answer(200 if duplicate else 201, {"id": key, "duplicate": duplicate})

            def _answer(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client was killed while we held the answer

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="collector", daemon=True).start()

    def _stop(self) -> None:
        if self._server is not None:
            self.release.set()
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def close(self) -> None:
        self._stop()

    def authenticate(self, headers, body: bytes) -> str | None:
        if self.token is not None and headers.get("Authorization") != f"Bearer {self.token}":
            return "bad bearer token"
        if self.hmac_key is not None:
            stamp = headers.get("X-Agentd-Timestamp", "")
            expected = "sha256=" + hmac.new(self.hmac_key.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(headers.get("X-Agentd-Signature", ""), expected):
                return "bad signature"
        return None

    def keep(self, key: str, body: bytes) -> bool:
        """Store once per idempotency key; True when it was a duplicate."""
        with self._lock:
            if key in self.stored:
                return True
            report = json.loads(body)
            assert report["id"] == key, "the idempotency key must be the report id"
            self.stored[key] = body
            self.stores[key] += 1
            return False
