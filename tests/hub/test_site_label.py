"""Issue 23, point 1: a PC may carry its site in its own config (``[hub] site``). The label
travels with its reports (``Agentd-Site``) and enrollment, is kept on the PC's row and wins
over the hub's ``[hub] sites`` prefixes for that PC: on the fleet page, its filters and the
per-site counts. And migration 0003 fills each PC's status from its latest report."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import httpx

from tests.hub.conftest import enroll, make_report, post_report, wait_until
from tests.hub.test_daemon import connected, run_check_and_wait


def _pcs(url: str, auth, **params) -> dict:
    answer = httpx.get(f"{url}/api/v1/pcs", params={"per_page": 500, **params}, auth=auth, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_pcs_configured_site_wins_over_the_hubs_prefixes(hub, pc_factory, tmp_path):
    config = tmp_path / "hub.toml"
    config.write_text('[hub]\nurl = "http://127.0.0.1:1"\nsites = { Porto = ["127.0.0.0/8"] }\n')
    server = hub.start(extra_args=("--config", str(config)))
    key = hub.enroll_key()
    auth = hub.add_user()
    label = "Lisboa São Bento"
    pc = pc_factory(server.url, key, extra_config=f'site = "{label}"')
    pc.start()
    wait_until(connected(server.url, auth), 120, interval_s=0.3, what="the daemon to connect")
    labelled = pc.install_id()
    run_check_and_wait(server.url, auth, labelled)
    plain, token = enroll(server.url, key, hostname="desk-porto")  # no label: placed by its address
    assert post_report(server.url, token, make_report(plain, hostname="desk-porto")).status_code == 201

    fleet = _pcs(server.url, auth)
    sites = {p["install_id"]: p["site"] for p in fleet["pcs"]}
    assert sites == {labelled: label, plain: "Porto"}
    counts = {s["site"]: s for s in fleet["sites"]}
    assert counts[label]["pcs"] == 1 and counts[label]["not_ready"] == 1  # the hub test plugin's slow check fails
    assert counts["Porto"]["pcs"] == 1 and counts["Porto"]["not_ready"] == 0
    assert [p["install_id"] for p in _pcs(server.url, auth, site=label)["pcs"]] == [labelled]

    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.post("/login", data={"name": auth[0], "password": auth[1]}).status_code == 303
        page = client.get("/", params={"site": label}).text
    assert f'data-install-id="{labelled}"' in page and f'data-install-id="{plain}"' not in page
    assert "Lisboa São Bento" in page


def test_the_site_header_sets_clears_and_refuses(live_hub):
    key = live_hub.enroll_key()
    auth = live_hub.add_user()
    install_id, token = enroll(live_hub.url, key, hostname="desk-1")

    def post(headers: dict) -> httpx.Response:
        report = make_report(install_id, hostname="desk-1")
        return httpx.post(f"{live_hub.url}/api/v1/reports", content=report.to_json().encode(), timeout=10,
                          headers={"Authorization": f"Bearer {token}", "Idempotency-Key": report.id, "Content-Type": "application/json", **headers})

    def site() -> str:
        return _pcs(live_hub.url, auth)["pcs"][0]["site"]

    assert post({"Agentd-Site": quote("Porto Norte", safe="")}).status_code == 201
    assert site() == "Porto Norte"
    assert post({}).status_code == 201  # a PC too old to send a label leaves it as it was
    assert site() == "Porto Norte"
    bad = post({"Agentd-Site": "a%0Ab"})
    assert bad.status_code == 422 and "site label" in bad.json()["error"]
    bad = post({"Agentd-Site": "%FF"})
    assert bad.status_code == 422 and "UTF-8" in bad.json()["error"]
    assert post({"Agentd-Site": ""}).status_code == 201  # the PC's config lost its label: cleared, placed by address again
    assert site() == "127.0.0.0/24"

    # a label at enrollment (before any report)
    other = "agentd-site-at-enrollment"
    answer = httpx.post(f"{live_hub.url}/api/v1/enroll", json={"install_id": other, "hostname": "desk-2", "user": None, "site": "Faro"},
                        headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert answer.status_code == 201
    assert {p["install_id"]: p["site"] for p in _pcs(live_hub.url, auth)["pcs"]}[other] == "Faro"


def _backfill(database: str) -> dict:
    """A database at 0002 with a PC and two reports (the latest by ``created`` first by
    id), then 0003: the PC's row carries its latest report's status."""
    import sqlalchemy as sa

    from agentd.hub.db import make_engine, pcs, reports
    from agentd.hub.migrate import upgrade
    from agentd.hub.store import summarize

    older = make_report("agentd-pc-0003", hostname="desk-old")
    newer = make_report("agentd-pc-0003", hostname="desk-new", profile="full", failed=("media.path",), verdict="network.isp_congestion",
                        summary="loss rises with RTT")

    async def go() -> dict:
        engine = make_engine(database)
        try:
            await upgrade(engine, "0002")
            async with engine.begin() as conn:
                await conn.execute(pcs.insert().values(install_id="agentd-pc-0003", token_id="t0003", token_hash="-", enroll_key_id="k",
                                                       hostname="desk-new", enrolled=1.0, last_report_id=newer.id))
                for n, report in enumerate((older, newer)):
                    row = summarize(report)
                    await conn.execute(reports.insert().values(id=report.id, install_id="agentd-pc-0003", created=report.created,
                                                               received=1.0 + n, body=report.to_json(), public_ip="192.0.2.7", **row))
            await upgrade(engine)
            async with engine.connect() as conn:
                return dict((await conn.execute(sa.select(pcs).where(pcs.c.install_id == "agentd-pc-0003"))).mappings().one())
        finally:
            await engine.dispose()

    row = asyncio.run(go())
    assert row["status_profile"] == "full" and row["status_ready"] is False and row["status_verdict"] == "network.isp_congestion"
    assert row["status_sentence"] == "loss rises with RTT" and row["status_failed"] == "media.path" and row["status_ip"] == "192.0.2.7"
    assert row["status_created"] == newer.created and row["site_label"] is None
    return row


def test_migration_0003_fills_each_pcs_status_from_its_latest_report_sqlite(tmp_path):
    _backfill(f"sqlite:///{tmp_path / 'hub.sqlite'}")


def test_migration_0003_fills_each_pcs_status_from_its_latest_report_postgres(postgres):
    _backfill(postgres.url())
