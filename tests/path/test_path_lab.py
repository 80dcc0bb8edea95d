"""The ``path`` check and the segment verdicts on real packets: the segment lab
(agent -> home router (NAT) -> two ISP routers -> edge with coturn, in namespaces).

The probes run inside the agent namespace; faults are placed on one link at a time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Iterator

import pytest

from agentd.testing import coturn as coturn_mod
from agentd.testing.invariants import assert_every_bad_check_explained
from agentd.testing.netlab import NetlabUnavailable, unavailable_reason
from agentd.testing.segments import EDGE_IP, HOME_LAN_IP, HOME_WAN_IP, ISP1_DOWN_IP, ISP2_DOWN_IP, SegmentLab
from tests.conftest import OFFLINE_GENESYS

pytestmark = [pytest.mark.lab]


@pytest.fixture
def seglab() -> Iterator[SegmentLab]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"network lab unavailable: {reason}")
    try:
        with SegmentLab.create() as lab:
            yield lab
    except NetlabUnavailable as exc:
        pytest.skip(f"network lab unavailable: {exc}")


def probe(target: str) -> dict:
    """Route and probe as the path check does, in whatever namespace this runs in."""
    from agentd.osdeps import netpath

    route = netpath.route_to(target)
    found = asyncio.run(netpath.probe_path(target, route.gateway, count=100, interval_s=0.005, hop_every=1, max_hops=8, timeout_s=0.3))
    return {
        "gateway": route.gateway,
        "method": found.gateway_method,
        "note": found.gateway_note,
        "echo": found.gateway.to_dict() if found.gateway else None,
        "hops": [h.to_dict() for h in found.hops],
        "target_ttl": found.target_ttl,
    }


def test_the_probes_see_every_hop_and_where_loss_starts(seglab):
    seglab.set_loss("isp", 20, 20)
    seen = seglab.call_in_agent(probe, EDGE_IP)
    assert seen["gateway"] == HOME_LAN_IP and seen["method"] == "icmp"
    assert seen["target_ttl"] == 4
    assert [h["address"] for h in seen["hops"]] == [HOME_LAN_IP, ISP1_DOWN_IP, ISP2_DOWN_IP, EDGE_IP]
    assert [h["answer"] for h in seen["hops"]] == ["time_exceeded"] * 3 + ["unreachable"]
    assert seen["echo"]["lost"] == 0 and seen["hops"][0]["lost"] == 0
    # 1 - 0.8^2 = 36 % round trip from hop 2 on; 100 probes each, far from 0
    assert all(h["lost"] >= 15 for h in seen["hops"][1:]), seen["hops"]


def probe_as_nobody(target: str) -> dict:
    """:func:`probe` as an ordinary user (no CAP_NET_RAW), as an agent's own CLI run is."""
    import os
    import pwd

    from agentd.osdeps import _posix_netpath, netpath  # noqa: F401 (imported while /root is readable)

    nobody = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)
    return probe(target)


def test_without_ping_sockets_a_user_probes_the_gateway_over_udp_and_a_rate_limiter_shows(seglab):
    seglab.allow_ping_sockets(False)
    seglab.icmp_ratelimit("home")
    seen = seglab.call_in_agent(probe_as_nobody, EDGE_IP)
    assert seen["method"] == "udp", seen
    assert "ping_group_range" in seen["note"] and "CAP_NET_RAW" in seen["note"]
    # the home router answers its port unreachable and TTL exceeded about once a second
    # after a short burst; the routers after it answer every probe
    assert seen["echo"]["lost"] > 50 and seen["hops"][0]["lost"] > 50
    assert [h["lost"] for h in seen["hops"][1:]] == [0, 0, 0]
    seglab.allow_ping_sockets(True)
    seen = seglab.call_in_agent(probe_as_nobody, EDGE_IP)
    assert seen["method"] == "icmp" and seen["echo"]["lost"] == 0  # echo replies are not rate-limited


def lab_config(turn) -> str:
    return OFFLINE_GENESYS + turn.ice_toml()


def checked(config_file: str, sys_class_net: str | None) -> dict:
    """A full pre-shift run (App.load + run_check, rules included) in this namespace."""
    from agentd.app import App
    from agentd_plugins.host import sample

    if sys_class_net:
        sample.SYS_CLASS_NET = Path(sys_class_net)
    return asyncio.run(App.load(Path(config_file)).run_check("preshift")).to_dict()


@pytest.mark.coturn
@pytest.mark.parametrize(
    "link, code",
    [("home", "network.local_link"), ("isp", "network.isp"), ("beyond", "network.beyond_isp"), (None, None)],
)
def test_a_preshift_names_the_segment_where_the_loss_starts(seglab, agentd_env, tmp_path, link, code):
    if not coturn_mod.available():
        pytest.skip("coturn's turnserver is not installed")
    with seglab.start_coturn(tmp_path / "turn") as turn:
        config = agentd_env.write_config(lab_config(turn))
        sysfs = tmp_path / "sys-class-net"
        (sysfs / "eth0" / "wireless").mkdir(parents=True)  # the agent's link looks wireless
        if link:
            seglab.set_loss(link, 10, 10)
        else:
            seglab.icmp_ratelimit("isp1")  # a rate-limiting middle router on a clean path
        report = seglab.call_in_agent(checked, str(config), str(sysfs), timeout=120)
    checks = {c["id"]: c for c in report["checks"]}
    path = checks["path"]
    assert path["status"] == "pass", path["summary"]
    assert path["details"]["first_public_hop"] == {"ttl": 2, "address": ISP1_DOWN_IP}
    assert path["details"]["public_address"] == HOME_WAN_IP
    assert [h["role"] for h in path["details"]["hops"]] == ["home", "isp", "isp", "edge"]
    assert_every_bad_check_explained(report)
    said = [v for v in report["verdicts"] if v["code"] in ("network.local_link", "network.isp", "network.beyond_isp")]
    assert [v["code"] for v in said] == ([code] if code else []), report["verdicts"]
    if code is None:
        return
    [v] = said
    assert "network.packet_loss" not in {x["code"] for x in report["verdicts"]}
    assert {"check:path", "check:media.path"} <= set(v["evidence"])
    if code == "network.local_link":
        assert "Wi-Fi (eth0" in v["summary"] and v["next_step"].startswith("The PC is on Wi-Fi")
    else:
        assert "Wi-Fi" not in v["next_step"].replace("better Wi-Fi spot will not help", "")
    if code == "network.isp":
        assert ISP1_DOWN_IP in v["summary"] and HOME_WAN_IP in v["summary"]


def test_delay_placed_beyond_the_isp_shows_from_the_edge_on(seglab):
    # 40 ms each way on the border -> edge link: the edge's answers take 80 ms more, the ISP's none
    with seglab.impair_link("beyond", "up", delay_ms=40), seglab.impair_link("beyond", "down", delay_ms=40):
        seen = seglab.call_in_agent(probe, EDGE_IP)
    rtts = [h["rtt_ms"] for h in seen["hops"]]
    assert rtts[2] < 20 and 78 <= rtts[3] < 130, seen["hops"]
    assert seen["echo"]["rtt_ms"] < 20


def test_a_rate_limit_with_a_deep_queue_is_placed_and_cleared(seglab):
    seglab.set_rate("isp", 1000, 300, direction="up")
    shown = seglab.exec(seglab.ns("home"), ["tc", "qdisc", "show", "dev", "wan"]).stdout
    assert "tbf" in shown and "rate 1Mbit" in shown, shown
    seglab.clear_faults()
    assert "tbf" not in seglab.exec(seglab.ns("home"), ["tc", "qdisc", "show", "dev", "wan"]).stdout
    with pytest.raises(ValueError, match="no link"):
        seglab.set_rate("wifi", 1000, 300)
    with pytest.raises(ValueError, match="no link"):
        seglab.set_loss("wifi", 5, 5)


def probe_stopped(target: str) -> tuple[int, bool]:
    from agentd.osdeps import netpath

    async def run():
        stop = asyncio.Event()
        stop.set()  # the caller already knows it needs no long figures
        found = await netpath.probe_path(target, netpath.route_to(target).gateway, count=100, interval_s=0.005, max_hops=8,
                                         timeout_s=0.3, stop=stop)
        return found.gateway.sent, found.stopped_early

    return asyncio.run(run())


def test_a_stop_ends_the_probing_after_a_quarter(seglab):
    assert seglab.call_in_agent(probe_stopped, EDGE_IP) == (25, "asked")


def probe_clean_after(target: str) -> tuple[int, str | None, list[int]]:
    from agentd.osdeps import netpath

    found = asyncio.run(netpath.probe_path(target, netpath.route_to(target).gateway, count=200, interval_s=0.005, hop_every=2,
                                           max_hops=8, timeout_s=0.3, clean_after=40))
    return found.gateway.sent, found.stopped_early, [h.sent for h in found.hops]


def test_a_clean_path_ends_the_burst_early_and_a_lossy_one_does_not(seglab):
    sent, why, hops = seglab.call_in_agent(probe_clean_after, EDGE_IP)
    assert why == "clean" and 80 <= sent < 200 and min(hops) >= 40, (sent, why, hops)
    seglab.set_loss("beyond", 10, 10)  # the edge loses: the burst runs to its end
    sent, why, hops = seglab.call_in_agent(probe_clean_after, EDGE_IP)
    assert why is None and sent == 200, (sent, why, hops)
