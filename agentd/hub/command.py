"""``agentd hub ...``: the hub's server and admin commands (entry point ``hub-server``).

This module is loaded with every ``agentd`` command (to add its sub-parser), so it
imports only the standard library and the core; the server's dependencies (the
``agentd[hub]`` extra) are imported when a hub action runs.

    agentd hub serve [--listen HOST:PORT] [--database URL]
    agentd hub migrate [--database URL]
    agentd hub enroll-key create [--note TEXT] | list | revoke ID
    agentd hub user add NAME --password-stdin | list | remove NAME
    agentd hub pc list | revoke INSTALL_ID | remove INSTALL_ID | allow-reenroll INSTALL_ID
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

from dataclasses import dataclass, field

from agentd import hookimpl
from agentd.commands import Command
from agentd.config import ConfigSection, Secret
from agentd.errors import UsageError

if TYPE_CHECKING:
    from agentd.app import App

DEFAULT_LISTEN = "127.0.0.1:8750"


def _arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="hub_action", metavar="ACTION", parser_class=type(parser))

    def with_db(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--database", metavar="URL", help="sqlite:///PATH or postgresql://USER@HOST/DB (default: $AGENTD_HUB_DATABASE, else SQLite in the hub's state folder)")
        sub.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="configuration file")
        sub.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default=argparse.SUPPRESS, help="log level")
        sub.add_argument("--disable-plugin", metavar="NAME", action="append", default=argparse.SUPPRESS, help="do not load this plugin")
        return sub

    serve = with_db(actions.add_parser("serve", help="run the hub (migrates the database first)"))
    serve.add_argument("--listen", metavar="HOST:PORT", default=os.environ.get("AGENTD_HUB_LISTEN", DEFAULT_LISTEN), help=f"where to listen (default {DEFAULT_LISTEN})")
    serve.add_argument("--max-report-kb", type=int, default=2048, help="largest report accepted (default 2048 KiB)")
    serve.add_argument("--site-window-min", type=float, default=30.0, help="fleet correlation window in minutes (default 30)")
    serve.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate chain (PEM)")
    serve.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    serve.add_argument("--presence-s", type=float, default=20.0, metavar="SECONDS",
                       help="how often this process marks its PCs present; a PC of a process silent for 3 rounds (it crashed) is shown not connected (default 20)")
    with_db(actions.add_parser("migrate", help="create or upgrade the hub's database schema"))

    keys = actions.add_parser("enroll-key", help="fleet enrollment keys: create, list, revoke")
    key_actions = keys.add_subparsers(dest="key_action", metavar="ACTION", parser_class=type(parser))
    create = with_db(key_actions.add_parser("create", help="make a fleet enrollment key and print it (shown once)"))
    create.add_argument("--note", default="", help="what the key is for (shown by list)")
    with_db(key_actions.add_parser("list", help="the keys (never their secret)")).add_argument("--json", action="store_true")
    with_db(key_actions.add_parser("revoke", help="refuse the key from now on (enrolled PCs keep their tokens)")).add_argument("key_id", metavar="ID")

    users = actions.add_parser("user", help="hub accounts for helpdesk: add, list, remove")
    user_actions = users.add_subparsers(dest="user_action", metavar="ACTION", parser_class=type(parser))
    add = with_db(user_actions.add_parser("add", help="add an account; the password is read from stdin"))
    add.add_argument("name", metavar="NAME")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin (the only way: never on the command line)")
    with_db(user_actions.add_parser("list", help="the accounts")).add_argument("--json", action="store_true")
    with_db(user_actions.add_parser("remove", help="remove an account and end its sessions")).add_argument("name", metavar="NAME")

    pcs = actions.add_parser("pc", help="enrolled PCs: list, revoke, remove, allow-reenroll")
    pc_actions = pcs.add_subparsers(dest="pc_action", metavar="ACTION", parser_class=type(parser))
    with_db(pc_actions.add_parser("list", help="enrolled PCs")).add_argument("--json", action="store_true")
    with_db(pc_actions.add_parser("revoke", help="refuse this PC's install token at once")).add_argument("install_id", metavar="INSTALL_ID")
    with_db(pc_actions.add_parser("remove", help="forget a PC (it may enroll again)")).add_argument("install_id", metavar="INSTALL_ID")
    allow = with_db(pc_actions.add_parser("allow-reenroll", help="let a PC that lost its install token enroll again with the fleet key alone (once, within --minutes)"))
    allow.add_argument("install_id", metavar="INSTALL_ID")
    allow.add_argument("--minutes", type=float, default=60.0, help="how long the PC may do so (default 60)")


@dataclass(frozen=True)
class AlertRuleSettings:
    """``[[alerts.rules]]``: one condition on the fleet and how long it must hold."""

    kind: str = field(metadata={"help": "site_outage (a network.site_outage verdict), site_not_ready (many PCs of one site not ready) or pc_not_ready (a PC's pre-shift check says not ready)"})
    windows: int = field(default=1, metadata={"help": "fire when the condition held in this many ...", "min": 1, "max": 100})
    of_last: int = field(default=1, metadata={"help": "... of the last this many windows", "min": 1, "max": 100})
    min_pcs: int = field(default=3, metadata={"help": "at least this many PCs affected", "min": 1})
    min_share: float = field(default=0.0, metadata={"help": "and at least this share of the site's PCs (0-1)", "min": 0.0, "max": 1.0})


@dataclass(frozen=True)
class AlertSettings:
    """``[alerts]`` on the hub server: where alerts go (apprise URLs) and when."""

    urls: tuple[Secret, ...] = field(metadata={"help": "apprise URLs: json://host/path (webhook), mailtos://user:pass@host?to=..., slack://..., msteams://...; secret references when they carry a token"})
    rules: tuple[AlertRuleSettings, ...] = field(default=(AlertRuleSettings("site_outage"),), metadata={"help": "the conditions ([[alerts.rules]])"})
    window_s: float = field(default=300.0, metadata={"help": "how often the rules are judged (one window)", "min": 0.1, "max": 86400})
    suppress_s: float = field(default=3600.0, metadata={"help": "the same alert not again within this", "min": 0.0})
    notify_clear: bool = field(default=True, metadata={"help": "send a message when the condition clears"})
    quiet_hours: str | None = field(default=None, metadata={"help": "HH:MM-HH:MM (UTC) in which nothing is sent; what still holds is sent after"})


def alert_config(settings: AlertSettings | None) -> Any:
    """``[alerts]`` as the hub's AlertConfig; UsageError names a bad rule or quiet_hours."""
    if settings is None:
        return None
    from agentd.hub.alerts import KINDS, AlertConfig, Rule, parse_quiet_hours

    for i, rule in enumerate(settings.rules):
        if rule.kind not in KINDS:
            raise UsageError(f"[alerts] rules[{i}].kind must be one of {', '.join(KINDS)}, not {rule.kind!r}")
        if rule.windows > rule.of_last:
            raise UsageError(f"[alerts] rules[{i}]: windows ({rule.windows}) cannot exceed of_last ({rule.of_last})")
    if not settings.urls:
        raise UsageError("[alerts] urls is empty: name at least one receiver (an apprise URL)")
    try:
        quiet = parse_quiet_hours(settings.quiet_hours)
    except ValueError as exc:
        raise UsageError(f"[alerts] {exc}") from None
    rules = tuple(Rule(r.kind, r.windows, r.of_last, r.min_pcs, r.min_share) for r in settings.rules)
    return AlertConfig(urls=tuple(u.reveal() for u in settings.urls), rules=rules, window_s=settings.window_s,
                       suppress_s=settings.suppress_s, notify_clear=settings.notify_clear, quiet_hours=quiet)


@hookimpl
def agentd_config_sections():
    return [ConfigSection("alerts", AlertSettings, "the hub server's alerts: receivers (apprise URLs) and rules", optional=True)]


def _hub_modules() -> None:
    try:
        import argon2  # noqa: F401
        import sqlalchemy  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"the hub needs its extra dependencies ({exc.name} is missing): pip install 'agentd[hub]'") from None


def _run(args: argparse.Namespace, app: App) -> Any:
    action = getattr(args, "hub_action", None)
    if action is None:
        raise UsageError("agentd hub: choose an action: serve, migrate, enroll-key, user, pc (see --help)")
    _hub_modules()
    from agentd.hub import db

    url = db.resolve_url(getattr(args, "database", None))
    if action == "serve":
        return _serve(args, url, app)
    return _admin(args, action, url)


def _serve(args: argparse.Namespace, url: str, app: App | None = None) -> int:
    from agentd.hub.server import serve

    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--listen must be HOST:PORT, got {args.listen!r}")
    from agentd.hub.db import credential

    if not args.tls_cert and not args.tls_key:  # systemd credentials hub-tls-cert / hub-tls-key
        cert, key = credential("hub-tls-cert"), credential("hub-tls-key")
        if cert and key:
            args.tls_cert, args.tls_key = str(cert), str(key)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    if not 0.2 <= args.presence_s <= 3600:
        raise UsageError(f"--presence-s must be between 0.2 and 3600 seconds, got {args.presence_s:g}")
    from agentd.hub.fleet import parse_sites

    section = None  # [hub] url (links in alerts) and sites, when the hub plugin is loaded and the section given
    if app is not None and "hub" in app.config.sections:
        section = app.config.sections["hub"]
    try:
        sites = parse_sites(getattr(section, "sites", None))
    except ValueError as exc:
        raise UsageError(f"{app.config.path or 'configuration'}: {exc}") from None
    alerts = alert_config(app.config.sections.get("alerts") if app is not None else None)
    public_url = getattr(section, "url", None) or f"{'https' if args.tls_cert else 'http'}://{args.listen}"
    return serve(url, host.strip("[]"), int(port), max_report_bytes=args.max_report_kb * 1024,
                 site_window_s=args.site_window_min * 60, tls_cert=args.tls_cert, tls_key=args.tls_key,
                 sites=sites, public_url=public_url, alerts=alerts, presence_s=args.presence_s)


def _stamp(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _admin(args: argparse.Namespace, action: str, url: str) -> int:
    from agentd.hub.migrate import upgrade
    from agentd.hub.db import make_engine, redact_url
    from agentd.hub.store import HubInputError, Store

    async def go() -> int:
        engine = make_engine(url)
        try:
            await upgrade(engine)
            store = Store(engine)
            if action == "migrate":
                print(f"hub database {redact_url(url)} is at the newest schema")
                return 0
            if action == "enroll-key":
                return await _keys(args, store)
            if action == "user":
                return await _users(args, store)
            return await _pcs(args, store)
        except HubInputError as exc:
            raise UsageError(f"agentd hub {action}: {exc}") from None
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _listing(args: argparse.Namespace, rows: list[dict], line: Callable[[dict], str]) -> int:
    """Print rows as JSON with --json, else one line each."""
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(line(row))
    return 0


def _outcome(done: bool, said: str, missing: str) -> int:
    """A change to one named thing: 0 and what was done, or 1 and what was not found."""
    if done:
        print(said)
        return 0
    print(f"agentd: {missing}", file=sys.stderr)
    return 1


def _key_state(key: dict) -> str:
    return f"revoked {_stamp(key['revoked'])}" if key["revoked"] else "active"


def _pc_state(pc: dict) -> str:
    return "revoked" if pc["revoked"] else ("connected" if pc["connected_node"] else "offline")


async def _keys(args: argparse.Namespace, store: Any) -> int:
    what = getattr(args, "key_action", None)
    if what == "create":
        issued = await store.create_enroll_key(args.note)
        print(issued.text)
        print(f"key id {issued.id}: give the key to PCs as [hub] enrollment_key (a secret reference); it is not shown again", file=sys.stderr)
        return 0
    if what == "list":
        return _listing(args, await store.list_enroll_keys(), lambda k: (
            f"{k['id']}  {_key_state(k):32}  used {k['uses']:5}  created {_stamp(k['created'])}  {k['note']}"))
    if what == "revoke":
        return _outcome(await store.revoke_enroll_key(args.key_id), f"enrollment key {args.key_id} revoked",
                        f"no active enrollment key {args.key_id}")
    raise UsageError("agentd hub enroll-key: choose create, list or revoke")


async def _users(args: argparse.Namespace, store: Any) -> int:
    what = getattr(args, "user_action", None)
    if what == "add":
        if not args.password_stdin:
            raise UsageError("agentd hub user add: give the password on stdin with --password-stdin (never as an argument)")
        password = sys.stdin.readline().rstrip("\r\n")
        await store.add_user(args.name, password)
        print(f"user {args.name} added")
        return 0
    if what == "list":
        return _listing(args, await store.list_users(), lambda u: f"{u['name']}  created {_stamp(u['created'])}")
    if what == "remove":
        return _outcome(await store.remove_user(args.name), f"user {args.name} removed", f"no user {args.name}")
    raise UsageError("agentd hub user: choose add, list or remove")


async def _pcs(args: argparse.Namespace, store: Any) -> int:
    what = getattr(args, "pc_action", None)
    if what == "list":
        return _listing(args, await store.list_pcs(), lambda p: (
            f"{p['install_id']}  {p['hostname']:24}  {_pc_state(p):9}  last seen {_stamp(p['last_seen'])}"))
    if what in ("revoke", "remove"):
        done = await (store.revoke_pc if what == "revoke" else store.remove_pc)(args.install_id)
        return _outcome(done, f"PC {args.install_id} {what}d", f"no {'active ' if what == 'revoke' else ''}PC {args.install_id}")
    if what == "allow-reenroll":
        if not 0 < args.minutes <= 7 * 24 * 60:
            raise UsageError(f"--minutes must be between 0 and 10080, got {args.minutes:g}")
        done = await store.allow_reenroll(args.install_id, args.minutes * 60)
        return _outcome(done, f"PC {args.install_id} may enroll again with the fleet key within {args.minutes:g} min (once); its current token keeps working until it does",
                        f"no active PC {args.install_id} (a revoked PC must be removed instead)")
    raise UsageError("agentd hub pc: choose list, revoke, remove or allow-reenroll")


@hookimpl
def agentd_commands() -> list[Command]:
    return [
        Command(
            name="hub",
            help="the helpdesk hub: serve, migrate, enroll-key, user, pc",
            description=(
                "The helpdesk hub: every PC's readiness on one web page, and a check on any PC from there. "
                "Needs pip install 'agentd[hub]'."
            ),
            add_arguments=_arguments,
            run=_run,
        )
    ]
