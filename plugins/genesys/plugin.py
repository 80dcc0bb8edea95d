"""The Genesys Cloud plugin: evidence sources, ``agentd login`` and ``agentd archive``.

Which sources run:
- incident mode (``agentd diagnose ID``): conversation, call quality, WebRTC diagnostics,
  browser log, session fragmentation, station and phone, integrations (when
  ``[genesys] integration_ids``), dropped calls (the agent or ``queue_ids``);
- ``full`` checks: station and phone, integrations, dropped calls, and keeping browser log
  capture on when ``[genesys] log_capture_hours`` > 0.

Without credentials (client credentials or an ``agentd login``) there is nothing to ask:
``full`` runs simply get no Genesys evidence, and ``diagnose`` stops with one line
(exit 2), unless a ``--diagnostics-file`` alone is to be read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from agentd import hookimpl
from agentd.commands import Command
from agentd.errors import GenesysError, UsageError
from agentd.evidence import EvidenceRequest

from . import sources
from .client import GenesysClient, has_credentials, no_credentials_message, stored_user_id
from .settings import GenesysSettings


def _settings(config: Any) -> GenesysSettings:
    return config.section("genesys")


@hookimpl
def agentd_collect_evidence(request: EvidenceRequest) -> list[Any]:
    settings = _settings(request.config)
    if not has_credentials(settings):
        if request.profile != "incident":
            return []
        if request.options.get("diagnostics_file"):
            return [sources.WebRtcDiagnosticsSource(settings, use_api=False)]
        raise UsageError(no_credentials_message(settings))
    found: list[Any] = []
    if request.conversation_id:
        found += [
            sources.ConversationSource(settings),
            sources.CallQualitySource(settings),
            sources.WebRtcDiagnosticsSource(settings, use_api=settings.webrtc_diagnostics_api),
            sources.BrowserLogSource(settings),
            sources.SessionFragmentationSource(settings),
            sources.StationSource(settings),
        ]
    elif request.profile == "full":
        found.append(sources.StationSource(settings))
        if settings.log_capture_hours > 0:
            found.append(sources.LogCaptureKeeper(settings))
    if request.options.get("archive"):
        return found  # per-call evidence only; the organisation-wide figures are not per call
    if settings.integration_ids:
        found.append(sources.IntegrationSource(settings))
    if request.conversation_id or request.profile == "full":
        found.append(sources.DroppedCallsSource(settings))
    return found


# -- agentd login ------------------------------------------------------------------------


def _login_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-browser", action="store_true", help="only print the login address (for a browser elsewhere on this PC)")
    parser.add_argument("--port", type=int, metavar="PORT", help="loopback port of the redirect (default [genesys] redirect_port; 0 = any free port)")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS", help="give up waiting for the browser after this long (default 300)")
    parser.add_argument("--no-daemon", action="store_true", help="keep the login for this account only; do not hand it to a running daemon")


async def _login(args: argparse.Namespace, app: Any) -> int:
    from agentd.tls import check_trust_store

    from .login import login

    settings = _settings(app.config)
    check_trust_store()  # an unusable SSL_CERT_FILE: said now (exit 2), not after the agent has logged in
    opener = (lambda url: None) if args.no_browser else None
    result = await login(settings, open_url=opener, port=args.port, timeout_s=args.timeout, announce=lambda text: print(text, file=sys.stderr, flush=True))
    who = f"{result.user_name} ({result.user_id})" if result.user_id else "an unknown user"
    stored = result.login
    lasts = "renewed with its refresh token" if stored and stored.refreshable else f"until {stored.expiry_text() if stored else '?'} (no refresh token)"
    print(f"logged in to Genesys Cloud as {who}, {lasts}; stored in {result.token_path}")
    if args.no_daemon or stored is None:
        return 0
    return await _hand_to_daemon(settings, stored, Path(result.token_path))


async def _hand_to_daemon(settings: GenesysSettings, stored: Any, own_path: Path) -> int:
    """Give the login to a running daemon (it may run as another user, with its own state
    folder). Exit 1 when a daemon runs but did not take it; 0 when none runs."""
    from agentd.control import ControlClient
    from agentd.errors import ControlError

    from .tokens import TokenStore, login_to_dict

    control = ControlClient()
    if not control.present():
        print("no agentd daemon is running here: only this account's own commands use the login", file=sys.stderr)
        return 0
    try:
        answer = await control.request({"op": "login", "service": "genesys", "login": login_to_dict(stored)}, timeout_s=45.0)
    except ControlError as exc:
        print(f"agentd login: the agentd daemon did not take the login: {exc}", file=sys.stderr)
        return 1
    if not answer.get("ok"):
        print(f"agentd login: the agentd daemon refused the login: {answer.get('error')}", file=sys.stderr)
        return 1
    held = answer.get("login") or {}
    print(f"the agentd daemon now uses this login (as {held.get('user_name') or held.get('user_id')}, until {held.get('expires')})")
    daemon_path = answer.get("stored")
    if stored.refresh_token and daemon_path and not _same_file(daemon_path, own_path):
        # one refresher per refresh token: a rotation by one copy would break the other
        TokenStore(own_path).save(replace(stored, refresh_token=None))
    return 0


def _same_file(a: str, b: Path) -> bool:
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except OSError:
        return False


def _logout_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-daemon", action="store_true", help="forget only this account's own login; leave the daemon's as it is")


async def _logout(args: argparse.Namespace, app: Any) -> int:
    """Forget this account's login, and the daemon's copy (when this account handed it over)."""
    from agentd.control import ControlClient
    from agentd.errors import ControlError

    from .tokens import TokenStore

    settings = _settings(app.config)
    store = TokenStore(settings.token_path)
    own = store.load()
    removed = store.clear()
    from .softphone import forget_cached

    forget_cached()  # the softphone's ICE servers fetched with this login (TURN credentials)
    print(f"logged out: {own.who() if own else 'the login'} removed from {store.path}" if removed else f"no login stored in {store.path}")
    control = ControlClient()
    if args.no_daemon or not control.present():
        return 0
    try:
        answer = await control.request({"op": "logout", "service": "genesys"}, timeout_s=15.0)
    except ControlError as exc:
        print(f"agentd logout: the agentd daemon did not answer: {exc}", file=sys.stderr)
        return 1
    if not answer.get("ok"):
        print(f"agentd logout: the agentd daemon kept its login: {answer.get('error')}", file=sys.stderr)
        return 1
    cleared = answer.get("cleared")
    if cleared:
        print(f"the agentd daemon no longer holds the login of {cleared.get('user_name') or cleared.get('user_id')}")
    else:
        print("the agentd daemon held no Genesys login")
    return 0


# -- agentd archive ----------------------------------------------------------------------


def _archive_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", default="24h", metavar="DURATION", help="how far back to look: 24h, 7d, 90m (default 24h)")
    parser.add_argument("--mos-below", type=float, default=3.5, metavar="MOS", help="archive calls whose minimum MOS is below this (default 3.5, Genesys' 'unacceptable')")
    parser.add_argument("--limit", type=int, metavar="N", help="archive at most N new calls in this run (the rest next time)")
    parser.add_argument("--list", action="store_true", help="print the archived calls instead of fetching")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


async def _archive(args: argparse.Namespace, app: Any) -> int:
    from .archive import Archive, parse_duration, run_archive

    settings = _settings(app.config)
    archive = Archive()
    try:
        if args.list:
            calls = archive.calls()
            if args.json:
                print(json.dumps(calls, indent=2))
            else:
                for call in calls:
                    print(f"{call['conversationId']}  {call['conversationStart']}  MOS {call['minMos']}  archived {call['archivedAt']}  {len(call['evidence'])} item(s)")
                print(f"{len(calls)} call(s) in {archive.path}")
            return 0
        since = parse_duration(args.since)
        if not 0.0 < args.mos_below <= 5.0:
            raise UsageError("--mos-below must be between 0 and 5")
        if not has_credentials(settings):
            # nothing to archive on a PC that does not use the API: not a failure (the
            # nightly timer runs on every PC of a fleet); the line says why, in the journal
            print(f"agentd archive: nothing to do: {no_credentials_message(settings)}", file=sys.stderr)
            return 0
        async with GenesysClient(settings) as client:
            try:
                result = await run_archive(
                    app, client, archive, since=since, mos_below=args.mos_below, limit=args.limit,
                    user_id=settings.user_id, queue_ids=tuple(settings.queue_ids),
                )
            except GenesysError as exc:
                print(f"agentd archive: {exc}", file=sys.stderr)
                return 1
            finally:
                from .client import close_shared

                await close_shared()
        if args.json:
            print(json.dumps(result.__dict__ | {"failed_ids": list(result.failed_ids), "archive": str(archive.path)}, indent=2))
        else:
            print(
                f"{result.found} call(s) below MOS {args.mos_below:g} in {result.interval}: {result.stored} stored, "
                f"{result.already} already archived, {result.failed} failed (tried again next run); archive {archive.path}"
            )
        return 1 if result.failed else 0
    finally:
        archive.close()


# -- the daemon: the login an agent hands over (held_login.py) ---------------------------

HELD_LOGIN = "genesys.login"
"""The daemon's plugin_state key of its HeldLogin (one agent's login at a time)."""


def _held(daemon: Any) -> Any:
    from .held_login import HeldLogin

    held = daemon.plugin_state.get(HELD_LOGIN)
    settings = _settings(daemon.app.config)
    if held is None:
        held = daemon.plugin_state[HELD_LOGIN] = HeldLogin(settings)
    held.settings = settings  # a reload may change [genesys]
    return held


@hookimpl
def agentd_daemon_start(daemon: Any) -> None:
    held = _held(daemon)
    spawn = getattr(daemon, "spawn", None)
    if callable(spawn):
        spawn(held.watch(), name="genesys.login")
    return None


@hookimpl
def agentd_daemon_login(daemon: Any, service: str, login: Any, peer: dict) -> Any:
    if service != "genesys":
        return None
    held = _held(daemon)
    if login is None:

        async def clear() -> dict:
            return held.clear(peer)

        return clear()
    return held.receive(login, peer)


@hookimpl
def agentd_daemon_status(daemon: Any) -> dict:
    return {"logins": {"genesys": _held(daemon).status()}}


@hookimpl
def agentd_unconfigured(config: Any) -> list[str]:
    settings = _settings(config)
    if has_credentials(settings):
        return []
    return ["Genesys Cloud credentials: none, so no evidence from the API and no nightly archive; "
            "set [genesys] client_id and client_secret (or run `agentd login`)"]


@hookimpl
def agentd_daemon_stop(daemon: Any) -> Any:
    """Close the daemon's API connections (the shared client of its loop)."""
    from .client import close_shared

    daemon.plugin_state.pop(HELD_LOGIN, None)
    return close_shared()


@hookimpl
def agentd_commands() -> list[Command]:
    return [
        Command(
            name="login",
            help="log in as the agent (OAuth authorization code) and hand the login to the running daemon",
            description=(
                "Opens the Genesys Cloud login in the system browser (or prints the address), receives the answer on a "
                "loopback redirect, stores the login readable by this user only, and hands it to a running agentd daemon "
                "(which holds one agent's login at a time: the latest wins). Needs [genesys] client_id of an OAuth client "
                "whose redirect URI is http://127.0.0.1:PORT/oauth/callback: PKCE, or Code Authorization with "
                "[genesys] login_client_secret (refresh tokens). Exit 1 when a daemon runs but did not take the login."
            ),
            add_arguments=_login_arguments,
            run=_login,
        ),
        Command(
            name="logout",
            help="forget the agent's Genesys login, here and in the running daemon",
            description=(
                "Removes this account's stored login and tells a running daemon to forget the login it holds, when this "
                "account handed it over (root may clear any). Exit 1 when the daemon kept its login or did not answer."
            ),
            add_arguments=_logout_arguments,
            run=_logout,
        ),
        Command(
            name="archive",
            help="store the evidence of calls below a MOS threshold before Genesys purges it",
            description=(
                "Finds the voice calls of the interval whose minimum MOS is below the threshold and stores every evidence "
                "item of each in a local SQLite archive in the state directory. A call is stored once; an interrupted run "
                "is resumed by the next. Exit 0 when every call found is archived (and, with a line saying why, when no "
                "credentials are configured: nothing to do), 1 when some could not be read."
            ),
            add_arguments=_archive_arguments,
            run=_archive,
        ),
    ]


__all__ = ["agentd_collect_evidence", "agentd_commands", "agentd_unconfigured", "stored_user_id"]
