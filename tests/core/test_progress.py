"""On a terminal a live display shows checks as they run; with --json there is none."""

from __future__ import annotations

import os
import pty
import select
import sys
import time


def _run_on_a_terminal(args: list[str], env: dict, timeout_s: float = 30.0) -> bytes:
    """Run ``python -m agentd ARGS`` with stdin/stdout/stderr on a pseudo-terminal."""
    pid, fd = pty.fork()
    if pid == 0:  # the child
        os.execve(sys.executable, [sys.executable, "-m", "agentd", *args], env)
    out = b""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        os.close(fd)
    return out


def test_live_progress_on_a_terminal_and_none_with_json(agentd_env):
    agentd_env.write_config('[genesys]\nregion = "agentd-test.invalid"\n[host]\nsample_s = 1.5\n')
    env = {**agentd_env.env, "TERM": "xterm-256color", "COLUMNS": "160"}
    env.pop("NO_COLOR", None)
    shown = _run_on_a_terminal(["check", "--no-daemon"], env)
    assert shown.count("running checks".encode()) >= 2, shown[-2000:]  # refreshed while the host check runs
    assert b"READY" in shown  # then the report
    quiet = _run_on_a_terminal(["check", "--no-daemon", "--json"], env)
    assert b"running checks" not in quiet
    assert b'"schema": "agentd.report/1"' in quiet
