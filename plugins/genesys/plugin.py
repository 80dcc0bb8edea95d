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
import sys
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
            sources.WebRtcDiagnosticsSource(settings),
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


async def _login(args: argparse.Namespace, app: Any) -> int:
    from .login import login

    settings = _settings(app.config)
    opener = (lambda url: None) if args.no_browser else None
    result = await login(settings, open_url=opener, port=args.port, timeout_s=args.timeout, announce=lambda text: print(text, file=sys.stderr, flush=True))
    who = f"{result.user_name} ({result.user_id})" if result.user_id else "an unknown user"
    print(f"logged in to Genesys Cloud as {who}; refresh token stored in {result.token_path}")
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
            raise UsageError(no_credentials_message(settings))
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


@hookimpl
def agentd_daemon_stop(daemon: Any) -> Any:
    """Close the daemon's API connections (the shared client of its loop)."""
    from .client import close_shared

    return close_shared()


@hookimpl
def agentd_commands() -> list[Command]:
    return [
        Command(
            name="login",
            help="log in as the agent (OAuth authorization code with PKCE) and store the refresh token",
            description=(
                "Opens the Genesys Cloud login in the system browser (or prints the address), receives the answer on a "
                "loopback redirect, and stores the refresh token readable by this user only. Needs [genesys] client_id "
                "of a Code Authorization (PKCE) OAuth client whose redirect URI is http://127.0.0.1:PORT/oauth/callback."
            ),
            add_arguments=_login_arguments,
            run=_login,
        ),
        Command(
            name="archive",
            help="store the evidence of calls below a MOS threshold before Genesys purges it",
            description=(
                "Finds the voice calls of the interval whose minimum MOS is below the threshold and stores every evidence "
                "item of each in a local SQLite archive in the state directory. A call is stored once; an interrupted run "
                "is resumed by the next. Exit 0 when every call found is archived, 1 when some could not be read."
            ),
            add_arguments=_archive_arguments,
            run=_archive,
        ),
    ]


__all__ = ["agentd_collect_evidence", "agentd_commands", "stored_user_id"]
