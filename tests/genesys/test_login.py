"""`agentd login`: authorization code with PKCE against the fake, which checks the verifier."""

from __future__ import annotations

import asyncio
import json
import re
import stat
import sys
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from agentd.errors import AuthError
from agentd.testing.fake_genesys import AGENT_USER_ID, LOGIN_CLIENT_ID
from agentd_plugins.genesys.client import GenesysClient, has_credentials
from agentd_plugins.genesys.login import login
from agentd_plugins.genesys.tokens import TokenStore, pkce_pair

from .helpers import settings_for


def login_settings(fake, tmp_path, **overrides):
    return settings_for(fake, client_id=LOGIN_CLIENT_ID, client_secret=None, token_file=tmp_path / "token.json", **overrides)


async def follow_in_browser(url: str) -> None:
    """What the browser does: open the login page, follow the redirect to the loopback listener."""
    async with httpx.AsyncClient(follow_redirects=True, timeout=5) as browser:
        answer = await browser.get(url)
    assert answer.status_code == 200, answer.text


async def test_pkce_login_stores_a_private_refresh_token_that_later_calls_use(fake_genesys, agentd_env, tmp_path):
    settings = login_settings(fake_genesys, tmp_path)
    shown: list[str] = []
    result = await login(settings, open_url=follow_in_browser, port=0, timeout_s=10, announce=shown.append)

    assert result.user_id == AGENT_USER_ID and result.user_name == "Alex Agent"
    # the authorize request carried an S256 challenge, the token request the matching verifier
    (authorize,) = fake_genesys.state.requests_to("^/oauth/authorize$")
    assert authorize.query["code_challenge_method"] == "S256"
    (exchange,) = fake_genesys.state.requests_to("^/oauth/token$")
    form = parse_qs(exchange.body.decode())
    assert form["grant_type"] == ["authorization_code"] and len(form["code_verifier"][0]) >= 43
    assert "Authorization" not in exchange.headers  # a public client: no secret
    assert shown and "code_challenge=" in shown[0] and "code_verifier" not in shown[0]

    token_file = tmp_path / "token.json"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    stored = json.loads(token_file.read_text())
    assert stored["refresh_token"] in fake_genesys.state.refresh_tokens
    assert has_credentials(settings)

    # a later process: the stored access token is used, then the refresh token when it stops working
    async with GenesysClient(settings) as client:
        me = await client.get("/api/v2/users/me")
        fake_genesys.state.expire_tokens()
        again = await client.get("/api/v2/users/me")
    assert me["id"] == again["id"] == AGENT_USER_ID
    refreshed = [parse_qs(r.body.decode())["grant_type"][0] for r in fake_genesys.state.requests_to("^/oauth/token$")]
    assert refreshed == ["authorization_code", "refresh_token"]
    rotated = TokenStore(token_file).load()
    assert rotated is not None and rotated.refresh_token != stored["refresh_token"]  # the rotated one was saved
    assert rotated.refresh_token in fake_genesys.state.refresh_tokens
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


async def test_the_fake_refuses_a_wrong_code_verifier(fake_genesys, agentd_env, tmp_path):
    settings = login_settings(fake_genesys, tmp_path)
    _, challenge = pkce_pair()
    redirect = "http://127.0.0.1:9/oauth/callback"
    async with httpx.AsyncClient() as browser:
        answer = await browser.get(
            f"{fake_genesys.url}/oauth/authorize",
            params={"response_type": "code", "client_id": LOGIN_CLIENT_ID, "redirect_uri": redirect, "code_challenge": challenge, "code_challenge_method": "S256", "state": "s"},
        )
    assert answer.status_code == 302
    code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
    wrong_verifier, _ = pkce_pair()
    async with GenesysClient(settings) as client:
        with pytest.raises(AuthError) as caught:
            await client.token_request(
                {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect, "client_id": LOGIN_CLIENT_ID, "code_verifier": wrong_verifier},
                grant="authorization_code",
            )
    assert "code_verifier does not match" in str(caught.value)
    assert wrong_verifier not in str(caught.value)


async def test_a_forged_redirect_state_is_refused(fake_genesys, agentd_env, tmp_path):
    settings = login_settings(fake_genesys, tmp_path)

    async def forged(url: str) -> None:
        port = parse_qs(urlsplit(url).query)["redirect_uri"][0].split(":")[2].split("/")[0]
        async with httpx.AsyncClient() as browser:
            answer = await browser.get(f"http://127.0.0.1:{port}/oauth/callback", params={"code": "stolen", "state": "not-ours"})
        assert answer.status_code == 400

    with pytest.raises(AuthError, match="wrong state"):
        await login(settings, open_url=forged, port=0, timeout_s=10, announce=lambda _: None)
    assert not (tmp_path / "token.json").exists()
    assert not fake_genesys.state.requests_to("^/oauth/token$")


async def test_agentd_login_command_prints_the_address_and_logs_in(fake_genesys, agentd_env):
    agentd_env.write_config(
        f'[genesys]\napi_base_url = "{fake_genesys.url}"\nlogin_base_url = "{fake_genesys.url}"\nclient_id = "{LOGIN_CLIENT_ID}"\n'
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentd", "login", "--no-browser", "--port", "0", "--timeout", "20",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=agentd_env.env, cwd=agentd_env.root,
    )
    try:
        url = None
        async with asyncio.timeout(20):
            while url is None:
                line = (await process.stderr.readline()).decode()
                assert line, "agentd login ended without printing the address"
                found = re.search(r"https?://\S+/oauth/authorize\?\S+", line)
                url = found.group(0) if found else None
            await follow_in_browser(url)
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    assert "logged in to Genesys Cloud as Alex Agent" in out.decode()
    token_file = agentd_env.root / "state" / "genesys-token.json"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert json.loads(token_file.read_text())["user_id"] == AGENT_USER_ID


async def test_a_refresh_token_from_a_systemd_credential(fake_genesys, agentd_env, tmp_path, monkeypatch):
    from agentd.config import resolve_secret

    await login(login_settings(fake_genesys, tmp_path), open_url=follow_in_browser, port=0, timeout_s=10, announce=lambda _: None)
    refresh = TokenStore(tmp_path / "token.json").load().refresh_token
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "genesys-refresh-token").write_text(refresh + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    secret = resolve_secret({"credential": "genesys-refresh-token"}, key="genesys.refresh_token", file=None)
    settings = settings_for(fake_genesys, client_id=LOGIN_CLIENT_ID, client_secret=None, token_file=tmp_path / "absent.json", refresh_token=secret)
    assert has_credentials(settings)
    async with GenesysClient(settings) as client:
        me = await client.get("/api/v2/users/me")
    assert me["id"] == AGENT_USER_ID
    assert not (tmp_path / "absent.json").exists()  # a credential is read-only: nothing written beside it


async def test_a_revoked_login_is_an_auth_error_naming_the_refresh_grant(fake_genesys, agentd_env, tmp_path):
    settings = login_settings(fake_genesys, tmp_path)
    await login(settings, open_url=follow_in_browser, port=0, timeout_s=10, announce=lambda _: None)
    fake_genesys.state.refresh_tokens.clear()  # an admin revoked the agent's sessions
    fake_genesys.state.expire_tokens()
    async with GenesysClient(settings) as client:
        with pytest.raises(AuthError) as refused:
            await client.get("/api/v2/users/me")
    assert refused.value.grant == "refresh_token"
    # and the evidence item carries it, for the platform.auth_failed rule's next step
    from agentd_plugins.genesys.evidence import GenesysSource

    item = GenesysSource(settings).failure(refused.value)
    assert item.kind == "genesys.auth" and item.data["grant"] == "refresh_token"

