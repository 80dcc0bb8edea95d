"""Helpers of the media.path tests: a configuration for a coturn, and one media.path run.

The coturn, lab and silent-server fixtures themselves are in conftest.py (shared with
the stun/nat/turn tests); these helpers only shape what media.path needs around them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, Callable

from agentd.testing.coturn import Coturn
from agentd.testing.invariants import assert_every_bad_check_explained
from tests.conftest import OFFLINE_GENESYS


def media_config(
    turn: Coturn,
    *,
    password: str | None = None,
    urls: list[str] | None = None,
    ice: str = "",
    media: str = "",
    trust_ca: bool = True,
) -> str:
    """An agentd.toml for ``turn``: its [ice] section (only ``urls`` when given) and ``[media]`` keys."""
    head = OFFLINE_GENESYS + "[ice]\n" + (f'ca_file = "{turn.certs.ca}"\n' if trust_ca else "") + ice + "\n"
    if urls is None:
        servers = turn.ice_servers_toml(password=password)
    else:
        servers = (
            "[[ice.servers]]\n"
            "urls = [" + ", ".join(f'"{u}"' for u in urls) + "]\n"
            f'username = "{turn.username}"\n'
            f'credential = "{password if password is not None else turn.password}"\n'
        )
    return head + servers + "\n[media]\n" + media


def media_check(run: Callable[..., subprocess.CompletedProcess], *extra: str, timeout: float = 60.0) -> tuple[dict[str, Any], subprocess.CompletedProcess]:
    """Run ``agentd check --only media.path --json`` through ``run`` and return the check's row."""
    proc = run("check", "--only", "media.path", "--json", "--no-daemon", *extra, timeout=timeout)
    assert proc.stdout.strip(), f"no report (exit {proc.returncode}): {proc.stderr[-3000:]}"
    report = json.loads(proc.stdout)
    assert_every_bad_check_explained(report)
    rows = [c for c in report["checks"] if c["id"] == "media.path"]
    assert len(rows) == 1, report["checks"]
    return rows[0], proc


def lab_runner(netlab, env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess]:
    """A ``run(*args, timeout=)`` that runs ``python -m agentd ARGS`` inside the lab's agent namespace."""

    def run(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return netlab.run_in_agent([sys.executable, "-m", "agentd", *args], env=env, timeout=timeout)

    return run


def relay_ports(server: Coturn) -> list[int]:
    """The relay sockets coturn holds open now: UDP ports of its relay range, minus its own
    listening ports (picked free from the kernel's ephemeral range, which overlaps)."""
    import psutil

    pid = int((server.folder / "turn.pid").read_text())
    listening = {server.port, server.alt_port, server.tls_port, server.tls_port + 1}
    process = psutil.Process(pid)
    # psutil before 6.0 (pyproject.toml allows 5.9.4) names it connections()
    sockets = process.net_connections(kind="udp") if hasattr(process, "net_connections") else process.connections(kind="udp")
    return sorted({c.laddr.port for c in sockets if 49152 <= c.laddr.port <= 59999} - listening)


async def relays_gone(server: Coturn, limit_s: float = 3.0) -> list[int]:
    """Wait (bounded) until coturn holds no relay socket; it frees deleted allocations on a 1 s timer."""
    import asyncio
    import time

    end = time.monotonic() + limit_s
    while (left := relay_ports(server)) and time.monotonic() < end:
        await asyncio.sleep(0.1)
    return left
