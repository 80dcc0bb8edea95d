"""A throw-away PostgreSQL (Debian's ``postgresql`` package) for tests and benchmarks.

Started in a temporary folder on a free loopback port, as an unprivileged user
(``nobody`` when run as root: postgres refuses root), with trust authentication on
loopback only, and removed afterwards::

    with running_postgres() as pg:
        url = pg.url()          # postgresql://nobody@127.0.0.1:PORT/postgres
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class Postgres:
    folder: Path
    port: int
    user: str
    proc: subprocess.Popen
    max_connections: int = 300
    start_timeout_s: float = 60.0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def restart(self) -> None:
        """Stop the server (every client connection is cut, as in a real restart) and
        start it again on the same folder and port."""
        _stop(self.proc, self.folder, self.user)
        self.proc = _start(self.folder, self.port, self.user, self.max_connections, self.start_timeout_s)


def available() -> bool:
    return (PG_BIN / "initdb").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_postgres(max_connections: int = 300, start_timeout_s: float = 60.0) -> Iterator[Postgres]:
    if not available():
        raise RuntimeError(f"PostgreSQL is not installed ({PG_BIN}): apt-get install postgresql")
    root = os.geteuid() == 0
    user = "nobody" if root else pwd.getpwuid(os.geteuid()).pw_name
    as_user = _as_user(user)
    folder = Path(tempfile.mkdtemp(prefix="agentd-pg-"))
    proc: subprocess.Popen | None = None
    try:
        os.chmod(folder, 0o755)
        data = folder / "data"
        data.mkdir()
        if root:
            shutil.chown(data, user=user)
        init = subprocess.run([*as_user, str(PG_BIN / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync"],
                              capture_output=True, text=True, timeout=180)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.strip()[-500:]}")
        port = _free_port()
        proc = _start(data, port, user, max_connections, start_timeout_s)
        running = Postgres(data, port, user, proc, max_connections, start_timeout_s)
        try:
            yield running
        finally:
            proc = running.proc  # restarted: the newest server
    finally:
        if proc is not None:
            _stop(proc, data, user)
        shutil.rmtree(folder, ignore_errors=True)


def _as_user(user: str) -> list[str]:
    return ["runuser", "-u", user, "--"] if os.geteuid() == 0 else []


def _start(data: Path, port: int, user: str, max_connections: int, start_timeout_s: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [*_as_user(user), str(PG_BIN / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", str(data),
         "-c", "fsync=off", "-c", f"max_connections={max_connections}", "-c", "shared_buffers=32MB"],
        stdout=subprocess.DEVNULL, stderr=open(data.parent / "postgres.log", "ab"),
    )
    deadline = time.monotonic() + start_timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited: {(data.parent / 'postgres.log').read_text()[-500:]}")
        probe = subprocess.run([str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True, timeout=10)
        if probe.returncode == 0:
            return proc
        if time.monotonic() > deadline:
            _stop(proc, data, user)
            raise RuntimeError(f"postgres did not accept connections within {start_timeout_s:g} s")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen, data: Path, user: str) -> None:
    """``pg_ctl stop -m fast`` (clients are disconnected at once, as in a restart by an
    operator), then a kill of what is left."""
    if proc.poll() is None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run([*_as_user(user), str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "20", "stop"],
                           capture_output=True, timeout=30)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
