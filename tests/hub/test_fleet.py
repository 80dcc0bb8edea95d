"""Fleet correlation: network.site_outage when several PCs behind one public prefix fail
the same check in the window while PCs elsewhere pass it. Reports are posted from
different loopback source addresses, which the hub sees as the PCs' public addresses."""

from __future__ import annotations

import httpx

import pytest

from agentd.hub.fleet import FleetWindow, PcReport, SiteOutageRule, own_finding_first, parse_sites, site_of
from agentd.model import Severity, Verdict
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
        filtered = client.get("/", params={"site": "127.0.1.0/24"}).text
        assert filtered.count("data-install-id=") == 3
        page = client.get(f"/reports/{posted['127.0.1.11'][1]}").text
        assert 'data-code="network.site_outage"' in page
        assert 'data-code="network.site_outage"' not in client.get(f"/reports/{posted['127.0.3.31'][1]}").text


def rows(*specs, start=0):
    out = []
    for i, spec in enumerate(specs, start):
        ip, failed, passed, *rest = spec
        out.append(PcReport(f"pc{i}", f"r{i}", f"h{i}", 0.0, ip, frozenset(failed), frozenset(passed),
                            own_cause=rest[0] if rest else None, site=rest[1] if len(rest) > 1 else None))
    return tuple(out)


def correlate(reports, **kw):
    return SiteOutageRule().agentd_hub_correlate(FleetWindow(tuple(reports), 1800, **kw))


ELSEWHERE = [(f"203.0.113.{i}", set(), {"turn.udp", "udp.ports", "stun"}) for i in range(1, 6)]


def test_a_mixed_cause_site_gets_no_site_verdict():
    # three PCs fail TURN because their own credentials are wrong, one passes: the site's network is fine
    auth = rows(*[(f"10.1.1.{i}", {"turn.udp", "turn.tcp"}, {"dns"}, "config.turn_auth_failed") for i in range(1, 4)],
                ("10.1.1.9", set(), {"dns", "turn.udp", "turn.tcp"}), *ELSEWHERE)
    assert correlate(auth) == []
    # the same without the passing PC: still none, their own cause is not the site's
    assert correlate(auth[:3] + auth[4:]) == []
    # five PCs fail UDP for a network reason, but one PC there passes it: never a site verdict
    one_passes = rows(*[(f"10.1.1.{i}", {"turn.udp"}, {"dns"}) for i in range(1, 6)], ("10.1.1.9", set(), {"turn.udp"}), *ELSEWHERE)
    assert correlate(one_passes) == []
    # host trouble on four PCs and two network failures: the two are too few (3 needed), the four not counted
    host = rows(*[(f"10.1.1.{i}", {"media.path"}, {"dns"}, "host.resource_exhaustion") for i in range(1, 5)],
                ("10.1.1.7", {"turn.udp"}, set(), "network.firewall_udp_blocked"), ("10.1.1.8", {"turn.udp"}, set(), None), *ELSEWHERE)
    assert correlate(host) == []


def test_most_of_a_named_site_failing_udp_gives_one_verdict_naming_the_site_and_its_checks():
    sites = parse_sites({"Lisbon": ["198.51.100.0/24", "192.0.2.0/25"], "Porto": ["192.0.2.128/25"]})
    failing = [(f"198.51.100.{i}", {"turn.udp", "udp.ports"}, {"dns", "turn.tcp"}, "network.firewall_udp_blocked") for i in range(1, 31)]
    failing += [(f"192.0.2.{i}", {"turn.udp", "udp.ports"}, {"dns"}, "check.unexplained") for i in range(1, 4)]
    quiet = [(f"198.51.100.{i}", set(), {"dns", "https"}) for i in range(100, 107)]  # a short pre-shift without UDP checks
    porto = [("192.0.2.200", set(), {"turn.udp", "udp.ports", "dns"})]
    reports = [PcReport(r.install_id, r.report_id, r.hostname, 0.0, r.public_ip, r.failed, r.passed, r.own_cause,
                        site_of(r.public_ip, sites)) for r in rows(*failing, *quiet, *porto, *ELSEWHERE)]
    assert sum(1 for r in reports if r.site == "Lisbon") == 40
    found = correlate(reports)
    assert len(found) == 1, found
    verdict = found[0]
    assert verdict.scope == "Lisbon" and verdict.check_ids == ("turn.udp", "udp.ports")
    assert len(verdict.install_ids) == 33 and verdict.counts == {"reporting": 40, "failing": 33, "passing": 7, "own_cause": 0}
    assert "33 of 40 PCs at Lisbon fail turn.udp, udp.ports" in verdict.summary
    assert verdict.as_verdict().evidence == ("check:turn.udp", "check:udp.ports")


def test_site_verdict_thresholds():
    # two of two: fewer than three PCs
    assert correlate(rows(("10.2.0.1", {"stun"}, set()), ("10.2.0.2", {"stun"}, set()), *ELSEWHERE)) == []
    # three of six (50 %): not most of the site
    half = rows(*[(f"10.2.0.{i}", {"stun"}, set()) for i in range(1, 4)], *[(f"10.2.0.{i}", set(), {"dns"}) for i in range(4, 7)], *ELSEWHERE)
    assert correlate(half) == []
    # three of five (60 %): a site verdict
    assert [v.scope for v in correlate(half[:5] + half[6:])] == ["10.2.0.0/24"]
    # failing wherever it ran (no PC elsewhere passes it): the fleet's or the platform's, not one site's
    everywhere = rows(*[(f"10.2.0.{i}", {"stun"}, set()) for i in range(1, 5)], *[(f"10.3.0.{i}", {"stun"}, set()) for i in range(1, 5)])
    assert correlate(everywhere) == []


def test_the_pcs_own_finding_comes_first_unless_it_is_the_same_network_cause():
    site = correlate(rows(*[(f"10.4.0.{i}", {"turn.udp"}, {"dns"}) for i in range(1, 5)], *ELSEWHERE))
    assert len(site) == 1
    own = Verdict("network.packet_loss", Severity.WARNING, 0.7, "loss on the path", evidence=("check:media.path",))
    other = Verdict("check.unexplained", Severity.WARNING, 0.3, "dns", evidence=("check:dns",))
    assert [v.code for v in own_finding_first((own, other), site)] == ["network.packet_loss", "network.site_outage", "check.unexplained"]
    same = Verdict("network.firewall_udp_blocked", Severity.CRITICAL, 0.9, "UDP blocked", evidence=("check:turn.udp",))
    assert [v.code for v in own_finding_first((same,), site)] == ["network.site_outage", "network.firewall_udp_blocked"]
    assert [v.code for v in own_finding_first((other,), site)] == ["network.site_outage", "check.unexplained"]
    assert own_finding_first((own,), []) == [own]


def test_sites_configuration_names_a_bad_prefix():
    with pytest.raises(ValueError, match=r"sites.Lisbon: '198.51.100.0/33' is not an address prefix"):
        parse_sites({"Lisbon": ["198.51.100.0/33"]})
    sites = parse_sites({"Wide": ["10.0.0.0/8"], "Narrow": ["10.5.0.0/16"]})
    assert (site_of("10.5.1.2", sites), site_of("10.6.1.2", sites), site_of("172.16.0.1", sites)) == ("Narrow", "Wide", "172.16.0.0/24")


def test_named_sites_from_the_hub_configuration(hub, tmp_path):
    """`agentd hub serve --config` reads [hub] sites: the verdict names the site, not its prefix."""
    config = tmp_path / "hub.toml"
    config.write_text('[hub]\nurl = "https://hub.example:8750"\nsites = { "Lisbon floor 2" = ["127.0.1.0/25"] }\n')
    bad = tmp_path / "bad.toml"
    bad.write_text('[hub]\nurl = "https://hub.example:8750"\nsites = { Lisbon = ["127.0.1.0/33"] }\n')
    refused = hub.admin("serve", "--listen", "127.0.0.1:1", "--config", str(bad))
    assert refused.returncode == 2 and "sites.Lisbon: '127.0.1.0/33' is not an address prefix" in refused.stderr
    process = hub.start(extra_args=("--config", str(config)))
    key = hub.enroll_key()
    auth = hub.add_user()
    for address, failed in (("127.0.1.11", ("turn.udp",)), ("127.0.1.12", ("turn.udp",)), ("127.0.1.13", ("turn.udp",)),
                            ("127.0.2.21", ())):
        with client_from(address) as client:
            install_id, token = enroll(process.url, key, hostname=f"pc-{address}", client=client)
            report = make_report(install_id, hostname=f"pc-{address}", failed=failed, passed=("dns",) + (() if failed else ("turn.udp",)))
            assert post_report(process.url, token, report, client=client).status_code == 201
    one = httpx.get(f"{process.url}/api/v1/reports/{report.id}", auth=auth, timeout=10).json()
    assert one["site_verdicts"] == []
    pcs = httpx.get(f"{process.url}/api/v1/pcs", params={"site": "Lisbon floor 2"}, auth=auth, timeout=10).json()
    assert pcs["total"] == 3 and all(p["site_verdicts"] == ["network.site_outage"] for p in pcs["pcs"])
    assert pcs["sites"][0] == {"site": "Lisbon floor 2", "pcs": 3, "not_ready": 3, "stale": 0, "connected": 0}
