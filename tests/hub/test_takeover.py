"""Issue 23, point 6: enrollment that cannot be taken over, a status a forged report id
cannot pin, and a login limit that charges failures only (per address and account),
before the hash runs. A real uvicorn hub on loopback (``live_hub``: login burst 5 per
(address, account), 50 per address, barely refilling)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import timedelta

import httpx

from agentd.model import isoformat, utcnow
from tests.hub.conftest import PASSWORD, enroll, make_report, post_report


def _enroll_raw(url: str, key: str, install_id: str, **extra) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/enroll", json={"install_id": install_id, "hostname": "attacker", "user": "x", **extra},
                      headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_taking_over_an_enrolled_pc_is_refused_and_logged(live_hub):
    key = live_hub.enroll_key()
    auth = live_hub.add_user()
    install_id, token = enroll(live_hub.url, key, hostname="desk-7")

    # the fleet key (every PC has it) and the install id (it is in reports) are not enough
    taken = _enroll_raw(live_hub.url, key, install_id)
    assert taken.status_code == 409, taken.text
    assert "allow-reenroll" in taken.json()["error"] and "token" not in taken.json()
    # the real PC's token still works; the attacker has none
    assert post_report(live_hub.url, token, make_report(install_id, hostname="desk-7")).status_code == 201
    # a wrong "current token" (another PC's) does not help either
    _, other_token = enroll(live_hub.url, key)
    assert _enroll_raw(live_hub.url, key, install_id, token=other_token).status_code == 409

    # the PC itself may rotate its token by presenting it: the old one stops working
    rotated = _enroll_raw(live_hub.url, key, install_id, token=token)
    assert rotated.status_code == 201, rotated.text
    new_token = rotated.json()["token"]
    assert post_report(live_hub.url, token, make_report(install_id)).status_code == 401
    assert post_report(live_hub.url, new_token, make_report(install_id)).status_code == 201

    # an administrator lets a PC that lost its token enroll again: once
    assert live_hub.admin(lambda store: store.allow_reenroll(install_id)) is True
    again = _enroll_raw(live_hub.url, key, install_id)
    assert again.status_code == 201, again.text
    assert _enroll_raw(live_hub.url, key, install_id).status_code == 409

    # every enrollment and refusal is recorded and shown on the PC's page
    events = live_hub.admin(lambda store: store.enrollment_events(install_id))
    outcomes = [e["outcome"] for e in reversed(events)]
    assert outcomes == ["enrolled", "refused", "refused", "re-enrolled", "allowed", "re-enrolled", "refused"], outcomes
    assert all(e["client"] == "127.0.0.1" for e in events if e["outcome"] != "allowed")
    with httpx.Client(base_url=live_hub.url, timeout=30) as browser:
        assert browser.post("/login", data={"name": auth[0], "password": auth[1]}).status_code == 303
        html = browser.get(f"/pcs/{install_id}").text
    assert 'id="enrollments"' in html and html.count(">refused<") == 3 and "allowed by an administrator" in html


def test_a_forged_report_id_cannot_pin_the_status(live_hub):
    key = live_hub.enroll_key()
    auth = live_hub.add_user()
    install_id, token = enroll(live_hub.url, key)
    now = utcnow()

    def row():
        pcs = httpx.get(f"{live_hub.url}/api/v1/pcs", auth=auth, timeout=30).json()["pcs"]
        found = next(p for p in pcs if p["install_id"] == install_id)
        assert found["latest"]["id"] == found["latest_preshift"]["id"]  # the status (any profile) and the pre-shift agree here
        return found["latest_preshift"]

    # a ready report with the greatest possible id, made a minute ago
    forged = dataclasses.replace(make_report(install_id), id="z" * 100, created=isoformat(now - timedelta(minutes=1)))
    assert forged.ready
    assert post_report(live_hub.url, token, forged).status_code == 201
    # the PC's real, failing report made now (its id sorts before "zzz...")
    real = make_report(install_id, failed=("turn.udp",), verdict="network.firewall_udp_blocked")
    assert not real.ready and real.id < forged.id
    assert post_report(live_hub.url, token, real).status_code == 201
    latest = row()
    assert latest["id"] == real.id and latest["ready"] is False

    # a "created" in the future counts as the time it arrived: it does not stay the latest
    future = dataclasses.replace(make_report(install_id), id="zz-future", created=isoformat(now + timedelta(days=3650)))
    assert post_report(live_hub.url, token, future).status_code == 201
    assert row()["id"] == "zz-future"
    later = make_report(install_id, failed=("dns",))
    assert post_report(live_hub.url, token, later).status_code == 201
    assert row()["id"] == later.id


def test_logins_charge_failures_only_per_address_and_account(live_hub):
    live_hub.add_user("alice", PASSWORD)
    live_hub.add_user("bob", PASSWORD)

    def login(name: str, password: str) -> int:
        return httpx.post(f"{live_hub.url}/login", data={"name": name, "password": password}, timeout=60).status_code

    # a floor behind one address: ten right logins in a row all succeed (burst 5 here)
    assert [login("alice", PASSWORD) for _ in range(10)] == [303] * 10
    # twenty wrong passwords for one account: refused, then limited...
    wrong = [login("alice", f"wrong-{n}") for n in range(20)]
    assert wrong[:5] == [401] * 5 and wrong[5:] == [429] * 15, wrong
    assert login("alice", PASSWORD) == 429  # that account from this address waits
    # ...but another account from the same address is not locked out
    assert login("bob", PASSWORD) == 303
    # HTTP Basic has the same budget: bob's right password, many times, always answers
    assert all(httpx.get(f"{live_hub.url}/api/v1/pcs", auth=("bob", PASSWORD), timeout=60).status_code == 200 for _ in range(8))
    limited = httpx.get(f"{live_hub.url}/api/v1/pcs", auth=("alice", "wrong-again"), timeout=60)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1


def test_parallel_wrong_basic_passwords_from_ten_addresses_answer_401_or_429(live_hub):
    live_hub.add_user()

    async def flood() -> list[int]:
        clients = [httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=f"127.0.0.{n + 2}"), timeout=120)
                   for n in range(10)]
        try:
            tasks = [clients[i % 10].get(f"{live_hub.url}/api/v1/pcs", auth=("helpdesk", f"wrong-{i}")) for i in range(200)]
            answers = await asyncio.gather(*tasks)
            return [a.status_code for a in answers]
        finally:
            for c in clients:
                await c.aclose()

    codes = asyncio.run(flood())
    assert set(codes) <= {401, 429}, sorted(set(codes))
    # charged before the hash: at most the burst per (address, account) ran argon2 (5 x 10 addresses)
    assert codes.count(401) <= 50 and codes.count(429) >= 150, (codes.count(401), codes.count(429))
    # the hub still answers, and the right password from an address not used above works
    health = httpx.get(f"{live_hub.url}/healthz", timeout=30)
    assert health.status_code == 200 and health.json()["ok"] is True
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.40"), timeout=60) as fresh:
        right = fresh.get(f"{live_hub.url}/api/v1/pcs", auth=("helpdesk", PASSWORD))
    assert right.status_code == 200, right.text
    assert json.loads(right.text)["pcs"] == []
