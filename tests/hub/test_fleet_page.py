"""The fleet page and ``GET /api/v1/pcs`` at 2,000 PCs (written through the store): not
ready first, then stale, then the rest; server-side pages and sort on every column; one
form of free text plus filters; status from the latest report of any profile; labels
readable (contrast) and every input labelled."""

from __future__ import annotations

import re

import httpx
import pytest

from agentd.hub import fleetview
from tests.hub.fleet_seed import seed_fleet
from tests.hub.conftest import enroll, make_report, post_report

ROW = re.compile(r'<tr data-install-id="([^"]+)" data-status="([^"]+)">')


@pytest.fixture
def big_fleet(live_hub):
    fleet = live_hub.admin(lambda store: seed_fleet(store, 2000))
    auth = live_hub.add_user()
    client = httpx.Client(base_url=live_hub.url, timeout=30)
    assert client.post("/login", data={"name": auth[0], "password": auth[1]}).status_code == 303
    yield fleet, client, auth
    client.close()


def rows(html: str) -> list[tuple[str, str]]:
    return ROW.findall(html)


def test_not_ready_first_then_stale_paged_on_the_server(big_fleet):
    fleet, client, _ = big_fleet
    assert 100 < len(fleet.not_ready) < 200 and len(fleet.stale) > 50
    first = client.get("/")
    assert first.status_code == 200 and len(first.content) < 200_000, len(first.content)
    shown = rows(first.text)
    assert len(shown) == fleetview.PER_PAGE and all(status == "not_ready" for _, status in shown)
    assert {i for i, _ in shown} <= fleet.not_ready
    assert f'<b id="count-not-ready">{len(fleet.not_ready)}</b>' in first.text and '<b id="count-pcs">2000</b>' in first.text
    assert "2000 PCs, page 1 of 40" in first.text
    # the page after the not-ready ones: stale PCs, then the ready ones
    statuses = [s for page in range(1, 41) for _, s in rows(client.get("/", params={"page": page}).text)]
    assert len(statuses) == 2000
    assert statuses == sorted(statuses, key=lambda s: fleetview.STATUS_RANK[s])
    # the why column carries the top verdict's sentence, not only its code
    assert "UDP to the media edge is blocked while TCP/TLS work" in first.text
    assert re.search(r'<time datetime="[0-9T:-]+Z" data-relative="1" title="[^"]+ UTC"', first.text)


def test_sort_on_every_column_and_one_form_of_text_and_filters(big_fleet):
    fleet, client, auth = big_fleet
    for column in fleetview.COLUMNS:
        for direction in ("asc", "desc"):
            answer = client.get("/", params={"sort": column, "dir": direction})
            assert answer.status_code == 200 and len(rows(answer.text)) == fleetview.PER_PAGE, (column, direction)
    by_name = [i for i, _ in rows(client.get("/", params={"sort": "hostname"}).text)]
    assert by_name[0] == "agentd-seed-000000"  # desk-s00-00000 first
    backwards = [i for i, _ in rows(client.get("/", params={"sort": "hostname", "dir": "desc"}).text)]
    assert backwards[0] != by_name[0]
    # free text and filters in one query: site 3's not-ready PCs whose hostname holds "desk-s03"
    combined = rows(client.get("/", params={"q": "desk-s03", "readiness": "not_ready", "site": "198.18.3.0/24"}).text)
    expected = {i for i in fleet.not_ready if int(i.rsplit("-", 1)[1]) % 20 == 3}
    assert {i for i, _ in combined} == expected and expected
    # last seen more than 7 days ago: the stale ones
    old = client.get("/api/v1/pcs", params={"older": "7d", "per_page": 500}).json()
    assert {p["install_id"] for p in old["pcs"]} == fleet.stale
    # the JSON API pages too
    api = httpx.get(f"{client.base_url}/api/v1/pcs", params={"page": 3, "per_page": 100}, auth=auth, timeout=30).json()
    assert (api["total"], api["pages"], api["page"], len(api["pcs"])) == (2000, 20, 3, 100)
    assert api["counts"]["not_ready"] == len(fleet.not_ready)
    bad = httpx.get(f"{client.base_url}/api/v1/pcs", params={"sort": "password"}, auth=auth, timeout=30)
    assert bad.status_code == 422 and "sort must be one of" in bad.json()["error"]
    # counts are links to the filtered fleet
    page = client.get("/").text
    assert 'href="/?readiness=not_ready"' in page and 'href="/?readiness=stale"' in page


def test_status_is_the_latest_report_of_any_profile(live_hub):
    key = live_hub.enroll_key()
    auth = live_hub.add_user()
    install_id, token = enroll(live_hub.url, key, hostname="desk-full")
    assert post_report(live_hub.url, token, make_report(install_id, hostname="desk-full")).status_code == 201
    full = make_report(install_id, hostname="desk-full", profile="full", failed=("media.path",), verdict="network.isp_congestion",
                       summary="loss rises with RTT on the agent's path")
    assert post_report(live_hub.url, token, full).status_code == 201
    pc = httpx.get(f"{live_hub.url}/api/v1/pcs", auth=auth, timeout=10).json()["pcs"][0]
    assert pc["status"] == "not_ready" and pc["latest"]["profile"] == "full" and pc["latest"]["id"] == full.id
    assert pc["latest_preshift"]["ready"] is True  # still there for scripts that read it
    with httpx.Client(base_url=live_hub.url, timeout=10) as client:
        client.post("/login", data={"name": auth[0], "password": auth[1]})
        html = client.get("/").text
    assert f'data-install-id="{install_id}" data-status="not_ready"' in html and "<small>full</small>" in html
    assert "loss rises with RTT on the agent&#39;s path" in html


def _luminance(hex_colour: str) -> float:
    h = hex_colour.lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    channels = [int(h[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(fg: str, bg: str) -> float:
    a, b = sorted((_luminance(fg), _luminance(bg)), reverse=True)
    return (a + 0.05) / (b + 0.05)


def test_labels_meet_contrast_and_inputs_are_labelled(big_fleet):
    from agentd.report_html import STYLE

    _, client, _ = big_fleet
    html = client.get("/").text
    style = html.split("<style>", 1)[1].split("</style>", 1)[0]
    # every text colour of the hub's pages against the backgrounds it is drawn on
    colours = set(re.findall(r"(?<![-\w])color:(#[0-9a-fA-F]{3,6})", style))
    assert len(colours) >= 8
    for colour in colours:
        for background in ("#ffffff", "#f3f4f6"):
            if colour.lower() in ("#fff", "#ffffff"):
                continue  # white text only in the dark header
            assert contrast(colour, background) >= 4.5, (colour, background, round(contrast(colour, background), 2))
    assert contrast("#ffffff", "#1f2937") >= 4.5
    # the report page's status labels (WARN and SKIP were 2.4:1 and 3.5:1)
    for name in ("pass", "warn", "fail", "error", "skip"):
        colour = re.search(rf"\.{name} {{ color: (#[0-9a-fA-F]{{3,6}}); }}", STYLE).group(1)
        assert contrast(colour, "#ffffff") >= 4.5, (name, colour)
    badge = re.search(r"\.badge\.warning { background: (#[0-9a-fA-F]{6}); }", STYLE).group(1)
    assert contrast("#ffffff", badge) >= 4.5
    # every input and select on the fleet page has a label
    for field_id in re.findall(r'<(?:input|select) id="([^"]+)"', html):
        assert f'<label for="{field_id}"' in html, field_id
    assert re.findall(r"<(?:input|select)(?![^>]*(?:id=|type=\"hidden\"))[^>]*>", html) == []
