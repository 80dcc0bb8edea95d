"""A helpdesk agent's day in real headless Chromium (playwright driving Debian's chromium,
no browser download) against a hub with a real daemon and 2,000 more PCs written through
the store: log in through a deep link and land on the report; find a not-ready PC on page
1; run a check, kill the PC mid-run and see the run end as offline within 10 s; reload and
find the run in the PC's list; the fleet usable at 390 px. Screenshots of the fleet, a PC,
a report and a run are kept in $AGENTD_TEST_ARTIFACTS (else the test's tmp folder)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.hub.conftest import enroll, make_report, post_report, wait_until
from tests.hub.fleet_seed import seed_fleet
from tests.hub.test_daemon import connected
from tests.hub.test_pages import FLAGS

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (tests/run installs the Debian package)")


@pytest.fixture
def shots(tmp_path, request) -> Path:
    base = Path(os.environ.get("AGENTD_TEST_ARTIFACTS") or tmp_path)
    folder = base / "screenshots" / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_a_helpdesk_day_in_the_browser(live_hub, pc_factory, shots, tmp_path):
    from playwright.sync_api import sync_playwright

    key = live_hub.enroll_key()
    name, password = live_hub.add_user()
    fleet = live_hub.admin(lambda store: seed_fleet(store, 2000))
    # a PC whose report a ticket links to
    ticket_pc, token = enroll(live_hub.url, key, hostname="desk-ticket")
    report = make_report(ticket_pc, hostname="desk-ticket", profile="full", failed=("turn.udp",), verdict="network.firewall_udp_blocked",
                         summary="UDP to the media edge is blocked; calls fall back to TURN over TCP")
    assert post_report(live_hub.url, token, report).status_code == 201
    # a real daemon whose check takes long enough to be killed in the middle
    pc = pc_factory(live_hub.url, key, extra_env={"HUBTEST_SLOW_S": "60"})
    pc.start()
    wait_until(connected(live_hub.url, (name, password), None), 120, interval_s=0.3, what="the daemon to connect")
    install_id = pc.install_id()

    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS,
                                                       viewport={"width": 1366, "height": 900}, timezone_id="America/New_York")
        try:
            page = context.new_page()
            # 1. a deep link from a ticket: the login, then the report itself
            page.goto(f"{live_hub.url}/reports/{report.id}")
            assert "/login?next=" in page.url
            page.fill("input[name=name]", name)
            page.fill("input[name=password]", password)
            page.click("#login")
            page.wait_for_selector("#checks")
            assert page.url == f"{live_hub.url}/reports/{report.id}"
            assert "UDP to the media edge is blocked" in page.inner_text("body")
            page.screenshot(path=str(shots / "report.png"), full_page=True)

            # 2. the fleet: page 1 starts with the not-ready PCs; open one
            page.goto(f"{live_hub.url}/")
            page.wait_for_selector("#fleet")
            first = page.locator("#fleet-body tr").first
            assert first.get_attribute("data-status") == "not_ready"
            assert first.get_attribute("data-install-id") in fleet.not_ready | {ticket_pc}
            assert page.locator("#fleet-body tr").count() == 50
            assert page.inner_text("#count-pcs") == "2002"
            # times in the viewer's own zone: the exact time on hover, in New York's
            assert "EST" in page.inner_text("#refreshed time") or "EDT" in page.inner_text("#refreshed time")
            assert "EST" in first.locator("time").first.get_attribute("title") or "EDT" in first.locator("time").first.get_attribute("title")
            page.screenshot(path=str(shots / "fleet-1366.png"))
            first.locator("a").first.click()
            page.wait_for_selector("#pc-name")
            assert page.locator("#run-check").count() == 1

            # 3. a check on the real PC, killed in the middle: the run ends as offline
            page.goto(f"{live_hub.url}/pcs/{install_id}")
            page.click("#run-check")
            page.wait_for_selector("#progress li[data-check='hubtest.slow']", timeout=60_000)
            assert page.get_attribute("#progress", "aria-live") == "polite"
            page.screenshot(path=str(shots / "run-in-progress.png"), full_page=True)
            pc.proc.kill()
            pc.proc.wait(10)
            killed = time.monotonic()
            page.wait_for_function("() => document.getElementById('run-state').dataset.state === 'offline'", timeout=10_000)
            assert time.monotonic() - killed < 10
            assert "PC went offline" in page.inner_text("#run-state")
            assert page.locator("#run-check").is_enabled()  # polling stopped, the button is back
            assert page.inner_text("#progress li[data-check='hubtest.slow'] .badge") == "NOT DONE"
            page.screenshot(path=str(shots / "run-offline.png"), full_page=True)

            # 4. a reload: the run is in the PC's list, nothing left polling
            page.reload()
            page.wait_for_selector("#runs")
            row = page.locator("#runs tr[data-state='offline']")
            assert row.count() == 1 and "PC went offline" in row.inner_text() and name in row.inner_text()
            assert page.get_attribute("#run", "data-active-run") == ""
            page.screenshot(path=str(shots / "pc.png"), full_page=True)

            # 5. a phone-sized screen: the fleet fits 390 px
            small = context.new_page()
            small.set_viewport_size({"width": 390, "height": 844})
            small.goto(f"{live_hub.url}/")
            small.wait_for_selector("#fleet")
            assert small.evaluate("() => document.documentElement.scrollWidth") <= 390
            small.screenshot(path=str(shots / "fleet-390.png"))
        finally:
            context.close()
    print(f"screenshots in {shots}")
