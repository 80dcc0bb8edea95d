"""The Genesys client against answers that are huge, deeply nested, redirected, HTML or
slow (a plain loopback server, agentd.testing.hostile_http): each a clear error naming
the request, and memory bounded."""

from __future__ import annotations

import time

import pytest

from agentd.errors import MalformedResponse, NotFound, TransportError
from agentd.testing.hostile_http import HostileServer, client_reads_in_fresh_process
from agentd_plugins.genesys.client import MAX_JSON_DEPTH, GenesysClient, json_depth
from agentd_plugins.genesys.settings import GenesysSettings
from agentd_plugins.genesys.tokens import AccessToken, TokenManager


def client_for(server: HostileServer, timeout_s: float = 5.0) -> GenesysClient:
    settings = GenesysSettings(api_base_url=server.url, login_base_url=server.url, timeout_s=timeout_s, max_retries=0)

    async def fixed() -> AccessToken:
        return AccessToken("test-token", time.time() + 3600, "client_credentials")

    return GenesysClient(settings, tokens=TokenManager(fixed, description="test"))


@pytest.fixture
def hostile():
    with HostileServer() as server:
        yield server


async def test_a_huge_answer_is_refused_at_the_cap_naming_the_request(hostile, agentd_env):
    async with client_for(hostile) as client:
        for path in ("/huge?mb=50", "/huge-declared?mb=50"):
            with pytest.raises(MalformedResponse) as caught:
                await client.get(path)
            assert "GET /huge" in str(caught.value) and "16 MiB cap" in str(caught.value)
        # a smaller cap for one call
        with pytest.raises(MalformedResponse, match="1 MiB cap"):
            await client.get("/huge?mb=2", max_response_bytes=2**20)
        assert (await client.get("/ok"))["id"] == "fine"  # the client is still usable


async def test_deep_nesting_redirects_html_and_slow_answers_each_name_the_request(hostile, agentd_env):
    async with client_for(hostile, timeout_s=1.5) as client:
        with pytest.raises(MalformedResponse) as caught:
            await client.get("/nested?depth=100000")
        assert "GET /nested" in str(caught.value) and f"more than {MAX_JSON_DEPTH}" in str(caught.value)
        with pytest.raises(MalformedResponse) as caught:
            await client.get("/redirect")
        text = str(caught.value)
        assert "GET /redirect: HTTP 302 redirect to https://login.portal.invalid/landing" in text and "next=x" not in text
        with pytest.raises(MalformedResponse, match=r"GET /moved: HTTP 301 redirect to http://127\.0\.0\.1:\d+/api/v2/elsewhere"):
            await client.get("/moved")
        with pytest.raises(MalformedResponse) as caught:
            await client.get("/html")
        assert "GET /html: HTTP 200 answer is not JSON (text/html)" in str(caught.value) and "proxy" in str(caught.value)
        started = time.monotonic()
        with pytest.raises(TransportError) as caught:
            await client.get("/drip")  # a byte every half second: each read is quick, the whole is not
        assert "GET /drip" in str(caught.value) and time.monotonic() - started < 10


async def test_a_same_origin_redirect_is_followed_when_the_call_expects_it(hostile, agentd_env):
    async with client_for(hostile) as client:
        with pytest.raises(NotFound, match="404"):
            # /moved points to /api/v2/elsewhere on the same origin: followed, and that one is a 404
            await client.get("/moved", follow_same_origin_redirect=True)
        assert hostile.requests[-1] == "/api/v2/elsewhere"
        with pytest.raises(MalformedResponse, match="302 redirect to https://login.portal.invalid"):
            await client.get("/redirect", follow_same_origin_redirect=True)  # another host: never followed


def test_json_depth_is_measured_without_parsing():
    assert json_depth(b'{"a": [1, {"b": "[[[[[[" }]}') == 3
    assert json_depth(b'"\\"[[[["') == 0
    assert json_depth(b"[" * 5000 + b"]" * 5000) == 5000


def test_a_50_mb_answer_keeps_the_process_small(hostile, agentd_env):
    read = client_reads_in_fresh_process(hostile.url, "/huge?mb=50")
    assert read.refused and "answer larger than the 16 MiB cap" in read.message, read
    assert read.peak_mb < 150, read  # reading it whole took ~960 MB before the cap
