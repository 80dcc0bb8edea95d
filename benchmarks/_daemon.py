"""What the daemon benchmarks share: ``agentd run`` in a folder of its own, waited for
until it says READY=1 on a NOTIFY_SOCKET, stopped with one SIGTERM; and /proc figures."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator


@dataclass
class BenchDaemon:
    proc: subprocess.Popen
    env: dict[str, str]
    root: Path
    ready_s: float
    stop_s: float | None = None
    exit_code: int | None = None

    @property
    def control_socket(self) -> Path:
        return self.root / "run" / "control.sock"


@contextlib.contextmanager
def isolated_daemon(root: Path, config_text: str, *, ready_timeout_s: float,
                    stderr: IO[bytes] | int = subprocess.DEVNULL) -> Iterator[BenchDaemon]:
    """``agentd run`` with its config, state and runtime under ``root``; yields once READY=1
    came (within ``ready_timeout_s``, other notify messages or not), then SIGTERM and a
    bounded wait (a daemon still running after it is killed), whatever happened."""
    config = root / "agentd.toml"
    config.write_text(config_text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTD_")}
    env.update(AGENTD_CONFIG=str(config), AGENTD_STATE_DIR=str(root / "state"), AGENTD_RUNTIME_DIR=str(root / "run"),
               XDG_CONFIG_HOME=str(root / "xdg"), NOTIFY_SOCKET=str(root / "notify.sock"))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(root / "notify.sock"))
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "agentd", "run"], env=env, stderr=stderr, stdout=subprocess.DEVNULL)
    daemon = BenchDaemon(proc, env, root, ready_s=0.0)
    try:
        while True:
            left = ready_timeout_s - (time.monotonic() - started)
            if left <= 0:
                raise TimeoutError(f"agentd run sent no READY=1 within {ready_timeout_s:g} s (exit code {proc.poll()})")
            notify.settimeout(left)
            if b"READY=1" in notify.recv(4096):
                break
        daemon.ready_s = time.monotonic() - started
        yield daemon
    finally:
        proc.send_signal(signal.SIGTERM)
        stop_started = time.monotonic()
        try:
            daemon.exit_code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            daemon.exit_code = proc.wait(timeout=30)
        daemon.stop_s = time.monotonic() - stop_started
        notify.close()


def status_kb(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` figure in kB (VmRSS, VmHWM), 0 when absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0
