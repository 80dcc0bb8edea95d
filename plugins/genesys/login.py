"""``agentd login``: the agent's own identity, by authorization code.

Two kinds of OAuth client (``[genesys] client_id``):
- a public client (PKCE, S256): no secret on the PC; the service may give no refresh
  token, and then the access token serves until it expires (24 h by default), after
  which the agent logs in again;
- a confidential Code Authorization client (``[genesys] login_client_secret``): the code
  is exchanged with HTTP Basic, and its refresh token keeps the login alive.

1. make a random ``state`` (and for PKCE a ``code_verifier`` and its S256 challenge);
2. listen on the loopback redirect (``http://127.0.0.1:PORT/oauth/callback``);
3. open ``{login}/oauth/authorize?...`` in the system browser (and print it, for PCs
   without one);
4. take the ``code`` from the redirect (checking ``state``), exchange it at
   ``POST {login}/oauth/token``;
5. note who logged in (``GET /api/v2/users/me``) and store the login with owner-only
   permissions (``[genesys] token_file``). The command then hands it to a running
   daemon (``plugin.py``).

The listener answers one request and closes; the whole flow has a deadline.
"""

from __future__ import annotations

import asyncio
import getpass
import secrets
import time
import webbrowser
from dataclasses import dataclass
from typing import Awaitable, Callable
from urllib.parse import parse_qs, urlencode, urlsplit

import structlog

from agentd.errors import AuthError, GenesysError, UsageError

from .client import GenesysClient
from .settings import GenesysSettings
from .tokens import AccessToken, StoredLogin, TokenManager, TokenStore, pkce_pair

log = structlog.get_logger("agentd.genesys.login")

CALLBACK_PATH = "/oauth/callback"
OpenUrl = Callable[[str], "Awaitable[None] | None"]


@dataclass(frozen=True)
class LoginResult:
    user_id: str | None
    user_name: str | None
    token_path: str
    login: StoredLogin | None = None

    def __repr__(self) -> str:
        return f"LoginResult(user_id={self.user_id!r}, token_path={self.token_path!r})"


class _Redirect:
    """A one-shot loopback HTTP listener for the OAuth redirect."""

    def __init__(self, expected_state: str) -> None:
        self.expected_state = expected_state
        self.result: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self, port: int) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode("ascii", "replace")
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, IndexError):
            writer.close()
            return
        parts = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path != CALLBACK_PATH:
            await _answer(writer, 404, "Not the agentd login callback.")
            return
        if query.get("state") != self.expected_state:
            await _answer(writer, 400, "The login answer does not belong to this login (state mismatch). Start `agentd login` again.")
            if not self.result.done():
                self.result.set_exception(AuthError("the OAuth redirect carried a wrong state: the login was not started here"))
            return
        if "error" in query:
            await _answer(writer, 400, f"Login refused: {query.get('error_description') or query['error']}")
            if not self.result.done():
                self.result.set_exception(AuthError(f"Genesys Cloud refused the login: {query.get('error_description') or query['error']}"))
            return
        code = query.get("code")
        if not code:
            await _answer(writer, 400, "No authorization code in the answer.")
            return
        await _answer(writer, 200, "agentd is logged in. You can close this tab.")
        if not self.result.done():
            self.result.set_result(code)


async def _answer(writer: asyncio.StreamWriter, status: int, text: str) -> None:
    body = f"<!doctype html><title>agentd login</title><p>{text}</p>".encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    try:
        await writer.drain()
    finally:
        writer.close()


def authorize_url(settings: GenesysSettings, *, redirect_uri: str, challenge: str | None, state: str) -> str:
    params = {"response_type": "code", "client_id": settings.client_id or "", "redirect_uri": redirect_uri}
    if challenge is not None:  # PKCE (a public client)
        params.update(code_challenge=challenge, code_challenge_method="S256")
    params["state"] = state
    return f"{settings.login_base}/oauth/authorize?{urlencode(params)}"


async def login(
    settings: GenesysSettings,
    *,
    open_url: OpenUrl | None = None,
    port: int | None = None,
    timeout_s: float = 300.0,
    announce: Callable[[str], None] = print,
) -> LoginResult:
    """Run the whole flow; returns who logged in. Raises UsageError / AuthError / GenesysError."""
    if not settings.client_id:
        raise UsageError("agentd login needs [genesys] client_id (an OAuth client of type Code Authorization / PKCE)")
    confidential = settings.login_client_secret is not None
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    redirect = _Redirect(state)
    try:
        await redirect.start(settings.redirect_port if port is None else port)
    except OSError as exc:
        raise UsageError(f"cannot listen on 127.0.0.1:{settings.redirect_port if port is None else port} for the login redirect: {exc.strerror}; set [genesys] redirect_port") from None
    try:
        redirect_uri = f"http://127.0.0.1:{redirect.port}{CALLBACK_PATH}"
        url = authorize_url(settings, redirect_uri=redirect_uri, challenge=None if confidential else challenge, state=state)
        announce(f"Open this address to log in to Genesys Cloud:\n{url}")
        opener = open_url or _system_browser
        opened = opener(url)
        if asyncio.iscoroutine(opened):
            asyncio.ensure_future(opened)
        try:
            code = await asyncio.wait_for(asyncio.shield(redirect.result), timeout=timeout_s)
        except asyncio.TimeoutError:
            raise UsageError(f"no login answer within {timeout_s:g} s; run `agentd login` again") from None
    finally:
        await redirect.close()

    client = GenesysClient(settings, tokens=TokenManager(_no_token))
    try:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        basic = None
        if confidential:
            assert settings.login_client_secret is not None
            basic = (settings.client_id, settings.login_client_secret.reveal())
        else:
            form.update(client_id=settings.client_id, code_verifier=verifier)
        token = await client.token_request(form, basic=basic, grant="authorization_code")
        if not token.refresh_token:
            log.info("no refresh token with this login: it serves until the access token expires", expires_in_s=round(token.expires_at - time.time()))
        client.tokens = TokenManager(_no_token, initial=token, margin_s=0.0)
        user_id = user_name = None
        try:
            me = await client.get("/api/v2/users/me")
            if isinstance(me, dict):
                user_id, user_name = me.get("id"), me.get("name")
        except GenesysError as exc:
            log.warning("logged in, but the user could not be read", error=str(exc))
    finally:
        await client.aclose()
    stored = StoredLogin(
        refresh_token=token.refresh_token,
        client_id=settings.client_id,
        login_base=settings.login_base,
        user_id=user_id,
        user_name=user_name,
        access_token=token.value,
        expires_at=token.expires_at,
        grant="code" if confidential else "pkce",
        account=_account(),
        logged_in_at=time.time(),
    )
    store = TokenStore(settings.token_path)
    store.save(stored)
    return LoginResult(user_id=user_id, user_name=user_name, token_path=str(store.path), login=stored)


def _account() -> str | None:
    """The computer account that runs the login (the daemon notes whose login it holds)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


async def _no_token() -> AccessToken:
    raise AuthError("no token yet")


def _system_browser(url: str) -> None:
    try:
        webbrowser.open(url, new=1)
    except webbrowser.Error:
        pass  # the printed address is the fallback
