"""The path check's pure parts: which addresses are a home's, each hop's role, the route
table read without the ``ip`` tool, a point's reading, and the check's settings."""

from __future__ import annotations

import math

import pytest

from agentd.osdeps import _posix_netpath, netpath
from agentd_plugins.path import segments_of, proxy_in_use, vpn_of
from agentd_plugins.rules.segments import read_point


@pytest.mark.parametrize(
    "address, private",
    [("10.1.2.3", True), ("172.20.0.1", True), ("192.168.178.1", True), ("169.254.1.1", True), ("127.0.0.1", True),
     ("100.64.0.1", False), ("203.0.113.1", False), ("198.51.100.2", False), ("8.8.8.8", False), ("fd00::1", True),
     ("2001:db8::1", False), ("not an address", False)],
)
def test_only_a_homes_own_ranges_are_private(address, private):
    assert netpath.is_private(address) is private


def hop(ttl, address, lost=0):
    return {"ttl": ttl, "address": address, "sent": 100, "lost": lost, "received": 100 - lost}


def test_roles_follow_the_first_public_hop_and_isp_hops():
    hops = [hop(1, "192.168.1.1"), hop(2, "10.0.0.1"), hop(3, None, 100), hop(4, "100.64.0.1"), hop(5, "198.51.100.9"),
            hop(6, "198.51.100.10"), hop(7, "192.0.2.77"), hop(8, "192.0.2.10")]
    first = segments_of(hops, "192.0.2.10", 8, "192.168.1.1", 3)
    assert first == {"ttl": 4, "address": "100.64.0.1"}  # carrier-grade NAT is already the ISP
    assert [h["role"] for h in hops] == ["home", "home", "home", "isp", "isp", "isp", "beyond", "edge"]
    assert hops[0]["gateway"] is True


def test_without_a_public_hop_silent_hops_are_unknown():
    hops = [hop(1, "10.8.0.1"), hop(2, None, 100), hop(3, "192.0.2.10")]
    assert segments_of(hops, "192.0.2.10", 3, None, 3) == {}
    assert [h["role"] for h in hops] == ["home", "unknown", "edge"]


def test_the_route_table_is_read_by_longest_prefix(tmp_path, monkeypatch):
    table = tmp_path / "route"
    table.write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n"
        "wlan0\t0001A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0\n"
        "wg0\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n"
    )
    monkeypatch.setattr(_posix_netpath, "PROC_ROUTE", table)
    assert _posix_netpath._proc_route("203.0.113.5") == netpath.Route("203.0.113.5", "192.168.1.1", "wlan0", how="/proc/net/route")
    assert _posix_netpath._proc_route("192.168.1.20").gateway is None
    assert _posix_netpath._proc_route("10.9.9.9").interface == "wg0"
    assert _posix_netpath._proc_route("127.0.0.1").local is True


def test_vpn_and_proxy_are_named_without_credentials(monkeypatch):
    assert vpn_of("wg0") == "wg0" and vpn_of("eth0") is None and vpn_of(None) is None
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert proxy_in_use() is None
    monkeypatch.setenv("HTTPS_PROXY", "http://user:s3cret@proxy.corp:3128")
    assert proxy_in_use() == "proxy.corp:3128"


def test_a_point_reads_lossy_clean_unsure_silent_or_excess():
    p1, p0, high = 0.0975, 0.0025, 0.13
    assert read_point(200, 0, p1, p0, high) == "clean"
    assert read_point(200, 4, p1, p0, high) == "clean"
    assert read_point(200, 7, p1, p0, high) == "lossy"
    assert read_point(200, 5, p1, p0, high) == "unsure"
    assert read_point(100, 100, p1, p0, high) == "silent"
    assert read_point(100, 98, p1, p0, high) == "excess"  # a rate-limiting router loses more than the whole path
    assert read_point(0, 0, p1, p0, high) == "silent"
    assert math.isclose(p1, 1 - 0.95 ** 2, rel_tol=1e-9)


def test_probe_path_refuses_nonsense_bounds():
    import asyncio

    with pytest.raises(ValueError):
        asyncio.run(netpath.probe_path("192.0.2.1", None, count=0, interval_s=0.01, max_hops=3, timeout_s=0.1))
