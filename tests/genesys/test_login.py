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
    values = {"client_id": LOGIN_CLIENT_ID, "client_secret": None, "token_file": tmp_path / "token.json", **overrides}
    return settings_for(fake, **values)


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



async def test_a_confidential_code_client_exchanges_with_its_secret_and_keeps_refreshing(fake_genesys, agentd_env, tmp_path):
    from agentd.config import Secret
    from agentd.testing.fake_genesys import CODE_CLIENT_ID, CODE_CLIENT_SECRET

    settings = login_settings(fake_genesys, tmp_path, client_id=CODE_CLIENT_ID, login_client_secret=Secret(CODE_CLIENT_SECRET))
    result = await login(settings, open_url=follow_in_browser, port=0, timeout_s=10, announce=lambda _: None)
    assert result.user_id == AGENT_USER_ID and result.login.grant == "code" and result.login.refreshable

    (authorize,) = fake_genesys.state.requests_to("^/oauth/authorize$")
    assert "code_challenge" not in authorize.query  # the secret proves the client, not PKCE
    (exchange,) = fake_genesys.state.requests_to("^/oauth/token$")
    assert exchange.headers["Authorization"].startswith("Basic ")
    assert CODE_CLIENT_SECRET.encode() not in exchange.body and b"code_verifier" not in exchange.body

    async with GenesysClient(settings) as client:
        fake_genesys.state.expire_tokens()
        me = await client.get("/api/v2/users/me")
        fake_genesys.state.expire_tokens()
        again = await client.get("/api/v2/users/me")
    assert me["id"] == again["id"] == AGENT_USER_ID
    token_requests = fake_genesys.state.requests_to("^/oauth/token$")
    assert [parse_qs(r.body.decode())["grant_type"][0] for r in token_requests] == ["authorization_code", "refresh_token", "refresh_token"]
    assert all(r.headers["Authorization"].startswith("Basic ") and r.status == 200 for r in token_requests)
    stored = TokenStore(tmp_path / "token.json").load()
    assert stored.refresh_token in fake_genesys.state.refresh_tokens and stored.grant == "code"

    # without the secret the service refuses the refresh: a clear AuthError, no secret in it
    bare = login_settings(fake_genesys, tmp_path, client_id=CODE_CLIENT_ID)
    fake_genesys.state.expire_tokens()
    async with GenesysClient(bare) as client:
        with pytest.raises(AuthError) as caught:
            await client.get("/api/v2/users/me")
    assert "refused with HTTP 401" in str(caught.value) and CODE_CLIENT_SECRET not in str(caught.value)


async def test_a_pkce_login_without_refresh_token_serves_until_it_expires_then_asks_for_a_login(fake_genesys, agentd_env, tmp_path):
    from agentd.testing.fake_genesys import PKCE_ONLY_CLIENT_ID
    from agentd_plugins.genesys.tokens import LOGIN_EXPIRED_GRANT

    fake_genesys.state.token_lifetime_s = 8  # generous: a loaded machine must not expire it during the login itself
    settings = login_settings(fake_genesys, tmp_path, client_id=PKCE_ONLY_CLIENT_ID)
    result = await login(settings, open_url=follow_in_browser, port=0, timeout_s=10, announce=lambda _: None)
    assert result.login.refresh_token is None and result.login.access_token
    assert json.loads((tmp_path / "token.json").read_text())["refresh_token"] is None

    async with GenesysClient(settings) as client:
        # inside the usual 120 s refresh margin, yet used: nothing could renew it
        assert (await client.get("/api/v2/users/me"))["id"] == AGENT_USER_ID
        await asyncio.sleep(max(0.0, result.login.expires_at - __import__("time").time()) + 0.2)
        with pytest.raises(AuthError) as caught:
            await client.get("/api/v2/users/me")
    assert caught.value.grant == LOGIN_EXPIRED_GRANT
    assert "expired at" in str(caught.value) and "run `agentd login`" in str(caught.value)
    # the expired token was never sent, and no refresh was tried
    assert [parse_qs(r.body.decode())["grant_type"][0] for r in fake_genesys.state.requests_to("^/oauth/token$")] == ["authorization_code"]
    assert [r.status for r in fake_genesys.state.requests_to("^/api/v2/users/me$")] == [200, 200], [(r.method, r.path, r.status) for r in fake_genesys.state.requests]


async def test_an_expired_login_is_named_in_the_check_rows_and_in_platform_auth_failed(fake_genesys, agentd_env, tmp_path):
    from agentd.testing.fake_genesys import PKCE_ONLY_CLIENT_ID

    fake_genesys.state.token_lifetime_s = 5
    token_file = agentd_env.root / "state" / "genesys-token.json"
    settings = login_settings(fake_genesys, tmp_path, client_id=PKCE_ONLY_CLIENT_ID, token_file=token_file)
    result = await login(settings, open_url=follow_in_browser, port=0, timeout_s=10, announce=lambda _: None)
    await asyncio.sleep(max(0.0, result.login.expires_at - __import__("time").time()) + 0.2)
    agentd_env.write_config(
        f'[agentd]\ndisable_plugins = ["dns", "https", "host", "stun", "nat", "turn", "udp-ports", "media"]\n'
        f'[genesys]\napi_base_url = "{fake_genesys.url}"\nlogin_base_url = "{fake_genesys.url}"\nclient_id = "{PKCE_ONLY_CLIENT_ID}"\n'
    )
    done = await asyncio.to_thread(agentd_env.run, "check", "--json", "--no-daemon", "--only", "websocket")
    report = json.loads(done.stdout)
    (ws,) = report["checks"]
    (row,) = [t for t in ws["details"]["targets"] if t.get("genesys_channel")]
    assert row["genesys_auth"]["grant"] == "login_expired" and "run `agentd login`" in row["error"]
    codes = {v["code"]: v for v in report["verdicts"]}
    assert "signaling.websocket_unreachable" not in codes  # not the network's fault
    auth = codes["platform.auth_failed"]
    assert "Run `agentd login`" in auth["next_step"] and "expired at" in auth["summary"] and "check:websocket" in auth["evidence"]
    secrets = set(fake_genesys.state.tokens)
    assert not [s for s in secrets if s in done.stdout + done.stderr]
