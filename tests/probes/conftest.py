"""Fixtures of the media probe tests: a real coturn on loopback, the network lab, and servers
that never answer or are closed.

Kept small and stable: the media.path tests (test_media*.py) use them too.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from agentd.testing import coturn as coturn_mod
from agentd.testing.coturn import Coturn
from agentd.testing.netlab import Netlab, NetlabUnavailable, unavailable_reason

LOOPBACK_SECOND_IP = "127.0.0.2"
"""coturn serves its alternate port only with two addresses; 127.0.0.0/8 is all loopback."""


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[Coturn]:
    """A real coturn on 127.0.0.1 (+127.0.0.2): STUN, TURN over UDP, TCP and TLS, a test CA."""
    if not coturn_mod.available():
        pytest.skip("coturn's turnserver is not installed (tests/run installs the Debian package coturn)")
    with Coturn.start(tmp_path / "turn", listen_ip="127.0.0.1", second_ip=LOOPBACK_SECOND_IP) as server:
        yield server


@dataclass
class SilentServer:
    """A UDP socket and a TCP listener on one loopback port that never answer: a blackhole
    that still accepts TCP connections (the kernel completes the handshake, nobody reads)."""

    host: str
    port: int


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    for _ in range(50):  # a free UDP port may be taken for TCP by another test run: try the next
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind(("127.0.0.1", port))
            break
        except OSError:
            udp.close()
            tcp.close()
    else:  # pragma: no cover
        pytest.fail("no loopback port free for both UDP and TCP")
    tcp.listen(16)
    try:
        yield SilentServer("127.0.0.1", port)
    finally:
        udp.close()
        tcp.close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (TCP RST, ICMP port unreachable for UDP)."""
    port = coturn_mod.free_port("127.0.0.1")
    return port


@pytest.fixture(scope="session")
def lab_unavailable() -> str | None:
    return unavailable_reason()


@pytest.fixture
def netlab(lab_unavailable) -> Iterator[Netlab]:
    """The network lab (agent ns behind a NAT router ns, server ns), plain NAT to start with."""
    if lab_unavailable:
        pytest.skip(f"network lab unavailable: {lab_unavailable}")
    try:
        with Netlab.create(nat="plain") as lab:
            yield lab
    except NetlabUnavailable as exc:
        pytest.skip(f"network lab unavailable: {exc}")


@pytest.fixture
def lab_coturn(netlab: Netlab, tmp_path: Path) -> Iterator[Coturn]:
    """coturn in the lab's server namespace (198.18.0.2 and .3)."""
    if not coturn_mod.available():
        pytest.skip("coturn's turnserver is not installed")
    with netlab.start_coturn(tmp_path / "lab-turn") as server:
        yield server
