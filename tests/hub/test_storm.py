"""Issue 24: a reconnect storm. Beyond its admission bound the hub answers a PC's socket
HTTP 503 with Retry-After at once (instead of queueing the handshake past the PC's open
timeout); the PC waits what the hub asked, within its backoff's bound, and comes back."""

from __future__ import annotations

import asyncio

import pytest

from tests.hub.conftest import enroll, wait_until
from tests.hub.test_daemon import connected


def test_reconnect_delay_honours_retry_after_within_the_backoff_bound():
    from agentd_plugins.hub import backoff_s, reconnect_delay_s

    for attempt in range(1, 12):
        for _ in range(200):
            plain = reconnect_delay_s(attempt, 1.0, 60.0)
            assert 0 < plain <= 60.0
            asked = reconnect_delay_s(attempt, 1.0, 60.0, retry_after=20.0)
            assert 20.0 <= asked <= 60.0  # at least what the hub asked, at most the bound
            assert reconnect_delay_s(attempt, 1.0, 60.0, retry_after=500.0) == 60.0  # the bound wins
            assert backoff_s(attempt, 1.0, 60.0) <= 60.0
    spread = {round(reconnect_delay_s(1, 1.0, 60.0, retry_after=10.0), 1) for _ in range(200)}
    assert len(spread) > 20 and min(spread) >= 10.0 and max(spread) <= 20.0  # jittered: refused PCs do not return in step


def test_retry_after_is_read_only_from_a_refusal():
    import websockets
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    from agentd_plugins.hub import retry_after_of

    def refused(status: int, headers: dict[str, str]) -> Exception:
        return websockets.InvalidStatus(Response(status, "x", Headers(headers)))

    assert retry_after_of(refused(503, {"Retry-After": "7"})) == 7.0
    assert retry_after_of(refused(429, {"Retry-After": "2.5"})) == 2.5
    assert retry_after_of(refused(503, {})) is None
    assert retry_after_of(refused(503, {"Retry-After": "soon"})) is None
    assert retry_after_of(refused(503, {"Retry-After": "-3"})) is None
    assert retry_after_of(refused(403, {"Retry-After": "7"})) is None
    assert retry_after_of(TimeoutError()) is None


def test_beyond_the_admission_bound_a_pc_gets_503_with_retry_after_and_comes_back(live_hub, pc_factory):
    import websockets

    hub = live_hub.app.state.hub
    key = live_hub.enroll_key()
    auth = live_hub.add_user()
    _, token = enroll(live_hub.url, key)
    ws_url = live_hub.url.replace("http://", "ws://") + "/api/v1/agent"
    hub.door.bound = 0  # every PC is one too many: as in a storm whose queue is full

    async def knock() -> websockets.InvalidStatus:
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=30):
                pass
        return refused.value

    refusal = asyncio.run(knock())
    assert refusal.response.status_code == 503
    assert 1 <= int(refusal.response.headers["Retry-After"]) <= 30
    assert b"try again later" in refusal.response.body
    assert hub.door.inside == 0  # a refusal holds nothing

    # a real daemon (reconnect_max_s 1 s): refused while the bound is 0, back once there is room
    pc = pc_factory(live_hub.url, key)
    pc.start()
    refused_before = hub.door.refused
    wait_until(lambda: hub.door.refused >= refused_before + 2, 60, what="the daemon's socket refused twice with 503")
    assert connected(live_hub.url, auth)() == []
    assert "HTTP 503" in pc.stderr()
    hub.door.bound = 100
    wait_until(lambda: connected(live_hub.url, auth, pc.install_id())(), 60, what="the daemon back after the 503s")
    assert hub.door.inside == 0
    assert "Traceback" not in pc.stderr()


def test_token_lookups_arriving_together_each_get_their_own_pc(tmp_path):
    """The batched lookup (one query for the tokens arriving meanwhile) answers each
    token with its own PC, refuses wrong, unknown and revoked ones, and a revocation
    counts at the next lookup (rows are read fresh, not cached)."""
    from agentd.hub.db import make_engine
    from agentd.hub.migrate import upgrade
    from agentd.hub.store import Store

    async def go() -> None:
        engine = make_engine(f"sqlite:///{tmp_path / 'hub.sqlite'}")
        await upgrade(engine)
        store = Store(engine)
        try:
            key = await store.create_enroll_key()
            tokens = {f"agentd-batch-{i}": (await store.enroll(key.text, f"agentd-batch-{i}", f"h{i}", None)).token for i in range(12)}
            asked = list(tokens.items()) * 3
            wrong = [t[:-4] + "AAAA" for t in list(tokens.values())[:3]] + ["itk.0000000000000000.nope", "not a token"]
            found = await asyncio.gather(*(store.pc_for_token(t) for _, t in asked), *(store.pc_for_token(t) for t in wrong))
            assert [pc.install_id for pc in found[:len(asked)]] == [i for i, _ in asked]
            assert found[len(asked):] == [None] * len(wrong)
            assert await store.revoke_pc("agentd-batch-3")
            again = await asyncio.gather(*(store.pc_for_token(t) for t in tokens.values()))
            assert [pc is None for pc in again] == [i == "agentd-batch-3" for i in tokens]
        finally:
            store.hashing.close()
            await engine.dispose()

    asyncio.run(go())
