"""benchmarks/chromium.py reads libwebrtc's log: which UDP TURN allocation Chromium used and
which it discarded. Lines in Chromium 156's format (Debian bookworm), after a lab run at 10 %
loss each way (one port added: a UDP allocation that lost nothing); only the parts the parser reads."""

from __future__ import annotations

from benchmarks.chromium import turn_ports_from_log

PORT = "Port[{}:0:1:0:relay:Net[any:0.0.0.x/0:Wildcard:id=0]]"


def line(at: str, where: str, text: str, port: str | None = None, level: str = "INFO") -> str:
    prefix = f"[520:580:1130/0038{at}:{level}:third_party/webrtc/p2p/{where}] "
    return prefix + (PORT.format(port) + ": " if port else "") + text


def turn_port(at: str, port: str, protocol: str) -> str:
    return line(at, "base/turn_port.cc:417", f"Trying to connect to TURN server via {protocol} @ 198.18.0.x:3478", port)


def sent(at: str, port: str) -> str:
    return line(at, "base/turn_port.cc:1391", "TURN allocate request sent, id=6330432b", port)


def allocated(at: str, port: str) -> str:
    return line(at, "base/turn_port.cc:1397", "TURN allocate requested successfully, id=37717561", port)


def gathered(at: str, port: str) -> str:
    return line(at, "client/basic_port_allocator.cc:954", "Gathered candidate: Cand[:252583454:1:udp:50340095:relay]", port)


LOG = "\n".join([
    turn_port("53.849627", "54700", "udp"),
    sent("53.849795", "54700"),
    turn_port("53.850087", "54200", "tcp"),
    turn_port("53.851512", "55100", "udp"),
    sent("53.852266", "55100"),
    turn_port("53.852300", "56300", "udp"),
    sent("53.852400", "56300"),
    sent("53.853939", "55100"),
    # a UDP allocation with nothing lost: allocated in 2 sends, its candidate used
    sent("53.854000", "56300"),
    allocated("53.856800", "56300"),
    gathered("53.856900", "56300"),
    line("53.857000", "client/basic_port_allocator.cc:987", "Port ready.", "56300"),
    # the TCP relay: allocated, its pair connected, gathering done
    sent("53.859032", "54200"),
    sent("53.863749", "54200"),
    allocated("53.866765", "54200"),
    gathered("53.866971", "54200"),
    line("53.867047", "client/basic_port_allocator.cc:987", "Port ready.", "54200"),
    line("53.881405", "base/p2p_transport_channel.cc:976", "P2PTransportChannel: 0, component 1 gathering complete"),
    # the UDP allocation whose first request was lost: retransmitted after 250 ms, allocated, discarded
    sent("54.111927", "54700"),
    sent("54.114790", "54700"),
    allocated("54.115953", "54700"),
    gathered("54.116100", "54700"),
    line("54.116210", "client/basic_port_allocator.cc:959", "Discarding candidate because port is already done gathering.", level="WARNING"),
    # port 55100 never allocated (the run ended first)
    "a line in no known format",
])


def test_each_udp_turn_port_with_its_sends_its_allocation_and_what_became_of_it():
    seen = turn_ports_from_log(LOG)
    assert seen["udp_ports"] == [
        {"protocol": "udp", "sends": 3, "allocated_ms": 266.3, "fate": "discarded"},
        {"protocol": "udp", "sends": 2, "allocated_ms": None, "fate": None},
        {"protocol": "udp", "sends": 2, "allocated_ms": 7.2, "fate": "ready"},
    ]
    assert seen["gathering_done_ms"] == [31.8]  # the TCP relay's pair connected first
    assert turn_ports_from_log("") == {"udp_ports": [], "gathering_done_ms": []}
