"""The helpdesk pages in real headless Chromium (playwright driving Debian's chromium):
log in, see the fleet, open a PC, press Run check now, watch progress, see the report;
hostile strings from reports stay text; CSRF is required."""

from __future__ import annotations

import shutil

import httpx
import pytest

from tests.hub.conftest import enroll, make_report, post_report, wait_until
from tests.hub.test_daemon import connected

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
HOSTILE_HOST = '<img src=x onerror="window.__pwned=1">desk-evil'
HOSTILE_SUMMARY = '<script>window.__pwned=2</script>"onmouseover=alert(1)'
HOSTILE_VERDICT = '<svg onload="window.__pwned=3">'

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (tests/run installs the Debian package)")


@pytest.fixture
def browser(tmp_path):
    from playwright.sync_api import sync_playwright

    profile = tmp_path / "chromium-profile"  # an empty --user-data-dir
    profile.mkdir()
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield context
        finally:
            context.close()


def test_helpdesk_runs_a_check_from_the_browser_and_hostile_text_stays_text(live_hub, pc_factory, browser):
    key = live_hub.enroll_key()
    name, password = live_hub.add_user()
    # a PC whose report carries hostile hostname, summary and verdict text
    evil_id, evil_token = enroll(live_hub.url, key, hostname=HOSTILE_HOST)
    evil = make_report(evil_id, hostname=HOSTILE_HOST, failed=("turn.udp",), summary=HOSTILE_SUMMARY, verdict=HOSTILE_VERDICT,
                       metrics={"rtt_ms": 40.0})
    assert post_report(live_hub.url, evil_token, evil).status_code == 201
    # a real daemon joined to the hub; its slow check's summary is hostile too
    pc = pc_factory(live_hub.url, key, extra_env={"HUBTEST_SUMMARY": HOSTILE_SUMMARY, "HUBTEST_SLOW_S": "1.5"})
    pc.start()
    wait_until(connected(live_hub.url, (name, password)), 120, interval_s=0.3, what="the daemon to connect")
    install_id = pc.install_id()

    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{live_hub.url}/")
    assert page.url.endswith("/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    page.click("#login")
    page.wait_for_selector("#fleet")
    assert page.inner_text("#count-pcs") == "2" and page.inner_text("#count-not-ready") == "1"
    fleet_text = page.inner_text("#fleet")
    assert HOSTILE_HOST in fleet_text and HOSTILE_VERDICT in fleet_text  # shown as text
    assert page.locator("#fleet img").count() == 0 and page.locator("#fleet svg").count() == 0

    # filters: not ready shows only the hostile PC
    page.select_option("select[name=readiness]", "not_ready")
    page.click("#filters button")
    page.wait_for_selector("#fleet")
    assert page.locator("#fleet tbody tr").count() == 1 and HOSTILE_HOST in page.inner_text("#fleet")

    # one PC: Run check now, progress while it runs, then the report
    page.goto(f"{live_hub.url}/pcs/{install_id}")
    page.click("#run-check")
    page.wait_for_function("() => [...document.querySelectorAll('#progress li')].some(li => li.textContent.includes('half way there'))", timeout=60_000)
    assert page.locator("#run-report-link").count() == 0  # progress came before the report
    page.wait_for_selector("#run-report-link", timeout=60_000)
    lines = page.locator("#progress li").all_inner_texts()
    assert len(page.locator("#progress li[data-check='hubtest.slow']").all()) == 1  # one row per check
    slow = page.inner_text("#progress li[data-check='hubtest.slow']")
    assert slow.startswith("FAIL hubtest.slow: ") and "half way there" in slow
    assert page.get_attribute("#progress", "aria-live") == "polite"
    assert any(HOSTILE_SUMMARY in line for line in lines)  # as text, not as markup
    frame = page.frame_locator("#run-report-frame")
    frame.locator("#checks").wait_for(timeout=30_000)
    assert HOSTILE_SUMMARY in frame.locator("#checks").inner_text()

    # the hostile report's own page, as agentd check --html draws it
    page.goto(f"{live_hub.url}/reports/{evil.id}")
    page.wait_for_selector("#checks")
    assert HOSTILE_HOST in page.inner_text(".meta") and HOSTILE_SUMMARY in page.inner_text("#checks")
    assert HOSTILE_VERDICT in page.inner_text("body")
    # the PC page's chart is inline SVG
    page.goto(f"{live_hub.url}/pcs/{evil_id}")
    assert page.locator("svg#chart-history").count() == 1 and HOSTILE_HOST in page.inner_text("#pc-name")

    # search by hostname finds both of the evil PC's report
    page.goto(f"{live_hub.url}/?q=desk-evil")
    assert evil.id in page.inner_text("#search-results")

    assert page.evaluate("() => window.__pwned") is None
    assert dialogs == []
    pc.stop()


def test_state_changes_need_the_csrf_token(live_hub):
    key = live_hub.enroll_key()
    name, password = live_hub.add_user()
    install_id, _ = enroll(live_hub.url, key)
    with httpx.Client(base_url=live_hub.url, timeout=10) as client:
        assert client.post("/login", data={"name": name, "password": password}).status_code == 303
        page = client.get("/")
        assert "agentd_hub_session" in client.cookies and "Content-Security-Policy" in page.headers
        cookie = page.headers.get("set-cookie")  # none on this answer: the login set it
        assert cookie is None
        without = client.post(f"/api/v1/pcs/{install_id}/checks", json={"profile": "preshift"})
        wrong = client.post(f"/api/v1/pcs/{install_id}/checks", json={"profile": "preshift"}, headers={"X-CSRF-Token": "guess"})
        assert without.status_code == 403 and wrong.status_code == 403
        assert client.post("/logout", data={}).status_code == 403
