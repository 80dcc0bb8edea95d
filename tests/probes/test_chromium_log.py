"""benchmarks/chromium.py reads libwebrtc's log: which UDP TURN allocation Chromium used and
which it discarded. Lines in Chromium 156's format (Debian bookworm), from a lab run at 10 %
loss each way; only the parts the parser reads."""

from __future__ import annotations

from benchmarks.chromium import turn_ports_from_log

PORT = "Port[{}:0:1:0:relay:Net[any:0.0.0.x/0:Wildcard:id=0]]"


def line(at: str, where: str, text: str, port: str | None = None, level: str = "INFO") -> str:
    prefix = f"[520:580:1130/0038{at}:{level}:third_party/webrtc/p2p/{where}] "
    return prefix + (PORT.format(port) + ": " if port else "") + text


LOG = "\n".join([
    line("53.849627", "base/turn_port.cc:417", "Trying to connect to TURN server via udp @ 198.18.0.x:3478", "54700"),
    line("53.849795", "base/turn_port.cc:1391", "TURN allocate request sent, id=6330432b", "54700"),
    line("53.850087", "base/turn_port.cc:417", "Trying to connect to TURN server via tcp @ 198.18.0.x:3478", "54200"),
    line("53.851512", "base/turn_port.cc:417", "Trying to connect to TURN server via udp @ 198.18.0.x:3478", "55100"),
    line("53.852266", "base/turn_port.cc:1391", "TURN allocate request sent, id=5a355067", "55100"),
    line("53.853939", "base/turn_port.cc:1391", "TURN allocate request sent, id=57423264", "55100"),
    line("53.859032", "base/turn_port.cc:1391", "TURN allocate request sent, id=4257482b", "54200"),
    line("53.863749", "base/turn_port.cc:1391", "TURN allocate request sent, id=5050414e", "54200"),
    line("53.866765", "base/turn_port.cc:1397", "TURN allocate requested successfully, id=5050414e", "54200"),
    line("53.866971", "client/basic_port_allocator.cc:954", "Gathered candidate: Cand[:4014037638:1:udp:16785407:relay]", "54200"),
    line("53.867047", "client/basic_port_allocator.cc:987", "Port ready.", "54200"),
    line("53.881405", "base/p2p_transport_channel.cc:976", "P2PTransportChannel: 0, component 1 gathering complete"),
    # the UDP allocation whose first request was lost: retransmitted after 250 ms, allocated, discarded
    line("54.111927", "base/turn_port.cc:1391", "TURN allocate request sent, id=6330432b", "54700"),
    line("54.114790", "base/turn_port.cc:1391", "TURN allocate request sent, id=37717561", "54700"),
    line("54.115953", "base/turn_port.cc:1397", "TURN allocate requested successfully, id=37717561", "54700"),
    line("54.116100", "client/basic_port_allocator.cc:954", "Gathered candidate: Cand[:252583454:1:udp:50340095:relay]", "54700"),
    line("54.116210", "client/basic_port_allocator.cc:959", "Discarding candidate because port is already done gathering.", level="WARNING"),
    # one that never allocated (the run ended first)
    "a line in no known format",
])


def test_each_udp_turn_port_with_its_sends_its_allocation_and_what_became_of_it():
    seen = turn_ports_from_log(LOG)
    assert seen["udp_ports"] == [
        {"protocol": "udp", "sends": 3, "allocated_ms": 266.3, "fate": "discarded"},
        {"protocol": "udp", "sends": 2, "allocated_ms": None, "fate": None},
    ]
    assert seen["gathering_done_ms"] == [31.8]  # the TCP relay's pair connected first


def test_a_udp_allocation_used_before_gathering_ended_is_ready():
    log = "\n".join([
        line("53.000000", "base/turn_port.cc:417", "Trying to connect to TURN server via udp @ 198.18.0.x:3478", "1"),
        line("53.000100", "base/turn_port.cc:1391", "TURN allocate request sent, id=a", "1"),
        line("53.002000", "base/turn_port.cc:1391", "TURN allocate request sent, id=b", "1"),
        line("53.004500", "base/turn_port.cc:1397", "TURN allocate requested successfully, id=b", "1"),
        line("53.004600", "client/basic_port_allocator.cc:954", "Gathered candidate: Cand[:1:1:udp:50340095:relay]", "1"),
        line("53.004700", "client/basic_port_allocator.cc:987", "Port ready.", "1"),
    ])
    assert turn_ports_from_log(log) == {"udp_ports": [{"protocol": "udp", "sends": 2, "allocated_ms": 4.5, "fate": "ready"}], "gathering_done_ms": []}
    assert turn_ports_from_log("") == {"udp_ports": [], "gathering_done_ms": []}
