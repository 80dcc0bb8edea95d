"""The agent's login inside the daemon: handed over by ``agentd login``, one agent at a time.

On a fleet the daemon runs as its own system user (``User=agentd``, state in
``/var/lib/agentd``) while ``agentd login`` runs as the agent. The login command stores
the login in the agent's own state folder and hands a copy to the running daemon over
the control socket (op ``login``; any account the socket lets in, which is the group
``agentd`` under the packaged unit). The daemon:

- checks it with Genesys Cloud (``GET /api/v2/users/me`` with its access token: the
  daemon names the user Genesys names, not the one the sender claims);
- keeps it owner-only in its own token store (``[genesys] token_file``, by default its
  state folder), where ``user_token_manager`` / ``stored_user_id`` find it: the
  notifications monitor, scheduled pre-shifts and discovery use it from the next call on;
- holds one login: the latest replaces the one before (a shared PC sees several agents a
  day). ``agentd logout`` (op ``logout``) clears it, when sent by the account that
  handed it over, root, or the daemon's own user; the softphone's ICE servers cached for
  that agent (their TURN credentials) go with it, and with a login of another agent;
- says whose login it holds and until when in ``agentd status``; a login without a
  refresh token runs out at its expiry, which the daemon logs once per expiry and shows
  in the status, asking for ``agentd login``.

No token ever leaves this module in an answer, a status or a log line.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace
from typing import Any

import structlog

from agentd.errors import AuthError, GenesysError

from .client import GenesysClient
from .settings import GenesysSettings
from .tokens import AccessToken, StoredLogin, TokenManager, TokenStore, login_from_dict

log = structlog.get_logger("agentd.genesys.login")

SERVICE = "genesys"


def _own_uid() -> int | None:
    """The daemon's uid (None on Windows, where accounts are names)."""
    geteuid = getattr(os, "geteuid", None)
    return geteuid() if geteuid else None
CHECK_TIMEOUT_S = 15.0


def _forget_ice_servers() -> None:
    from .softphone import forget_cached

    forget_cached()


class HeldLogin:
    """One daemon's view of the login it holds (one per daemon; see ``plugin.py``)."""

    def __init__(self, settings: GenesysSettings) -> None:
        self.settings = settings
        self.changed = asyncio.Event()
        self.noted_expiry: tuple[str | None, float] | None = None

    @property
    def store(self) -> TokenStore:
        return TokenStore(self.settings.token_path)

    # -- receiving and clearing ---------------------------------------------------------

    async def receive(self, payload: dict[str, Any], peer: dict[str, Any]) -> dict[str, Any]:
        login = login_from_dict(payload)
        if login is None or not login.access_token:
            return {"ok": False, "error": "the login holds no access token"}
        if login.expired():
            return {"ok": False, "error": f"this login already expired at {login.expiry_text()}: run `agentd login` again"}
        if login.login_base and login.login_base.rstrip("/") != self.settings.login_base:
            return {"ok": False, "error": f"this login is for {login.login_base}; the daemon's [genesys] uses {self.settings.login_base}"}
        if self.settings.client_id and login.client_id and login.client_id != self.settings.client_id:
            return {"ok": False, "error": f"this login is of OAuth client {login.client_id}; the daemon's [genesys] client_id is {self.settings.client_id}"}
        user_id, user_name, checked = await self._identify(login)
        account = peer.get("user") or (f"uid {peer['uid']}" if peer.get("uid") is not None else None)
        held = replace(
            login,
            user_id=user_id,
            user_name=user_name,
            account=account,
            client_id=login.client_id or (self.settings.client_id or ""),
            login_base=self.settings.login_base,
            logged_in_at=time.time(),
        )
        before = self.store.load()
        self.store.save(held)
        if before is not None and before.user_id != held.user_id:
            _forget_ice_servers()  # the agent before's TURN credentials are not the new agent's
        self.noted_expiry = None
        self.changed.set()
        log.info(
            "Genesys login received",
            user=held.who(),
            account=account,
            expires=held.expiry_text(),
            refreshable=held.refreshable,
            checked=checked,
            replaced=before.who() if before is not None and before.user_id != held.user_id else None,
        )
        return {"ok": True, "changed": True, "login": held.public(), "stored": str(self.store.path), "daemon_uid": _own_uid()}

    async def _identify(self, login: StoredLogin) -> tuple[str | None, str | None, bool]:
        """Who Genesys says the token belongs to. A refused token is refused here too; an
        unreachable API keeps what the sender said (the login itself just worked)."""
        token = AccessToken(login.access_token or "", login.expires_at, "login", None, login.user_id)

        async def none() -> AccessToken:
            raise AuthError("the login handed over was refused by Genesys Cloud (401): run `agentd login` again")

        client = GenesysClient(self.settings, tokens=TokenManager(none, initial=token, margin_s=0.0))
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                me = await client.get("/api/v2/users/me")
        except AuthError:
            raise
        except (GenesysError, TimeoutError) as exc:
            log.warning("the login handed over could not be checked with Genesys Cloud; kept as sent", error=str(exc) or type(exc).__name__)
            return login.user_id, login.user_name, False
        finally:
            await client.aclose()
        if isinstance(me, dict) and isinstance(me.get("id"), str):
            return me["id"], me.get("name") if isinstance(me.get("name"), str) else None, True
        return login.user_id, login.user_name, False

    def clear(self, peer: dict[str, Any]) -> dict[str, Any]:
        current = self.store.load()
        if current is None:
            removed = self.store.clear()  # an unreadable leftover goes too
            return {"ok": True, "changed": removed, "note": "the daemon held no Genesys login"}
        uid = peer.get("uid")
        privileged = uid is not None and uid in (0, _own_uid())
        if not privileged and (current.account is None or peer.get("user") != current.account):
            return {
                "ok": False,
                "error": f"the daemon holds the login of {current.who()} from account {current.account}; only that account "
                "(or root) can log it out; a new `agentd login` replaces it",
            }
        self.store.clear()
        _forget_ice_servers()  # the softphone's TURN credentials were this agent's: they go with the login
        self.noted_expiry = None
        self.changed.set()
        log.info("Genesys login cleared", user=current.who(), account=peer.get("user"))
        return {"ok": True, "changed": True, "cleared": current.public()}

    # -- what the daemon says about it ---------------------------------------------------

    def status(self) -> dict[str, Any]:
        login = self.store.load()
        if login is None:
            how = "client credentials are used instead" if self.settings.has_client_credentials and self.settings.auth != "login" else "run `agentd login` as the agent"
            return {"held": False, "summary": f"none ({how})"}
        view = login.public()
        who = login.who() + (f", handed over by account {login.account}" if login.account else "")
        if login.expired():
            summary = f"{who}: EXPIRED at {login.expiry_text()}; run `agentd login`"
            view["message"] = login.expired_message()
        elif login.refreshable:
            summary = f"{who}: access token until {login.expiry_text()}, renewed with its refresh token"
        else:
            summary = f"{who}: until {login.expiry_text()} (no refresh token: `agentd login` again then)"
        return {"held": True, **view, "summary": summary}

    async def watch(self) -> None:
        """Log once per expiry when the held login runs out with no refresh token."""
        while True:
            self.changed.clear()
            login = self.store.load()
            wait: float | None = None
            if login is not None and not login.refreshable and login.access_token:
                left = login.expires_at - time.time()
                if left <= 0:
                    key = (login.user_id, login.expires_at)
                    if self.noted_expiry != key:
                        self.noted_expiry = key
                        log.warning("Genesys login expired: run `agentd login`", user=login.who(), expired=login.expiry_text(), account=login.account)
                else:
                    wait = left + 0.05
            try:
                async with asyncio.timeout(wait):
                    await self.changed.wait()
            except TimeoutError:
                pass
