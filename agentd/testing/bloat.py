"""A bloated line in the network lab: a tbf rate limit with a deep queue on the router, and
the ``path.load`` check's load service in the server namespace.

    with Netlab.create() as lab, load_service(lab, env) as url:
        bloat = limit_rate(lab, rate_kbit=4000, queue_ms=300)   # the uplink: agent -> server
        ... run `agentd check --profile full --only path.load` in the agent namespace ...
        clear_rate(lab)

The truth of a run is the queue's delay when full: tbf's child queue holds ``limit`` bytes
that drain at ``rate``, so a packet that joins a full queue waits ``limit * 8 / rate``.
The bucket's ``burst`` only lets that many bytes through at line rate after an idle
moment (under load the bucket stays empty); it is kept at two full frames.

This kernel has no netem, fq or fq_codel (DESIGN.md); tbf is built in.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from dataclasses import dataclass
from typing import Iterator, Literal

from agentd.testing.netlab import Netlab, _run

BURST_BYTES = 3028
"""Two full Ethernet frames: the least a tbf takes without stalling full-size packets."""


@dataclass(frozen=True)
class RateLimit:
    direction: str
    rate_kbit: int
    limit_bytes: int
    burst_bytes: int

    @property
    def queue_ms(self) -> float:
        """The delay a packet meets at the tail of a full queue: the run's truth."""
        return self.limit_bytes * 8 / self.rate_kbit


def limit_rate(lab: Netlab, *, rate_kbit: int, queue_ms: float, direction: Literal["up", "down"] = "up") -> RateLimit:
    """A tbf on the router's egress toward the server (``up``) or the agent (``down``), whose
    queue adds ``queue_ms`` when full."""
    if rate_kbit <= 0 or queue_ms <= 0:
        raise ValueError("rate_kbit and queue_ms must be positive")
    dev = "wan" if direction == "up" else "lan"
    limit = int(round(rate_kbit * 1000 / 8 * queue_ms / 1000))
    _run(["ip", "netns", "exec", lab.router, "tc", "qdisc", "replace", "dev", dev, "root", "tbf",
          "rate", f"{rate_kbit}kbit", "burst", str(BURST_BYTES), "limit", str(limit)])
    return RateLimit(direction, rate_kbit, limit, BURST_BYTES)


def clear_rate(lab: Netlab) -> None:
    """Remove the rate limits (both directions); a link without one is left alone."""
    for dev in ("wan", "lan"):
        subprocess.run(["ip", "netns", "exec", lab.router, "tc", "qdisc", "del", "dev", dev, "root"], capture_output=True)


def qdisc_stats(lab: Netlab, direction: Literal["up", "down"] = "up") -> str:
    dev = "wan" if direction == "up" else "lan"
    return _run(["ip", "netns", "exec", lab.router, "tc", "-s", "qdisc", "show", "dev", dev]).stdout


@contextlib.contextmanager
def load_service(lab: Netlab, env: dict[str, str], *, port: int = 8760, extra: tuple[str, ...] = (), duration_s: float = 900) -> Iterator[tuple[str, subprocess.Popen]]:
    """``agentd reflect --http-port`` in the server namespace; yields (url, process).

    Its output is read to its end after it stops: the caller reads ``proc.stdout`` lines."""
    proc = lab.popen_in(
        lab.server,
        [sys.executable, "-m", "agentd", "reflect", "--listen", lab.server_ip, "--http-port", str(port), "--duration", str(duration_s), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()  # printed once it listens
        if "load service on" not in line:
            proc.kill()
            raise RuntimeError(f"agentd reflect did not start: {line!r} {proc.stderr.read()[-2000:]}")
        yield f"http://{lab.server_ip}:{port}", proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if proc.poll() is None:
            proc.kill()
