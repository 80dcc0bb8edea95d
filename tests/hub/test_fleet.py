"""Fleet correlation: network.site_outage when several PCs behind one public prefix fail
the same check in the window while PCs elsewhere pass it. Reports are posted from
different loopback source addresses, which the hub sees as the PCs' public addresses."""

from __future__ import annotations

import httpx

from agentd.hub.fleet import PcReport, FleetWindow, SiteOutageRule
from tests.hub.conftest import enroll, make_report, post_report


def client_from(address: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10)


def test_site_outage_named_on_the_fleet_page_and_each_affected_report(live_hub):
    key = live_hub.enroll_key()
    auth = live_hub.add_user()
    posted: dict[str, tuple[str, str]] = {}
    sites = {"127.0.1.11": ("turn.udp",), "127.0.1.12": ("turn.udp",), "127.0.1.13": ("turn.udp",),  # one site, all failing
             "127.0.2.21": (), "127.0.3.31": ()}                                                      # elsewhere: passing
    for address, failed in sites.items():
        with client_from(address) as client:
            install_id, token = enroll(live_hub.url, key, hostname=f"pc-{address}", client=client)
            report = make_report(install_id, hostname=f"pc-{address}", failed=failed, passed=("dns",) + (() if failed else ("turn.udp",)))
            assert post_report(live_hub.url, token, report, client=client).status_code == 201
            posted[address] = (install_id, report.id)

    pcs = httpx.get(f"{live_hub.url}/api/v1/pcs", auth=auth, timeout=10).json()["pcs"]
    flagged = {p["install_id"] for p in pcs if "network.site_outage" in p["site_verdicts"]}
    assert flagged == {posted[a][0] for a in ("127.0.1.11", "127.0.1.12", "127.0.1.13")}
    one = httpx.get(f"{live_hub.url}/api/v1/reports/{posted['127.0.1.12'][1]}", auth=auth, timeout=10).json()
    assert [v["scope"] for v in one["site_verdicts"]] == ["127.0.1.0/24"] and one["site_verdicts"][0]["check_id"] == "turn.udp"
    unaffected = httpx.get(f"{live_hub.url}/api/v1/reports/{posted['127.0.2.21'][1]}", auth=auth, timeout=10).json()
    assert unaffected["site_verdicts"] == []

    with httpx.Client(base_url=live_hub.url, timeout=10) as client:
        client.post("/login", data={"name": auth[0], "password": auth[1]})
        fleet = client.get("/").text
        assert 'data-code="network.site_outage"' in fleet and "127.0.1.0/24" in fleet
        filtered = client.get("/", params={"network": "127.0.1.0/24"}).text
        assert filtered.count("data-install-id=") == 3
        page = client.get(f"/reports/{posted['127.0.1.11'][1]}").text
        assert 'data-code="network.site_outage"' in page
        assert 'data-code="network.site_outage"' not in client.get(f"/reports/{posted['127.0.3.31'][1]}").text


def rows(*specs):
    return tuple(PcReport(f"pc{i}", f"r{i}", f"h{i}", 0.0, ip, frozenset(failed), frozenset(passed)) for i, (ip, failed, passed) in enumerate(specs))


def test_site_outage_rule_needs_failures_here_and_passes_elsewhere():
    rule = SiteOutageRule()
    everyone_fails = rows(("10.0.0.1", {"stun"}, set()), ("10.0.0.2", {"stun"}, set()), ("10.9.0.1", {"stun"}, set()))
    assert rule.agentd_hub_correlate(FleetWindow(everyone_fails, 1800)) == []
    lonely = rows(("10.0.0.1", {"stun"}, set()), ("10.9.0.1", set(), {"stun"}))
    assert rule.agentd_hub_correlate(FleetWindow(lonely, 1800)) == []
    # two PCs behind one NAT address: the exact address names them, not the wider prefix
    nat = rows(("198.51.100.7", {"turn.udp"}, set()), ("198.51.100.7", {"turn.udp"}, set()), ("198.51.100.9", set(), {"turn.udp"}),
               ("203.0.113.5", set(), {"turn.udp"}))
    found = rule.agentd_hub_correlate(FleetWindow(nat, 1800))
    assert [(v.scope, v.install_ids) for v in found] == [("198.51.100.7/32", ("pc0", "pc1"))]
