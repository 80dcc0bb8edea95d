"""The ``agentd`` command line.

Exit codes (a contract scripts rely on): 0 ready / done; 1 not ready (a check failed) or
the thing asked about is not there; 2 usage or configuration error, with one message
naming what is wrong; 3 the report was made and printed but could not be kept or
delivered (spool, timeline, --output: a warning on stderr says which; its readiness is
in the report); 4 the daemon failed during the check (no report); 70 an internal error
(a bug: please report it). Output cut short by the reader (``| head``) ends quietly
with 141, as a process killed by SIGPIPE would.
"""

from __future__ import annotations

import argparse
import errno
import gc
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import structlog
from rich.console import Console

from agentd import __version__, aio, logs
from agentd.fileio import write_atomic
from agentd.app import App
from agentd.errors import AgentdError, ConfigError, DaemonFailed, UsageError
from agentd.model import Report
from agentd.redact import redact_text

EXIT_READY = 0
EXIT_NOT_READY = 1
EXIT_USAGE = 2
EXIT_NOT_KEPT = 3
EXIT_DAEMON_FAILED = 4
EXIT_INTERNAL = 70
EXIT_BROKEN_PIPE = 141

log = structlog.get_logger("agentd.cli")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # exit 2 with one line, like every other usage error
        raise UsageError(f"{self.prog}: {message} (see --help)")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="configuration file (default: $AGENTD_CONFIG, then the platform config folder)")
    parser.add_argument(
        "--disable-plugin",
        metavar="NAME",
        action="append",
        default=[],
        help="do not load this plugin (repeatable; see `agentd plugins`)",
    )
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="override [agentd] log_level")


def _delivery_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--html", metavar="FILE", help="also write the single-file HTML report to FILE (opens offline)")
    parser.add_argument("--upload", action="store_true", help="deliver the report: spool it, then every configured sink (pending reports first)")


def build_parser(commands: Sequence[Any] = ()) -> _Parser:
    parser = _Parser(
        prog="agentd",
        description=(
            "Readiness and incident diagnostics for Genesys Cloud WebRTC softphone agents: "
            "measures this PC's path to the media and signaling edge, pulls what Genesys Cloud "
            "recorded about a call, and names the cause with its evidence."
        ),
        epilog=(
            "Exit codes: 0 ready/done, 1 not ready, 2 usage or configuration error, 3 report made but not kept "
            "or delivered, 4 the daemon failed during the check, 70 internal error."
        ),
    )
    parser.add_argument("--version", action="version", version=f"agentd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    check = sub.add_parser(
        "check",
        help="run a readiness check now and print the report",
        description="Run the checks of a profile now and print the report. Exit 0 when ready, 1 when a check failed.",
    )
    check.add_argument("--profile", choices=("preshift", "full"), default="preshift", help="preshift: local probes only, fast (default); full: every check and evidence")
    check.add_argument("--json", action="store_true", help="print only the JSON report on stdout")
    check.add_argument("--output", metavar="FILE", help="also write the JSON report to FILE")
    _delivery_options(check)
    check.add_argument("--only", metavar="CHECK", action="append", default=[], help="run only this check id (repeatable)")
    check.add_argument("--deadline", metavar="SECONDS", type=float, help="overall deadline (default from [agentd])")
    check.add_argument("--no-daemon", action="store_true", help="run in this process even when the daemon runs (default: through the daemon when it answers)")
    _common(check)

    diagnose = sub.add_parser(
        "diagnose",
        help="incident mode: gather the evidence of one conversation and name the cause",
        description="Pull what Genesys Cloud recorded about a conversation, line it up with local history, and name the cause.",
    )
    diagnose.add_argument("conversation_id", metavar="CONVERSATION_ID")
    diagnose.add_argument("--json", action="store_true", help="print only the JSON report on stdout")
    diagnose.add_argument("--output", metavar="FILE", help="also write the JSON report to FILE")
    _delivery_options(diagnose)
    diagnose.add_argument("--diagnostics-file", metavar="FILE", help="a WebRTC diagnostics export (seed format) to read as evidence")
    diagnose.add_argument("--with-checks", action="store_true", help="also run the local checks now")
    _common(diagnose)

    run = sub.add_parser(
        "run",
        help="the daemon, in the foreground (systemd Type=notify)",
        description="Run the service: scheduled pre-shift checks, the control socket, the host timeline. SIGTERM stops, SIGHUP reloads the configuration.",
    )
    _common(run)
    status = sub.add_parser("status", help="the running daemon's state (exit 1 when none runs)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    _common(status)
    reload = sub.add_parser(
        "reload",
        help="the running daemon re-reads its configuration (exit 2 if the new file is rejected: the old one stays)",
        description="Ask the running daemon, through its control socket, to re-read its configuration file (systemctl reload runs this).",
    )
    _common(reload)

    from agentd import winservice

    service = sub.add_parser("service", help="the Windows service: install, uninstall, start, stop, status")
    winservice.add_arguments(service)

    plugins = sub.add_parser("plugins", help="list every plugin: where it came from and its hooks")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    _common(plugins)

    cfg = sub.add_parser("config", help="show the effective configuration (secrets redacted)")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION", parser_class=_Parser)
    show = cfg_sub.add_parser("show", help="print the effective configuration as TOML-like JSON, secrets redacted")
    _common(show)
    cfg_sub.add_parser("path", help="print which configuration file is used").set_defaults(_noconfig=True)

    for command in commands:
        p = sub.add_parser(command.name, help=command.help, description=command.description or command.help)
        command.add_arguments(p)
        if not any(a.dest == "config" for a in p._actions):
            _common(p)
        p.set_defaults(_plugin_command=command)
    return parser


def _preparse(argv: Sequence[str]) -> argparse.Namespace:
    """Find --config/--disable-plugin/--log-level before plugins (and their commands) load."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("--disable-plugin", action="append", default=[])
    pre.add_argument("--log-level")
    pre.add_argument("--json", action="store_true")
    known, _ = pre.parse_known_args(argv)
    return known


_collect_after_startup = False
"""Set while ``agentd`` as a program imports and loads its plugins with the GC off."""


def main(argv: Sequence[str] | None = None) -> int:
    global _collect_after_startup
    as_program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if as_program:
        # startup allocates ~300k objects that live as long as the process (modules, plugins,
        # aiortc later): collections during it find nothing and cost ~0.2 s of a clean
        # `agentd check`; _startup_done() freezes what is left and turns the GC back on
        _collect_after_startup = True
        gc.disable()
    aio.abandoned = False
    try:
        code = _main(argv)
    except KeyboardInterrupt:
        print("agentd: interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:
        code = _reader_left()
    try:  # what is still buffered: a reader that left shows here at the latest
        sys.stdout.flush()
    except BrokenPipeError:
        code = _reader_left()
    except (OSError, ValueError):
        pass
    if aio.abandoned:
        # a check is stuck in a blocking call: joining its thread would hold the process
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _startup_done()
    if as_program:
        # the process ends next: the interpreter's last garbage collections need not walk
        # every object aiortc and the plugins left (0.1-0.3 s of a clean `agentd check`)
        gc.freeze()
    return code


def _startup_done() -> None:
    """The GC back on after startup (see :func:`main`), with startup's objects frozen out of it."""
    global _collect_after_startup
    if _collect_after_startup:
        _collect_after_startup = False
        gc.freeze()
        gc.enable()


def _main(argv: list[str]) -> int:
    if argv[:1] == ["service"]:  # before any configuration loads: the service host must set its paths first
        _startup_done()  # the service host runs for days: not with the GC off
        from agentd import winservice

        return winservice.main(argv[1:])
    pre = _preparse(argv)
    logs.configure(pre.log_level or os.environ.get("AGENTD_LOG_LEVEL") or "warning")
    wants_help = any(a in ("-h", "--help") for a in argv) or not argv
    app: App | None = None
    try:
        try:
            app = App.load(pre.config, disable=pre.disable_plugin)
        except ConfigError:
            if not wants_help and not (argv and argv[0] in ("config",) and "path" in argv) and argv[:1] not in (["status"], ["reload"]):
                raise
            app = None  # --help must work even with a broken configuration
        finally:
            _startup_done()
        if app is not None and not pre.log_level:
            logs.configure(os.environ.get("AGENTD_LOG_LEVEL") or app.config.core.log_level)
        parser = build_parser(app.plugins.commands() if app else _commands_without_config(pre.disable_plugin))
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return EXIT_USAGE
        if args.command == "config" and getattr(args, "config_command", None) == "path":
            return _config_path(pre.config)
        if args.command == "status":  # asks the daemon; works while the file on disk is broken
            from agentd import daemon

            return daemon.status_command(args)
        if args.command == "reload":  # the daemon reads the file, not this process
            from agentd import daemon

            return daemon.reload_command(args)
        assert app is not None
        return _dispatch(args, app)
    except (ConfigError, UsageError) as exc:
        print(f"agentd: {redact_text(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except DaemonFailed as exc:
        print(f"agentd: {redact_text(str(exc))}", file=sys.stderr)
        return EXIT_DAEMON_FAILED
    except BrokenPipeError:
        return _reader_left()
    except AgentdError as exc:
        print(f"agentd: {redact_text(str(exc))}", file=sys.stderr)
        return EXIT_NOT_READY
    except OSError as exc:
        line = environment_problem(exc)
        if line is None:
            return _internal_error(exc)
        print(f"agentd: {redact_text(line)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        return _internal_error(exc)


ENVIRONMENT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.ENOSPC,
                                getattr(errno, "EDQUOT", errno.ENOSPC), errno.ELOOP, errno.ENAMETOOLONG})
"""What a folder agentd must write says about the machine, not about agentd."""


def environment_problem(exc: OSError) -> str | None:
    """One line naming the folder or file the environment gave agentd and that it cannot
    use (an unwritable HOME, a read-only disk); None for an error that is a bug."""
    if exc.errno not in ENVIRONMENT_ERRNOS or not exc.filename:
        return None
    from agentd import paths

    where = Path(os.fsdecode(exc.filename))
    line = f"cannot use {where}: {exc.strerror or exc}"
    state = paths.state_dir()
    if where == state or where in state.parents or state in where.parents:
        origin = next((v for v in ("AGENTD_STATE_DIR", "STATE_DIRECTORY", "XDG_STATE_HOME") if os.environ.get(v)), "HOME")
        line += f" (agentd keeps its state in {state}, from {origin}; set AGENTD_STATE_DIR to a folder this user can write)"
    return line


def _internal_error(exc: BaseException) -> int:
    """A bug: one line, the traceback only in the (redacted) debug log."""
    log.debug("internal error", exc_info=exc)
    print(
        f"agentd: internal error: {type(exc).__name__}: {redact_text(str(exc))} "
        "(run with --log-level debug for the traceback)",
        file=sys.stderr,
    )
    return EXIT_INTERNAL


def _reader_left() -> int:
    """The reader of stdout went away (``agentd config show | head -1``): stop quietly.
    stdout is pointed at /dev/null so the interpreter's own flush at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


def _commands_without_config(disabled: Sequence[str]) -> list:
    """Plugin commands for --help when the configuration cannot be loaded: the commands
    hook needs no configuration, so `agentd mute --help` still helps."""
    from agentd.plugin import PluginManager

    plugins = PluginManager()
    plugins.load(disabled=disabled)
    return plugins.commands()


def _dispatch(args: argparse.Namespace, app: App) -> int:
    command = getattr(args, "_plugin_command", None)
    if command is not None:
        result = command.run(args, app)
        if inspect.isawaitable(result):
            result = aio.run(_await(result))
        return int(result or 0)
    if args.command == "check":
        return _check(args, app)
    if args.command == "diagnose":
        return _diagnose(args, app)
    if args.command == "plugins":
        return _plugins(args, app)
    if args.command == "run":  # the service (agentd/daemon.py)
        from agentd import daemon

        return daemon.run_command(app)
    if args.command == "config":
        if getattr(args, "config_command", None) != "show":
            raise UsageError("agentd config: choose an action: show, path")
        print(json.dumps(app.config.redacted(), indent=2, default=str))
        return EXIT_READY
    raise UsageError(f"unknown command {args.command!r}")


async def _await(awaitable: Any) -> Any:
    return await awaitable


def stdout_console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def _check(args: argparse.Namespace, app: App) -> int:
    from agentd.render import LiveProgress

    err = Console(stderr=True)
    progress_on = not args.json and err.is_terminal
    warnings: list[str] = []
    with LiveProgress(err, enabled=progress_on) as progress:
        report = None
        if not args.no_daemon:  # the same report, run by the daemon when it answers
            from agentd.daemon import check_through_daemon

            report = aio.run(check_through_daemon(args, progress, warnings=warnings))
        if report is None:
            report = aio.run(app.run_check(args.profile, on_event=progress, only=args.only, deadline_s=args.deadline))
    return _emit(report, args, app, warnings=warnings)


def _diagnose(args: argparse.Namespace, app: App) -> int:
    options = {}
    if args.diagnostics_file:
        options["diagnostics_file"] = args.diagnostics_file
    from agentd.render import LiveProgress

    if app.timeline is None:  # the daemon's host timeline, read-only, when it has one
        from agentd.timeline import open_existing

        app.timeline = open_existing()
    err = Console(stderr=True)
    with LiveProgress(err, enabled=not args.json and err.is_terminal) as progress:
        report = aio.run(
            app.run_diagnose(args.conversation_id, on_event=progress, options=options, with_checks=args.with_checks)
        )
    return _emit(report, args, app)


def _emit(report: Report, args: argparse.Namespace, app: App, *, warnings: list[str] | None = None) -> int:
    """Print the report, and keep and deliver it as asked. Printing comes first and each
    later step fails alone: a full disk costs a warning and exit 3, never the report."""
    from agentd.render import render_report

    warnings = list(warnings or ())
    text = report.to_json()
    if args.json:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    else:
        render_report(report, stdout_console())
    if getattr(args, "output", None):
        try:
            write_atomic(Path(args.output), text + "\n")
        except OSError as exc:
            warnings.append(f"--output {args.output} not written: {exc.strerror or exc}")
            print(f"agentd: warning: {warnings[-1]}", file=sys.stderr)
    if getattr(args, "html", None):
        from agentd.report_html import write_html

        try:
            write_html(report, Path(args.html))
        except OSError as exc:
            warnings.append(f"--html {args.html} not written: {exc.strerror or exc}")
            print(f"agentd: warning: {warnings[-1]}", file=sys.stderr)
    if getattr(args, "upload", False):
        from agentd.delivery import upload

        outcome = aio.run(upload(app, report))
        if outcome.spool_error:
            warnings.append(f"report {report.id} not spooled: {outcome.spool_error}")
            print(f"agentd: warning: {warnings[-1]}", file=sys.stderr)
    if warnings:
        return EXIT_NOT_KEPT
    return EXIT_READY if report.ready else EXIT_NOT_READY


def _plugins(args: argparse.Namespace, app: App) -> int:
    infos = app.plugins.plugins()
    if args.json:
        print(json.dumps([info.__dict__ | {"hooks": list(info.hooks)} for info in infos], indent=2))
        return EXIT_READY
    from rich.table import Table

    table = Table(show_header=True, header_style="bold")
    table.add_column("plugin", no_wrap=True)
    table.add_column("from")
    table.add_column("state")
    table.add_column("hooks", overflow="fold")
    for info in infos:
        table.add_row(info.name, f"{info.origin}\n{info.location}", info.state, ", ".join(h.removeprefix("agentd_") for h in info.hooks))
    stdout_console().print(table)
    return EXIT_READY


def _config_path(explicit: str | None) -> int:
    from agentd import config as config_mod

    path, named = config_mod.locate(explicit)
    if path is None:
        from agentd import paths

        print(f"{paths.config_dir() / config_mod.CONFIG_FILENAME} (does not exist; defaults are used)")
    else:
        print(f"{path}{'' if path.exists() else ' (does not exist)'}")
    return EXIT_READY


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
