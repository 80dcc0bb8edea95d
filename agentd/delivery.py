"""Delivery: a report goes to the spool first, then to every configured sink.

    report ─► spool (durable) ─► each sink not yet acknowledged ─► ack ─► all acked: leaves the spool

A sink that fails keeps the report in the spool for the next flush (``agentd check
--upload``, ``agentd reports flush``, the daemon); a sink that already acknowledged it
is not asked again. A sink that is down is tried once per flush, not once per report.

This module is also a plugin (entry point ``delivery``): it declares ``[spool]`` and the
``agentd reports`` command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

import structlog

from agentd import hookimpl, paths
from agentd.commands import Command
from agentd.config import Config, ConfigSection
from agentd.errors import ConfigError, DeliveryError, UsageError
from agentd.model import Report
from agentd.redact import redact_text
from agentd.sinks import Sink
from agentd.spool import Spool, SpoolEntry, safe_name

if TYPE_CHECKING:
    from agentd.app import App

log = structlog.get_logger("agentd.delivery")


@dataclass(frozen=True)
class SpoolSettings:
    """``[spool]``: where reports wait for their sinks, and how much may wait."""

    path: Path | None = field(default=None, metadata={"help": "the spool folder (default: <state dir>/spool)"})
    max_mb: float = field(default=50.0, metadata={"help": "size bound; beyond it the oldest reports are dropped (logged, counted)", "min": 0.01})
    max_reports: int = field(default=1000, metadata={"help": "count bound; beyond it the oldest reports are dropped", "min": 1})
    sink_timeout_s: float = field(default=120.0, metadata={"help": "deadline of one sink delivering one report, retries included", "min": 0.1})
    lock_wait_s: float = field(default=10.0, metadata={"help": "how long to wait while another agentd process is delivering", "min": 0})


SPOOL_SECTION = ConfigSection("spool", SpoolSettings, "the local spool reports wait in until every sink has them")


@runtime_checkable
class ReportStore(Protocol):
    """A sink that keeps reports on this machine (the ``file`` sink): ``agentd reports``
    lists and shows what it holds."""

    name: str

    def stored(self) -> list[Path]: ...


@dataclass(frozen=True)
class DeliveryOutcome:
    """What one flush did for one report."""

    report_id: str
    delivered: tuple[str, ...] = ()
    """Sinks that acknowledged it in this flush."""
    already: tuple[str, ...] = ()
    """Sinks that had it before (not asked again)."""
    failed: dict[str, str] = field(default_factory=dict)
    """Sink name -> why it did not take the report (it stays in the spool)."""
    left_spool: bool = False


def spool_settings(config: Config) -> SpoolSettings:
    try:
        value = config.section("spool")
    except ConfigError:  # the delivery plugin disabled: its defaults still hold
        return SpoolSettings()
    return value if isinstance(value, SpoolSettings) else SpoolSettings()


def open_spool(config: Config) -> Spool:
    settings = spool_settings(config)
    folder = settings.path.expanduser() if settings.path else paths.state_dir() / "spool"
    return Spool(folder, max_bytes=int(settings.max_mb * 1024 * 1024), max_reports=settings.max_reports)


class Delivery:
    """The spool and the sinks of one configuration."""

    def __init__(self, spool: Spool, sinks: Sequence[Sink], *, sink_timeout_s: float = 120.0, lock_wait_s: float = 10.0) -> None:
        names = [s.name for s in sinks]
        for name in names:
            safe_name(name, "sink name")
        if len(set(names)) != len(names):
            raise ConfigError(f"two sinks share a name: {', '.join(sorted(names))}")
        self.spool = spool
        self.sinks = list(sinks)
        self.sink_timeout_s = sink_timeout_s
        self.lock_wait_s = lock_wait_s

    @classmethod
    def from_app(cls, app: App) -> Delivery:
        settings = spool_settings(app.config)
        before = len(app.plugins.failures)
        sinks = [sink for _, sink in app.plugins.collect_sinks(app.config)]
        for failure in app.plugins.failures[before:]:
            log.error("a sink plugin failed", plugin=failure.plugin, error=failure.error)
        return cls(open_spool(app.config), sinks, sink_timeout_s=settings.sink_timeout_s, lock_wait_s=settings.lock_wait_s)

    def stores(self) -> list[ReportStore]:
        return [s for s in self.sinks if isinstance(s, ReportStore)]

    async def submit(self, report: Report) -> DeliveryOutcome:
        """Spool ``report`` durably, then flush everything pending (older reports first)."""
        self.spool.put(report.id, report.to_json().encode("utf-8"))
        outcomes = await self.flush()
        for outcome in outcomes:
            if outcome.report_id == report.id:
                return outcome
        return DeliveryOutcome(report.id, failed={"spool": "another agentd process is delivering; it stays in the spool"})

    async def flush(self, only: str | None = None) -> list[DeliveryOutcome]:
        """Offer every pending report (or just ``only``) to the sinks that lack it."""
        if not self.sinks:
            return [DeliveryOutcome(e.report_id, failed={"-": "no sink is configured"}) for e in self.spool.entries()]
        with self.spool.locked(self.lock_wait_s) as mine:
            if not mine:
                log.warning("another agentd process is delivering; leaving the spool to it")
                return []
            down: dict[str, str] = {}  # sinks that failed retryably in this flush: not retried per report
            outcomes = []
            for entry in self.spool.entries():
                if only is None or entry.report_id == only:
                    outcomes.append(await self._deliver_one(entry, down))
            return outcomes

    async def _deliver_one(self, entry: SpoolEntry, down: dict[str, str]) -> DeliveryOutcome:
        waiting_only = [s for s in self.sinks if s.name not in entry.acked]
        if waiting_only and all(s.name in down for s in waiting_only):  # nothing to try: do not even read it
            return DeliveryOutcome(
                entry.report_id,
                already=tuple(s.name for s in self.sinks if s.name in entry.acked),
                failed={s.name: down[s.name] for s in waiting_only},
            )
        try:
            payload = entry.read()
            report = Report.from_json(payload)
        except FileNotFoundError:
            return DeliveryOutcome(entry.report_id, left_spool=True)
        except (ValueError, KeyError, TypeError) as exc:
            # A report that cannot be read would block the spool forever: keep it aside.
            corrupt = self.spool.folder / "corrupt"
            corrupt.mkdir(exist_ok=True)
            entry.path.replace(corrupt / entry.path.name)
            self.spool.remove(entry.report_id)
            log.error("spooled report is unreadable; moved aside", report=entry.report_id, to=str(corrupt), error=str(exc))
            return DeliveryOutcome(entry.report_id, failed={"spool": f"unreadable, moved to {corrupt}"}, left_spool=True)
        already = tuple(s.name for s in self.sinks if s.name in entry.acked)
        todo = [s for s in self.sinks if s.name not in entry.acked]
        waiting = [s for s in todo if s.name in down]
        trying = [s for s in todo if s.name not in down]
        failed = {s.name: down[s.name] for s in waiting}

        async def one(sink: Sink) -> str | None:
            try:
                async with asyncio.timeout(self.sink_timeout_s):
                    await sink.deliver(report, payload)
            except TimeoutError:
                return f"no acknowledgement within {self.sink_timeout_s:g} s"
            except DeliveryError as exc:
                if exc.retryable:
                    down[sink.name] = str(exc)
                return str(exc)
            except Exception as exc:  # a broken sink plugin must not lose the report
                return f"{type(exc).__name__}: {exc}"
            self.spool.ack(report.id, sink.name)
            return None

        results = await asyncio.gather(*(one(s) for s in trying))
        delivered = []
        for sink, error in zip(trying, results):
            if error is None:
                delivered.append(sink.name)
            else:
                failed[sink.name] = redact_text(error)
                log.warning("sink did not take the report; it stays in the spool", sink=sink.name, report=report.id, error=failed[sink.name])
        left = not failed
        if left:
            self.spool.remove(report.id)
        return DeliveryOutcome(report.id, tuple(delivered), already, failed, left)


# -- the plugin side: [spool] and `agentd reports` ------------------------------------------


@hookimpl
def agentd_config_sections():
    return [SPOOL_SECTION]


@hookimpl
def agentd_commands():
    return [
        Command(
            name="reports",
            help="list, show, resend or flush reports in the spool and the local store",
            description=(
                "Reports wait in the spool until every configured sink has acknowledged them; the file sink "
                "keeps delivered ones in the local store. Exit 0 done, 1 not found or something still pending."
            ),
            add_arguments=_reports_arguments,
            run=_reports_run,
        )
    ]


def _config_args(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: an option given before the action must not be reset by the action's default.
    parser.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="configuration file")
    parser.add_argument("--disable-plugin", metavar="NAME", action="append", default=argparse.SUPPRESS, help="do not load this plugin")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default=argparse.SUPPRESS, help="log level")


def _reports_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="reports_action", metavar="ACTION", parser_class=type(parser))
    listing = actions.add_parser("list", help="pending reports (with the sinks that have them) and stored ones")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    show = actions.add_parser("show", help="print one report (from the spool or the local store)")
    show.add_argument("report_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print the JSON report")
    show.add_argument("--html", metavar="FILE", help="write the single-file HTML report to FILE")
    resend = actions.add_parser("resend", help="deliver a stored report again (to every sink, or to --sink)")
    resend.add_argument("report_id", metavar="ID")
    resend.add_argument("--sink", metavar="NAME", action="append", default=[], help="only this sink (repeatable)")
    actions.add_parser("flush", help="deliver every pending report now")
    for sub in (listing, show, resend, actions.choices["flush"]):
        _config_args(sub)


def _reports_run(args: argparse.Namespace, app: App) -> Any:
    action = getattr(args, "reports_action", None)
    if action is None:
        raise UsageError("agentd reports: choose an action: list, show, resend, flush (see --help)")
    delivery = Delivery.from_app(app)
    if action == "list":
        return _list(args, delivery)
    if action == "show":
        return _show(args, delivery)
    if action == "resend":
        return _resend(args, delivery)
    return _flush(delivery)


def find_report(delivery: Delivery, report_id: str) -> tuple[bytes, str] | None:
    """The report's bytes and where they came from: the spool first, then the local stores."""
    safe_name(report_id, "report id")
    entry = delivery.spool.get(report_id)
    if entry is not None:
        return entry.read(), "spool"
    for store in delivery.stores():
        for path in store.stored():
            if path.name == f"{report_id}.json":
                return path.read_bytes(), f"store {store.name}"
    return None


def _list(args: argparse.Namespace, delivery: Delivery) -> int:
    sink_names = [s.name for s in delivery.sinks]
    pending = [
        {"id": e.report_id, "bytes": e.size, "acked": sorted(e.acked), "waiting_for": [n for n in sink_names if n not in e.acked]}
        for e in delivery.spool.entries()
    ]
    stored = [
        {"id": p.name[: -len(".json")], "store": store.name, "path": str(p), "bytes": p.stat().st_size}
        for store in delivery.stores()
        for p in store.stored()
    ]
    stats = delivery.spool.stats()
    if args.json:
        print(json.dumps({"spool": str(delivery.spool.folder), "sinks": sink_names, "pending": pending, "stored": stored,
                          "dropped": stats.dropped}, indent=2))
        return 0
    print(f"spool {delivery.spool.folder}: {len(pending)} pending, {stats.dropped} dropped by the size bound; sinks: {', '.join(sink_names) or 'none'}")
    for item in pending:
        print(f"  pending  {item['id']}  waiting for {', '.join(item['waiting_for']) or '-'}")
    for item in stored:
        print(f"  stored   {item['id']}  ({item['store']}, {item['bytes']} bytes)")
    return 0


def _show(args: argparse.Namespace, delivery: Delivery) -> int:
    found = find_report(delivery, args.report_id)
    if found is None:
        print(f"agentd: no report {args.report_id} in the spool or the local store", file=sys.stderr)
        return 1
    payload, where = found
    try:
        report = Report.from_json(payload)
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"report {args.report_id} ({where}) is not a readable agentd report: {exc}") from None
    if args.html:
        from agentd.report_html import write_html

        write_html(report, Path(args.html))
    if args.json:
        sys.stdout.write(report.to_json() + "\n")
    elif not args.html:
        from rich.console import Console

        from agentd.render import render_report

        render_report(report, Console(highlight=False, soft_wrap=False))
    return 0


async def _resend(args: argparse.Namespace, delivery: Delivery) -> int:
    found = find_report(delivery, args.report_id)
    if found is None:
        print(f"agentd: no report {args.report_id} in the spool or the local store", file=sys.stderr)
        return 1
    names = {s.name for s in delivery.sinks}
    unknown = [n for n in args.sink if n not in names]
    if unknown:
        raise UsageError(f"no configured sink named {', '.join(unknown)} (configured: {', '.join(sorted(names)) or 'none'})")
    payload, _ = found
    entry = delivery.spool.get(args.report_id) or delivery.spool.put(args.report_id, payload)
    # Resending means asking the chosen sinks again, even those that acknowledged before.
    chosen = set(args.sink) or names
    delivery.spool.reset_acks(entry.report_id, keep=frozenset(names - chosen))
    for name in names - chosen:
        delivery.spool.ack(entry.report_id, name)
    outcomes = await delivery.flush(only=entry.report_id)
    return _print_outcomes(outcomes)


async def _flush(delivery: Delivery) -> int:
    outcomes = await delivery.flush()
    if not outcomes:
        print("nothing pending")
    return _print_outcomes(outcomes)


def _print_outcomes(outcomes: list[DeliveryOutcome]) -> int:
    for outcome in outcomes:
        print(describe(outcome))
    return 0 if all(o.left_spool for o in outcomes) else 1


def describe(outcome: DeliveryOutcome) -> str:
    parts = []
    if outcome.delivered:
        parts.append(f"delivered to {', '.join(outcome.delivered)}")
    if outcome.already:
        parts.append(f"already at {', '.join(outcome.already)}")
    for sink, why in outcome.failed.items():
        parts.append(f"{sink}: {why}")
    state = "done" if outcome.left_spool else ("not delivered" if "spool" in outcome.failed else "kept in the spool")
    return f"report {outcome.report_id}: {'; '.join(parts) or 'nothing to do'} ({state})"


async def upload(app: App, report: Report) -> DeliveryOutcome:
    """What ``--upload`` does: spool the report, flush the spool; say what happened on stderr."""
    try:
        outcome = await Delivery.from_app(app).submit(report)
    except (DeliveryError, OSError) as exc:  # an unwritable state folder must not cost the printed report
        outcome = DeliveryOutcome(report.id, failed={"spool": _why(exc)})
    print(f"agentd: {describe(outcome)}", file=sys.stderr)
    return outcome


async def deliver_report(app: App, report: Report) -> DeliveryOutcome:
    """The daemon's way in (scheduled runs, ``upload`` over the control socket): like
    ``--upload``, but logged instead of printed."""
    try:
        outcome = await Delivery.from_app(app).submit(report)
    except (DeliveryError, OSError) as exc:
        log.error("report not spooled", report=report.id, error=_why(exc))
        return DeliveryOutcome(report.id, failed={"spool": _why(exc)})
    if outcome.failed:
        log.warning("report kept in the spool", report=report.id, failed=outcome.failed)
    return outcome


async def flush_spool(app: App) -> list[DeliveryOutcome]:
    """Deliver what is pending (the daemon calls it at start-up and before it stops)."""
    return await Delivery.from_app(app).flush()


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot write the spool: {exc.strerror}" + (f" ({exc.filename})" if exc.filename else "")
    return str(exc)
