"""Golden tests of the segment verdicts: media.path's loss placed where it starts.

The ``path`` check's rows are built in the shape plugins/FINDINGS.md promises, from the
figures the segment lab gives (200 gateway echoes, 100 probes per hop).
"""

from __future__ import annotations

import pytest

from agentd.model import Status

from .scenarios import check, clean_checks, patched, report
from .test_rules import assert_well_formed

SEGMENT_CODES = {"network.local_link", "network.isp", "network.beyond_isp"}
HOPS = [(1, "192.168.1.1", "home", True), (2, "203.0.113.1", "isp"), (3, "198.51.100.2", "isp"), (4, "192.0.2.10", "edge")]


def path_check(gateway: tuple[int, int] | None = (200, 0), hops: dict[int, tuple[int, int]] | None = None, **details):
    """The path check's row: ``gateway`` (sent, lost); ``hops`` by TTL (sent, lost), 100 of 100 answered otherwise."""
    rows = []
    for ttl, address, role, *gw in HOPS:
        sent, lost = (hops or {}).get(ttl, (100, 0))
        rows.append({"ttl": ttl, "address": address, "role": role, "sent": sent, "lost": lost, "received": sent - lost,
                     "loss_pct": 100.0 * lost / sent, "rtt_ms": 1.0, **({"gateway": True} if gw else {})})
    gw = None if gateway is None else {"address": "192.168.1.1", "method": "icmp", "sent": gateway[0], "lost": gateway[1],
                                       "received": gateway[0] - gateway[1], "loss_pct": 100.0 * gateway[1] / gateway[0], "rtt_ms": 0.5}
    return check("path", metrics={"gateway_loss_pct": gw and gw["loss_pct"]}, **{
        "target": "192.0.2.10", "gateway": gw, "hops": rows, "target_ttl": 4,
        "first_public_hop": {"ttl": 2, "address": "203.0.113.1"}, "public_address": "203.0.113.9", **details})


def lossy(loss: float = 9.75, legs: int = 600, path=None, **host_details):
    checks = clean_checks()
    lost = int(round(loss * legs / 100))
    checks["media.path"] = patched(
        checks["media.path"], status=Status.WARN, metrics={"loss_pct": loss, "rtt_ms": 3.0, "rtt_p95_ms": 6.0, "jitter_ms": 1.0, "mos": 3.8},
        legs_tried=legs, legs_lost=lost, loss_decision={"side": "above", "threshold_pct": 1.0},
    )
    checks["host"] = patched(checks["host"], **{"interface": "eth0", "interface_is_wifi": False, "wifi_signal_dbm": None,
                                                "vpn_interfaces": [], **host_details})
    if path is not None:
        checks["path"] = path
    return checks


def codes(verdicts):
    return [v.code for v in verdicts]


def test_loss_at_the_gateway_persisting_to_the_edge_is_the_local_link_naming_the_wifi(correlate):
    path = path_check(gateway=(200, 20), hops={1: (100, 9), 2: (100, 11), 3: (100, 8), 4: (100, 10)})
    [v] = correlate(report(lossy(path=path, interface="wlan0", interface_is_wifi=True, wifi_signal_dbm=-79.0)))
    assert v.code == "network.local_link"
    assert_well_formed(v)
    assert "Wi-Fi (wlan0, signal -79 dBm)" in v.summary and "the gateway 192.168.1.1: 20 of 200 lost" in v.summary
    assert v.next_step.startswith("The PC is on Wi-Fi") and "cable" in v.next_step
    assert {"check:media.path", "check:path", "check:host"} <= set(v.evidence)


def test_local_link_on_a_cable_gives_cable_advice_not_wifi(correlate):
    path = path_check(gateway=(200, 18), hops={2: (100, 9), 3: (100, 12), 4: (100, 10)})
    [v] = correlate(report(lossy(path=path)))
    assert v.code == "network.local_link"
    assert "Wi-Fi" not in v.summary + v.next_step and "cable" in v.next_step


def test_clean_gateway_and_loss_from_the_first_public_hop_is_the_isp(correlate):
    path = path_check(gateway=(200, 0), hops={2: (100, 10), 3: (100, 9), 4: (100, 11)})
    [v] = correlate(report(lossy(path=path, interface="wlan0", interface_is_wifi=True, wifi_signal_dbm=-50.0)))
    assert v.code == "network.isp"
    assert_well_formed(v)
    assert "203.0.113.1" in v.summary and "203.0.113.9" in v.summary and "0 of 200 lost" in v.summary
    # the Wi-Fi is not at fault: no Wi-Fi advice
    assert "cable or a better Wi-Fi spot will not help" in v.next_step and "ISP" in v.next_step


def test_clean_through_the_isp_and_lost_toward_the_edge_is_beyond_the_isp(correlate):
    path = path_check(gateway=(200, 0), hops={4: (100, 9)})
    [v] = correlate(report(lossy(path=path)))
    assert v.code == "network.beyond_isp"
    assert_well_formed(v)
    assert "198.51.100.2" in v.summary and "Genesys Cloud support" in v.next_step


def test_the_edge_silent_still_places_beyond_from_media_path_alone(correlate):
    path = path_check(gateway=(200, 0), hops={4: (100, 100)})
    [v] = correlate(report(lossy(path=path)))
    assert v.code == "network.beyond_isp" and "media.path" in v.summary


def test_a_rate_limiting_middle_router_is_never_blamed(correlate):
    # hop 2 answers 2 of 100 (Linux's default ICMP rate limit), later hops every probe
    path = path_check(gateway=(200, 0), hops={2: (100, 98), 4: (100, 9)})
    [v] = correlate(report(lossy(path=path)))
    assert v.code == "network.beyond_isp"
    assert "203.0.113.1" not in v.summary.split("from ")[-1]
    # on a clean path nothing is said at all
    quiet = lossy(loss=0.0, path=path)
    quiet["media.path"] = patched(quiet["media.path"], status=Status.PASS, loss_decision={"side": "below"})
    assert correlate(report(quiet)) == []
    checks = clean_checks()
    checks["path"] = path
    assert correlate(report(checks)) == []


def test_loss_at_one_hop_that_does_not_persist_is_not_where_it_starts(correlate):
    path = path_check(gateway=(200, 0), hops={2: (100, 12), 3: (100, 0), 4: (100, 10)})
    [v] = correlate(report(lossy(path=path)))
    assert v.code == "network.beyond_isp"


@pytest.mark.parametrize(
    "path, why",
    [
        (None, "the path check did not run"),
        (path_check(gateway=None, hops={1: (100, 100), 2: (100, 10), 3: (100, 9), 4: (100, 10)}, gateway_note="no ICMP ping socket"),
         "could not be told"),
        (path_check(gateway=(200, 0), hops={2: (100, 100), 3: (100, 100), 4: (100, 10)}), "the ISP's hops could not be read"),
        (check("path", Status.SKIP, "no turn: url"), "could not probe the segments"),
    ],
)
def test_when_the_segment_cannot_be_told_packet_loss_stays_and_says_why(correlate, path, why):
    verdicts = correlate(report(lossy(path=path, interface="wlan0", interface_is_wifi=True, wifi_signal_dbm=-70.0)))
    assert codes(verdicts) == ["network.packet_loss"]
    [v] = verdicts
    assert why in v.summary
    # the Wi-Fi is named as a fact, but not blamed: the advice is to tell it apart
    assert "could not be measured" in v.next_step and "on a cable" in v.next_step


def test_segment_verdict_replaces_congestion_when_the_rtt_is_high_too(correlate):
    checks = lossy(path=path_check(gateway=(200, 0), hops={2: (100, 10), 3: (100, 9), 4: (100, 11)}))
    checks["media.path"] = patched(checks["media.path"], metrics={**checks["media.path"].metrics, "rtt_ms": 210.0, "rtt_p95_ms": 250.0})
    verdicts = correlate(report(checks))
    assert codes(verdicts) == ["network.isp"]
    assert "RTT up to 250 ms" in verdicts[0].summary
    checks.pop("path")
    assert codes(correlate(report(checks))) == ["network.isp_congestion"]
    assert "the path check did not run" in correlate(report(checks))[0].summary


def test_a_loss_below_the_line_places_nothing(correlate):
    checks = lossy(loss=0.8, path=path_check(gateway=(200, 2)))
    checks["media.path"] = patched(checks["media.path"], status=Status.PASS, loss_decision={"side": "below"})
    assert correlate(report(checks)) == []


def test_a_clean_isp_hop_shows_the_local_link_clean_when_the_gateway_cannot_be_read(correlate):
    # no ping socket: the gateway's UDP answers are rate-limited (190 of 200 lost: more than the whole path)
    path = path_check(gateway=(200, 190), hops={1: (100, 95), 2: (100, 0), 3: (100, 0), 4: (100, 10)})
    [v] = correlate(report(lossy(path=path)))
    assert v.code == "network.beyond_isp"
    path = path_check(gateway=(200, 190), hops={1: (100, 95), 2: (100, 0), 3: (100, 10), 4: (100, 10)})
    [v] = correlate(report(lossy(path=path)))
    assert v.code == "network.isp" and "198.51.100.2" in v.summary


def test_loss_that_the_path_up_to_the_edge_does_not_show_is_not_placed(correlate):
    # every hop and the edge's own address answer cleanly, yet media.path lost 18 %:
    # the relay or this PC (the lab saw it once on a machine at load 10), not the network
    [v] = correlate(report(lossy(loss=18.0, path=path_check(gateway=(200, 0)))))
    assert v.code == "network.packet_loss"
    assert "the path up to the media edge's own address was clean" in v.summary


def test_a_stun_binding_that_timed_out_over_tcp_on_the_lossy_line_is_explained(correlate):
    checks = lossy(path=path_check(gateway=(200, 20), hops={2: (100, 10), 3: (100, 9), 4: (100, 11)}))
    checks["stun"] = patched(checks["stun"], status=Status.WARN, reason="timeout", bindings=[
        {"server": "stun:edge.example:3478", "transport": "udp", "ok": True, "mapped": "203.0.113.9:40000", "rtt_ms": 3.0},
        {"server": "stun:edge.example:3478", "transport": "tcp", "ok": False, "reason": "timeout", "error": "no answer within 1.8 s"}])
    [v] = correlate(report(checks))
    assert v.code == "network.local_link" and "check:stun" in v.evidence


def test_a_media_figure_inflated_on_this_pc_does_not_make_a_lossy_gateway_read_clean(correlate):
    # seen in the lab at load 10: 5 % each way on the home link, media.path read 76 %
    path = path_check(gateway=(200, 19), hops={1: (100, 9), 2: (100, 10), 3: (100, 8), 4: (100, 11)})
    [v] = correlate(report(lossy(loss=76.0, path=path)))
    assert v.code == "network.local_link"


def test_a_later_hop_contradicts_the_loss_only_against_the_loss_the_point_itself_shows(correlate):
    # the gateway loses 9 %, media.path reads 15 % (inflated on a busy PC); hop 3 lost 3 of
    # 100, which reads clean against 15 % but not against the gateway's own 9 %
    path = path_check(gateway=(200, 18), hops={2: (100, 9), 3: (100, 3), 4: (100, 10)})
    [v] = correlate(report(lossy(loss=15.0, path=path)))
    assert v.code == "network.local_link"
