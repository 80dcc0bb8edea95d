"""The API client against the fake Genesys Cloud: auth, retries, error mapping, paging."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest

from agentd import paths
from agentd.config import Secret
from agentd.errors import AuthError, MalformedResponse, PermissionMissing, RateLimited, ServerError, TransportError
from agentd.testing.fake_genesys import AGENT_USER_ID, CC_CLIENT_ID, CC_CLIENT_SECRET, DROPPED_CALL_ID, OAuthClient
from agentd_plugins.genesys.client import GenesysClient

from .helpers import fast_client, settings_for

CONVERSATION = f"/api/v2/conversations/{DROPPED_CALL_ID}"


async def test_client_credentials_use_http_basic_and_every_call_carries_the_install_id(fake_genesys, agentd_env):
    async with fast_client(fake_genesys) as client:
        body = await client.get(CONVERSATION)
        await client.get(f"/api/v2/users/{AGENT_USER_ID}")
    assert body["id"] == DROPPED_CALL_ID
    (token_call,) = fake_genesys.state.requests_to("^/oauth/token$")
    expected = base64.b64encode(f"{CC_CLIENT_ID}:{CC_CLIENT_SECRET}".encode()).decode()
    assert token_call.headers["Authorization"] == f"Basic {expected}"
    assert b"grant_type=client_credentials" in token_call.body
    api_calls = fake_genesys.state.requests_to("^/api/v2/")
    assert len(api_calls) == 2
    ids = {r.headers.get("X-Genesys-Client-Id") for r in [token_call, *api_calls]}
    assert ids == {paths.install_id()}  # one stable id per install, also for the next client
    async with fast_client(fake_genesys) as again:
        await again.get(CONVERSATION)
    assert fake_genesys.state.requests[-1].headers["X-Genesys-Client-Id"] == paths.install_id()


async def test_a_wrong_secret_is_an_auth_error_without_the_secret(fake_genesys, agentd_env):
    async with fast_client(fake_genesys, client_secret=Secret("wrong-secret-value")) as client:
        with pytest.raises(AuthError) as caught:
            await client.get(CONVERSATION)
    assert caught.value.status == 401
    assert "wrong-secret-value" not in str(caught.value)


async def test_an_expired_token_is_refreshed_once_and_the_call_completes(fake_genesys, agentd_env):
    async with fast_client(fake_genesys) as client:
        await client.get(CONVERSATION)
        fake_genesys.state.expire_tokens()  # the server forgets the token early: 401
        body = await client.get(CONVERSATION)
    assert body["id"] == DROPPED_CALL_ID
    statuses = [r.status for r in fake_genesys.state.requests_to("^/api/v2/conversations/")]
    assert statuses == [200, 401, 200]
    assert len(fake_genesys.state.requests_to("^/oauth/token$")) == 2


async def test_a_401_after_the_refresh_becomes_an_auth_error(fake_genesys, agentd_env):
    fake_genesys.state.inject("^/api/v2/conversations/", status=401, times=5)
    async with fast_client(fake_genesys) as client:
        with pytest.raises(AuthError) as caught:
            await client.get(CONVERSATION)
    assert caught.value.correlation_id
    assert len(fake_genesys.state.requests_to("^/api/v2/conversations/")) == 2  # refresh once, no more


async def test_concurrent_callers_share_one_refresh(fake_genesys, agentd_env):
    async with fast_client(fake_genesys) as client:
        await client.get(CONVERSATION)
        fake_genesys.state.expire_tokens()
        bodies = await asyncio.gather(*(client.get(CONVERSATION) for _ in range(12)))
    assert all(b["id"] == DROPPED_CALL_ID for b in bodies)
    assert len(fake_genesys.state.requests_to("^/oauth/token$")) == 2  # the first and ONE refresh


async def test_a_token_is_renewed_before_it_expires(fake_genesys, agentd_env):
    fake_genesys.state.token_lifetime_s = 100  # inside the refresh margin: renew before use
    async with fast_client(fake_genesys) as client:
        await client.get(CONVERSATION)
        await client.get(CONVERSATION)
    assert len(fake_genesys.state.requests_to("^/oauth/token$")) == 2
    assert all(r.status == 200 for r in fake_genesys.state.requests_to("^/api/v2/"))  # no 401 needed


async def test_a_429_storm_waits_retry_after_and_completes(fake_genesys, agentd_env):
    fake_genesys.state.inject("^/api/v2/conversations/", status=429, times=4, retry_after="0.3")
    async with fast_client(fake_genesys) as client:
        started = time.monotonic()
        body = await client.get(CONVERSATION)
        elapsed = time.monotonic() - started
    assert body["id"] == DROPPED_CALL_ID
    assert elapsed >= 4 * 0.3  # it honoured Retry-After each time
    assert client.retries == 4
    assert client.rate_limit is not None and client.rate_limit.allowed == 300


async def test_a_retry_after_beyond_the_budget_gives_up_at_once(fake_genesys, agentd_env):
    fake_genesys.state.inject("^/api/v2/conversations/", status=429, times=1, retry_after="500")
    async with fast_client(fake_genesys) as client:
        started = time.monotonic()
        with pytest.raises(RateLimited) as caught:
            await client.get(CONVERSATION)
    assert time.monotonic() - started < 2.0
    assert caught.value.retry_after == 500


async def test_a_5xx_burst_is_retried_and_completes(fake_genesys, agentd_env):
    fake_genesys.state.inject("^/api/v2/conversations/", status=503, times=2)
    fake_genesys.state.inject("^/api/v2/conversations/", status=502, times=1)
    async with fast_client(fake_genesys) as client:
        body = await client.get(CONVERSATION)
    assert body["id"] == DROPPED_CALL_ID
    assert [r.status for r in fake_genesys.state.requests_to("^/api/v2/conversations/")] == [503, 503, 502, 200]


async def test_501_is_not_retried_and_endless_5xx_ends_as_server_error(fake_genesys, agentd_env):
    fake_genesys.state.inject("^/api/v2/conversations/", status=501, times=1)
    async with fast_client(fake_genesys, max_retries=2) as client:
        with pytest.raises(ServerError):
            await client.get(CONVERSATION)
        assert len(fake_genesys.state.requests_to("^/api/v2/conversations/")) == 1
        fake_genesys.state.inject("^/api/v2/conversations/", status=500, times=10)
        with pytest.raises(ServerError) as caught:
            await client.get(CONVERSATION)
    assert caught.value.status == 500 and caught.value.correlation_id
    assert len(fake_genesys.state.requests_to("^/api/v2/conversations/")) == 1 + 3


async def test_malformed_json_is_a_malformed_response(fake_genesys, agentd_env):
    fake_genesys.state.inject("^/api/v2/conversations/", kind="malformed")
    async with fast_client(fake_genesys) as client:
        with pytest.raises(MalformedResponse) as caught:
            await client.get(CONVERSATION)
    assert "not JSON" in str(caught.value)


async def test_a_slow_answer_hits_the_deadline(fake_genesys, agentd_env):
    fake_genesys.state.inject("^/api/v2/conversations/", kind="slow", delay_s=1.2, times=5)
    async with fast_client(fake_genesys, timeout_s=0.3, max_retries=1) as client:
        started = time.monotonic()
        with pytest.raises(TransportError) as caught:
            await client.get(CONVERSATION)
    assert time.monotonic() - started < 2.0
    assert "no answer in time" in str(caught.value)


async def test_403_names_the_missing_permission(fake_genesys, agentd_env):
    fake_genesys.state.clients[CC_CLIENT_ID].permissions = frozenset({"conversation:communication:view"})
    async with fast_client(fake_genesys) as client:
        await client.get(CONVERSATION)  # allowed
        with pytest.raises(PermissionMissing) as caught:
            await client.get(f"/api/v2/analytics/conversations/{DROPPED_CALL_ID}/details")
    assert caught.value.permission == "analytics:conversationDetail:view"
    assert caught.value.status == 403


async def test_403_for_a_missing_scope_names_the_scope(fake_genesys, agentd_env):
    fake_genesys.state.clients["limited"] = OAuthClient("limited", secret="limited-secret", scopes=frozenset({"conversations:readonly"}))
    async with fast_client(fake_genesys, client_id="limited", client_secret=Secret("limited-secret")) as client:
        with pytest.raises(PermissionMissing) as caught:
            await client.get(f"/api/v2/integrations/x")
    assert caught.value.permission == "integrations:readonly"


async def test_pages_follow_page_count(fake_genesys, agentd_env):
    async with fast_client(fake_genesys) as client:
        phones = [p async for page in client.pages("/api/v2/telephony/providers/edges/phones", page_size=1) for p in page]
    assert len(phones) == len(fake_genesys.state.phones) == 4
    numbers = [r.query["pageNumber"] for r in fake_genesys.state.requests_to("/edges/phones$")]
    assert numbers == ["1", "2", "3", "4"]


async def test_a_dead_server_costs_seconds(agentd_env):
    import socket

    with socket.socket() as sock:  # a port nobody listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    from agentd_plugins.genesys.settings import GenesysSettings

    settings = GenesysSettings(api_base_url=f"http://127.0.0.1:{port}", login_base_url=f"http://127.0.0.1:{port}", client_id="x", client_secret=Secret("y-secret"), timeout_s=1.0)
    started = time.monotonic()
    async with GenesysClient(settings) as client:
        with pytest.raises(TransportError):
            await client.get("/api/v2/users/me")
    assert time.monotonic() - started < 5.0


def test_regions_map_to_api_and_login_hosts_with_overrides():
    from agentd_plugins.genesys.settings import GenesysSettings

    frankfurt = GenesysSettings(region="mypurecloud.de")
    assert (frankfurt.api_base, frankfurt.login_base) == ("https://api.mypurecloud.de", "https://login.mypurecloud.de")
    assert frankfurt.hosts()["streaming"] == "streaming.mypurecloud.de"
    moved = GenesysSettings(region="usw2.pure.cloud", api_base_url="https://proxy.example/genesys/", login_base_url="https://login.example")
    assert (moved.api_base, moved.login_base) == ("https://proxy.example/genesys", "https://login.example")


async def test_every_failed_response_logs_its_correlation_id(fake_genesys, agentd_env):
    import io

    from agentd import logs

    stream = io.StringIO()
    logs.configure("info", json=True, stream=stream)
    try:
        fake_genesys.state.inject("^/api/v2/conversations/", status=503, times=1)
        fake_genesys.state.inject("^/api/v2/conversations/", status=429, times=1, retry_after="0")
        async with fast_client(fake_genesys) as client:
            await client.get(CONVERSATION)
    finally:
        logs.configure("warning")
    failed = [r for r in fake_genesys.state.requests_to("^/api/v2/conversations/") if r.status >= 400]
    assert len(failed) == 2
    text = stream.getvalue()
    for request in failed:
        assert request.correlation_id and request.correlation_id in text
    assert "inin_ratelimit_allowed" in text
