"""OAuth tokens for the Genesys Cloud API: where they come from and where they are kept.

Two grants (DESIGN.md):
- client credentials (HTTP Basic with ``client_id``/``client_secret``) for
  organisation-wide reads;
- authorization code with PKCE for the agent's own identity (``agentd login``), whose
  refresh token is stored in the state directory with owner-only permissions, or read
  from ``[genesys] refresh_token`` (a systemd credential, for example).

:class:`TokenManager` hands out a valid access token and refreshes it shortly before it
expires; concurrent callers wait for the one refresh in flight instead of starting their
own. Token values never appear in logs or exceptions: every one is registered with
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


@dataclass(frozen=True)
class StoredLogin:
    """What ``agentd login`` keeps: the refresh token and who logged in."""

    refresh_token: str
    client_id: str
    login_base: str
    user_id: str | None = None
    user_name: str | None = None
    access_token: str | None = None
    expires_at: float = 0.0

    def __repr__(self) -> str:
        return f"StoredLogin(client_id={self.client_id!r}, user_id={self.user_id!r})"


class TokenStore:
    """The refresh token of ``agentd login`` in a JSON file readable by the owner only."""

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
        if not isinstance(raw, dict) or not isinstance(raw.get("refresh_token"), str):
            log.warning("the stored Genesys login has no refresh token; run `agentd login` again", path=str(self.path))
            return None
        for key in ("refresh_token", "access_token"):
            if raw.get(key):
                register_secret(raw[key])
        return StoredLogin(
            refresh_token=raw["refresh_token"],
            client_id=str(raw.get("client_id") or ""),
            login_base=str(raw.get("login_base") or ""),
            user_id=raw.get("user_id"),
            user_name=raw.get("user_name"),
            access_token=raw.get("access_token"),
            expires_at=float(raw.get("expires_at") or 0.0),
        )

    def save(self, login: StoredLogin) -> None:
        register_secret(login.refresh_token)
        data = {
            "refresh_token": login.refresh_token,
            "client_id": login.client_id,
            "login_base": login.login_base,
            "user_id": login.user_id,
            "user_name": login.user_name,
            "access_token": login.access_token,
            "expires_at": login.expires_at,
        }
        write_private(self.path, json.dumps(data, indent=2) + "\n")

    def exists(self) -> bool:
        return self.path.is_file()


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

    def __init__(self, fetch: Fetch, *, initial: AccessToken | None = None, description: str = "") -> None:
        self._fetch = fetch
        self._token = initial
        self._refreshing: asyncio.Future[AccessToken] | None = None
        self.description = description
        self.refreshes = 0

    async def token(self) -> AccessToken:
        current = self._token
        if current is not None and current.fresh():
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
