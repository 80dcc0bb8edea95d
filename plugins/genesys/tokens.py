"""OAuth tokens for the Genesys Cloud API: where they come from and where they are kept.

Two grants (DESIGN.md):
- client credentials (HTTP Basic with ``client_id``/``client_secret``) for
  organisation-wide reads;
- authorization code for the agent's own identity (``agentd login``): PKCE (the service
  may give no refresh token) or a confidential client (``[genesys]
  login_client_secret``, refresh tokens). The login is stored in the state directory
  with owner-only permissions (in the daemon: the login an agent handed over), or the
  refresh token is read from ``[genesys] refresh_token`` (a systemd credential).

:class:`TokenManager` hands out a valid access token and refreshes it shortly before it
expires; concurrent callers wait for the one refresh in flight instead of starting their
own. :class:`LoginTokenManager` follows the store (a new login, a logout) and uses a
token it cannot renew to its last second, then says to run ``agentd login``. Token values never appear in logs or exceptions: every one is registered with
:mod:`agentd.redact` as soon as it is seen.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import structlog

from agentd import paths
from agentd.errors import AuthError, MalformedResponse
from agentd.redact import register_secret
from agentd.fileio import write_atomic

log = structlog.get_logger("agentd.genesys.tokens")

# Refresh this long before the token expires: a call that starts with a token about to
# expire must not fail half-way.
REFRESH_MARGIN_S = 120.0
EXPIRY_SLACK_S = 30.0
"""A 401 this close to a login's expiry is its expiry (the two clocks differ a little)."""
TOKEN_FILE = "genesys-token.json"


@dataclass(frozen=True)
class AccessToken:
    """An access token and when it stops working (``time.time()`` seconds)."""

    value: str
    expires_at: float
    grant: str
    refresh_token: str | None = None
    user_id: str | None = None

    def fresh(self, margin_s: float = REFRESH_MARGIN_S) -> bool:
        return time.time() + margin_s < self.expires_at

    def __repr__(self) -> str:  # never show the value
        return f"AccessToken(grant={self.grant!r}, expires_in={self.expires_at - time.time():.0f}s)"

    __str__ = __repr__


# -- PKCE ------------------------------------------------------------------------------


def pkce_pair() -> tuple[str, str]:
    """A ``code_verifier`` (RFC 7636: 43-128 unreserved characters) and its S256 challenge."""
    verifier = secrets.token_urlsafe(64)[:96]
    return verifier, pkce_challenge(verifier)


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# -- the token store -------------------------------------------------------------------


def default_token_path() -> Path:
    return paths.state_dir() / TOKEN_FILE


def write_private(path: Path, text: str) -> None:
    """Write ``text`` so that only the owner can read it (0600), atomically."""
    write_atomic(path, text, mode=0o600)


LOGIN_EXPIRED_GRANT = "login_expired"
"""``AuthError.grant`` of a login that ran out with no refresh token: only a new
``agentd login`` helps (``platform.auth_failed`` says so)."""


@dataclass(frozen=True)
class StoredLogin:
    """What ``agentd login`` keeps: the tokens and who logged in.

    ``grant``: ``pkce`` (a public client: the service may give no refresh token) or
    ``code`` (a confidential client, ``[genesys] login_client_secret``: refreshing needs
    the secret too). Without a refresh token the access token serves until
    ``expires_at``, then the agent must log in again. ``account`` is the computer account
    that logged in (the daemon holds one agent's login at a time and says whose)."""

    refresh_token: str | None
    client_id: str
    login_base: str
    user_id: str | None = None
    user_name: str | None = None
    access_token: str | None = None
    expires_at: float = 0.0
    grant: str = "pkce"
    account: str | None = None
    logged_in_at: float = 0.0

    @property
    def refreshable(self) -> bool:
        return bool(self.refresh_token)

    def expired(self, now: float | None = None) -> bool:
        """No refresh token and the access token has run out: only a new login helps."""
        return not self.refresh_token and (now if now is not None else time.time()) >= self.expires_at

    def who(self) -> str:
        if self.user_name and self.user_id:
            return f"{self.user_name} ({self.user_id})"
        return self.user_name or self.user_id or "an unknown user"

    def expiry_text(self) -> str:
        return _iso(self.expires_at) if self.expires_at else "unknown"

    def expired_message(self) -> str:
        return (
            f"the Genesys Cloud login of {self.who()} expired at {self.expiry_text()} and cannot be renewed "
            "(no refresh token): run `agentd login`"
        )

    def public(self) -> dict[str, Any]:
        """What may be shown (status, answers): everything but the tokens."""
        return {
            "user_id": self.user_id,
            "user_name": self.user_name,
            "account": self.account,
            "grant": self.grant,
            "refreshable": self.refreshable,
            "expires": self.expiry_text() if self.access_token else None,
            "expired": self.expired(),
            "logged_in": _iso(self.logged_in_at) if self.logged_in_at else None,
        }

    def __repr__(self) -> str:
        return f"StoredLogin(client_id={self.client_id!r}, user_id={self.user_id!r}, grant={self.grant!r})"

    __str__ = __repr__


def _iso(epoch: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


LOGIN_KEYS = ("refresh_token", "client_id", "login_base", "user_id", "user_name", "access_token", "expires_at", "grant", "account", "logged_in_at")


def login_from_dict(raw: Any) -> StoredLogin | None:
    """A StoredLogin from its JSON form (the token file, the control socket), or None
    when it holds no usable token. Tokens are registered for redaction as they are seen."""
    if not isinstance(raw, dict):
        return None
    refresh = raw.get("refresh_token") if isinstance(raw.get("refresh_token"), str) and raw.get("refresh_token") else None
    access = raw.get("access_token") if isinstance(raw.get("access_token"), str) and raw.get("access_token") else None
    if refresh is None and access is None:
        return None
    for value in (refresh, access):
        if value:
            register_secret(value)
    try:
        expires_at = float(raw.get("expires_at") or 0.0)
        logged_in_at = float(raw.get("logged_in_at") or 0.0)
    except (TypeError, ValueError):
        return None
    text = lambda key: raw[key] if isinstance(raw.get(key), str) and raw.get(key) else None  # noqa: E731
    return StoredLogin(
        refresh_token=refresh,
        client_id=text("client_id") or "",
        login_base=text("login_base") or "",
        user_id=text("user_id"),
        user_name=text("user_name"),
        access_token=access,
        expires_at=expires_at,
        grant=text("grant") or "pkce",
        account=text("account"),
        logged_in_at=logged_in_at,
    )


def login_to_dict(login: StoredLogin) -> dict[str, Any]:
    return {key: getattr(login, key) for key in LOGIN_KEYS}


class TokenStore:
    """The login of ``agentd login`` in a JSON file readable by the owner only."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_token_path()

    def load(self) -> StoredLogin | None:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("the stored Genesys login cannot be read; run `agentd login` again", path=str(self.path), error=type(exc).__name__)
            return None
        login = login_from_dict(raw)
        if login is None:
            log.warning("the stored Genesys login holds no token; run `agentd login` again", path=str(self.path))
        return login

    def save(self, login: StoredLogin) -> None:
        for value in (login.refresh_token, login.access_token):
            if value:
                register_secret(value)
        write_private(self.path, json.dumps(login_to_dict(login), indent=2) + "\n")

    def clear(self) -> bool:
        """Forget the login; True when there was one."""
        try:
            self.path.unlink()
            return True
        except FileNotFoundError:
            return False

    def exists(self) -> bool:
        return self.path.is_file()

    def signature(self) -> tuple[int, int, int] | None:
        """Changes whenever the file is replaced (a new login) or removed (a logout)."""
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)


def parse_token_response(payload: Any, grant: str) -> AccessToken:
    """Read ``{"access_token", "expires_in", "refresh_token"?}`` from ``POST /oauth/token``."""
    if not isinstance(payload, dict) or not isinstance(payload.get("access_token"), str):
        raise MalformedResponse("the OAuth token response has no access_token", path="/oauth/token")
    value = payload["access_token"]
    register_secret(value)
    refresh = payload.get("refresh_token") if isinstance(payload.get("refresh_token"), str) else None
    if refresh:
        register_secret(refresh)
    try:
        lifetime = float(payload.get("expires_in") or 86400)
    except (TypeError, ValueError):
        lifetime = 86400.0
    return AccessToken(value=value, expires_at=time.time() + lifetime, grant=grant, refresh_token=refresh)


# -- handing out tokens ----------------------------------------------------------------

Fetch = Callable[[], Awaitable[AccessToken]]


class TokenManager:
    """One valid access token for many concurrent callers.

    ``fetch`` obtains a new token (a client-credentials grant or a refresh). A caller
    that finds the token stale, or that was answered 401 with it, asks for a refresh;
    callers arriving while that refresh runs wait for it and share its result.
    """

    def __init__(self, fetch: Fetch, *, initial: AccessToken | None = None, description: str = "", margin_s: float = REFRESH_MARGIN_S) -> None:
        self._fetch = fetch
        self._token = initial
        self.margin_s = margin_s  # 0: a token nothing can renew is used to its last second
        self._refreshing: asyncio.Future[AccessToken] | None = None
        self.description = description
        self.refreshes = 0

    async def token(self) -> AccessToken:
        current = self._token
        if current is not None and current.fresh(self.margin_s):
            return current
        return await self.refresh(stale=current)

    async def refresh(self, *, stale: AccessToken | None = None) -> AccessToken:
        """A new token, unless another caller already replaced ``stale`` (then that one)."""
        if self._token is not None and stale is not None and self._token is not stale and self._token.fresh(0):
            return self._token
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._do_refresh())
        return await asyncio.shield(self._refreshing)

    async def _do_refresh(self) -> AccessToken:
        self.refreshes += 1
        try:
            token = await self._fetch()
        except AuthError:
            self._token = None
            raise
        self._token = token
        log.debug("access token obtained", grant=token.grant, expires_in_s=round(token.expires_at - time.time()))
        return token


class LoginTokenManager(TokenManager):
    """The agent's own login, as the token store holds it now.

    The store is looked at before every token is handed out: when another process
    replaced the file (a new ``agentd login`` handed to the daemon) the new login is used
    from the next call on, and when it was removed (``agentd logout``) there is none. A
    login without a refresh token serves until its access token really expires; then
    :class:`AuthError` (``grant`` ``login_expired``) says to run ``agentd login``.
    """

    def __init__(self, store: TokenStore, renew: Callable[[StoredLogin | None], Awaitable[AccessToken]], *, can_renew_without_login: bool = False) -> None:
        super().__init__(self._renew, description="agentd login")
        self.store = store
        self._renew_with = renew
        self._can_renew_without_login = can_renew_without_login  # [genesys] refresh_token by reference
        self._signature: tuple[int, int, int] | None = None
        self.login: StoredLogin | None = None
        self._reload()

    def _reload(self) -> None:
        self._signature = self.store.signature()
        self.login = self.store.load() if self._signature is not None else None
        login = self.login
        self._token = (
            AccessToken(login.access_token, login.expires_at, "login", login.refresh_token, login.user_id)
            if login is not None and login.access_token
            else None
        )

    def saved(self, login: StoredLogin) -> None:
        """This process wrote ``login`` to the store itself (a rotated refresh token)."""
        self.login = login
        self._signature = self.store.signature()

    def _check_store(self) -> None:
        if self.store.signature() != self._signature:
            self._reload()

    async def token(self) -> AccessToken:
        self._check_store()
        current = self._token
        if current is not None and current.fresh():
            return current
        if current is not None and current.fresh(0) and not self._renewable():
            return current  # nothing to renew it with: use it to the last second
        return await self.refresh(stale=current)

    async def refresh(self, *, stale: AccessToken | None = None) -> AccessToken:
        self._check_store()
        return await super().refresh(stale=stale)

    def _renewable(self) -> bool:
        return self._can_renew_without_login or bool(self.login and self.login.refresh_token)

    async def _renew(self) -> AccessToken:
        login = self.login
        if not self._renewable():
            if login is None:
                raise AuthError("no agentd login: run `agentd login` as the agent", grant=LOGIN_EXPIRED_GRANT)
            if login.expired(time.time() + EXPIRY_SLACK_S):  # refused a moment before our clock says: expired all the same
                raise AuthError(login.expired_message(), grant=LOGIN_EXPIRED_GRANT)
            # not expired by the clock, yet refused (401): revoked or logged out elsewhere
            raise AuthError(
                f"Genesys Cloud refused the login of {login.who()} (revoked or logged out) and it cannot be renewed: run `agentd login`",
                grant=LOGIN_EXPIRED_GRANT,
            )
        return await self._renew_with(login)
