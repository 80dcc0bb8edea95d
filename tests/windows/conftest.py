"""Fixtures of the Windows tests: one Wine bench per session (tests/windows/wine.py), a
coturn on loopback, a collector for the spool test.

They run in ``./tests/run``. ``AGENTD_SKIP_WINE=1`` skips the tests under Wine (the seam
tests still run); they are skipped, with the reason, when Wine is not installed."""

from __future__ import annotations

import contextlib
import os
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from agentd.testing import coturn as coturn_mod
from agentd.testing.coturn import Coturn
from tests.windows.wine import Wine, wine_missing, wine_session


@pytest.fixture(scope="session")
def wine(tmp_path_factory) -> Iterator[Wine]:
    if os.environ.get("AGENTD_SKIP_WINE") == "1":
        pytest.skip("AGENTD_SKIP_WINE=1: the tests under Wine are skipped")
    missing = wine_missing()
    if missing:
        pytest.skip(f"Windows tests need Wine: {missing}")
    with wine_session(tmp_path_factory.mktemp("wine")) as bench:
        yield bench


@pytest.fixture(scope="module")
def turn(tmp_path_factory) -> Iterator[Coturn]:
    if not coturn_mod.available():
        pytest.skip("coturn's turnserver is not installed (tests/run installs the Debian package coturn)")
    with Coturn.start(tmp_path_factory.mktemp("turn"), listen_ip="127.0.0.1") as server:
        yield server


class Collector:
    """An HTTP collector on loopback counting the reports it accepted, by report id."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.accepted: dict[str, int] = {}
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/reports"

    def start(self) -> None:
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                report_id = json.loads(body).get("id", "?")
                collector.accepted[report_id] = collector.accepted.get(report_id, 0) + 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def collector() -> Iterator[Collector]:
    """Not listening until ``start()``: a collector that is down, then comes up on the same port."""
    found = Collector(coturn_mod.free_port("127.0.0.1", kinds=(__import__("socket").SOCK_STREAM,)))
    try:
        yield found
    finally:
        found.stop()


def toml_path(path: Path | str) -> str:
    """A Windows path as a TOML literal string."""
    return f"'{path}'"


@contextlib.contextmanager
def service_installed(wine: Wine, config_text: str) -> Iterator[None]:
    """The service registered (on demand) with ``config_text`` as %ProgramData%\\agentd\\agentd.toml;
    removed afterwards even when the test failed."""
    wine.program_data.mkdir(parents=True, exist_ok=True)
    (wine.program_data / "agentd.toml").write_text(config_text, encoding="utf-8")
    done = wine.agentd("service", "install", "--start", "demand")
    assert done.returncode == 0, done.stderr[-2000:]
    try:
        yield
    finally:
        wine.agentd("service", "uninstall", timeout=180)
