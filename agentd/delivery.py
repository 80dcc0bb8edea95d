"""Delivery: a report goes to the spool first, then to every configured sink.

    report ─► spool (durable) ─► each sink not yet acknowledged ─► ack ─► all acked: leaves the spool

A sink that fails keeps the report in the spool for the next flush (``agentd check
--upload``, ``agentd reports flush``, the daemon); a sink that already acknowledged it
is not asked again. A sink that is down (it failed retryably, did not answer in time, or
is misconfigured: a wrong token or URL) is tried once per flush, not once per report.
A sink that refuses a report for good (HTTP 413, 422, ...: ``DeliveryError.refused``) is
not asked for it again; once the other sinks have it, it moves to the spool's
``refused/`` place, with one log line, and ``agentd reports list`` shows it and why.

A new report goes first: :meth:`Delivery.submit` delivers it under its own budget
(``[spool] sink_timeout_s``, the wait for the spool lock included) and gives older
pending reports only a short budget after it; the daemon flushes those in the
background. A spool that cannot take the report (a full or read-only disk) does not
cost it: it is offered to the sinks directly, and the outcome says it was not spooled.

This module is also a plugin (entry point ``delivery``): it declares ``[spool]`` and the
``agentd reports`` command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
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


OTHERS_BUDGET_S = 5.0
"""What a foreground delivery gives older pending reports after its own (the daemon
delivers the rest in the background)."""


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
    spool_error: str | None = None
    """Why the spool could not keep the report (it was then offered to the sinks directly)."""
    moved_aside: str | None = None
    """The spool file was unreadable or not what its name says, or refused for good: where it was put."""
    refused: dict[str, str] = field(default_factory=dict)
    """Sink name -> why it refused the report for good (not asked again)."""
    note: str | None = None
    """Anything else the user must know (a spool file renamed to the id inside it)."""

    @property
    def done(self) -> bool:
        """Every sink has it, and it was not merely moved aside."""
        return self.left_spool and self.moved_aside is None and not self.failed


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

    async def submit(self, report: Report, *, others_budget_s: float | None = OTHERS_BUDGET_S) -> DeliveryOutcome:
        """Spool ``report`` durably and deliver it, within ``sink_timeout_s`` in all; then
        older pending reports for at most ``others_budget_s`` (0: not now; None: no bound).

        A spool that cannot take it (full or read-only disk) does not lose it: it goes to
        the sinks directly, and the outcome's ``spool_error`` says why it was not kept."""
        payload = report.to_json().encode("utf-8")
        try:
            self.spool.put(report.id, payload)
        except (DeliveryError, OSError) as exc:
            why = _why(exc)
            log.error("report not spooled; offering it to the sinks directly", report=report.id, error=why)
            return await self._deliver_unspooled(report, payload, why)
        ends = time.monotonic() + self.sink_timeout_s
        down: dict[str, str] = {}  # a sink that failed it is not asked for older ones now either
        outcomes = await self.flush(only=report.id, ends=ends, down=down)
        outcome = next((o for o in outcomes if o.report_id == report.id), None)
        if outcome is None:
            outcome = DeliveryOutcome(
                report.id, failed={"spool": "another agentd process is delivering; the report stays in the spool for it"})
        if others_budget_s is None or others_budget_s > 0:
            try:
                async with asyncio.timeout(others_budget_s):
                    await self.flush(skip=report.id, lock_wait_s=0.0, down=down)
            except TimeoutError:
                log.info("older pending reports left for the next flush", budget_s=others_budget_s)
        return outcome

    async def _deliver_unspooled(self, report: Report, payload: bytes, why: str) -> DeliveryOutcome:
        return await deliver_directly(self.sinks, report, payload, why=why, timeout_s=self.sink_timeout_s)

    async def flush(
        self,
        only: str | None = None,
        *,
        skip: str | None = None,
        ends: float | None = None,
        lock_wait_s: float | None = None,
        down: dict[str, str] | None = None,
    ) -> list[DeliveryOutcome]:
        """Offer every pending report (or just ``only``, never ``skip``) to the sinks that
        lack it. ``ends`` (a ``time.monotonic()`` moment) bounds the wait for the lock and
        each sink's deadline; ``down`` carries the sinks found down by an earlier flush."""
        if not self.sinks:
            return [DeliveryOutcome(e.report_id, failed={"-": "no sink is configured"}) for e in self.spool.entries()
                    if (only is None or e.report_id == only) and e.report_id != skip]
        wait = self.lock_wait_s if lock_wait_s is None else lock_wait_s
        if ends is not None:
            wait = min(wait, max(0.0, ends - time.monotonic()))
        async with self._lock(wait) as mine:
            if not mine:
                log.warning("another agentd process is delivering; leaving the spool to it")
                return []
            if down is None:
                down = {}  # sinks that failed retryably in this flush: not retried per report
            outcomes = []
            for entry in self.spool.entries():
                if (only is None or entry.report_id == only) and entry.report_id != skip:
                    outcomes.append(await self._deliver_one(entry, down, ends))
            return outcomes

    @contextlib.asynccontextmanager
    async def _lock(self, wait_s: float):
        """The spool's lock without blocking the event loop while another holder has it."""
        deadline = time.monotonic() + wait_s
        while True:
            with self.spool.locked(0.0) as mine:
                if mine:
                    yield True
                    return
            if time.monotonic() >= deadline:
                yield False
                return
            await asyncio.sleep(0.05)

    async def _deliver_one(self, entry: SpoolEntry, down: dict[str, str], ends: float | None = None) -> DeliveryOutcome:
        waiting_only = [s for s in self.sinks if s.name not in entry.acked and s.name not in entry.refused]
        if waiting_only and all(s.name in down for s in waiting_only):  # nothing to try: do not even read it
            return DeliveryOutcome(
                entry.report_id,
                already=tuple(s.name for s in self.sinks if s.name in entry.acked),
                failed={s.name: down[s.name] for s in waiting_only},
            )
        note = None
        try:
            payload = entry.read()
            report = Report.from_json(payload)
        except FileNotFoundError:
            return DeliveryOutcome(entry.report_id, left_spool=True)
        except (ValueError, KeyError, TypeError) as exc:
            # A report that cannot be read would block the spool forever: keep it aside.
            where = self._move_aside(entry)
            log.error("spooled report is unreadable; moved aside", report=entry.report_id, to=where, error=str(exc))
            return DeliveryOutcome(entry.report_id, failed={"spool": f"unreadable, moved to {where}"}, left_spool=True, moved_aside=where)
        if report.id != entry.report_id:
            # The file's name is what the spool tracks (acks, removal): a report under
            # another name would be posted on every flush and never leave. Give it its
            # own name once, or put it aside when that name is taken or unusable.
            entry, note = self._repair_name(entry, report.id)
            if entry is None:
                return DeliveryOutcome(report.id, failed={"spool": note}, left_spool=True, moved_aside=note)
        already = tuple(s.name for s in self.sinks if s.name in entry.acked)
        todo = [s for s in self.sinks if s.name not in entry.acked and s.name not in entry.refused]
        waiting = [s for s in todo if s.name in down]
        trying = [s for s in todo if s.name not in down]
        failed = {s.name: down[s.name] for s in waiting}
        refused: dict[str, str] = {}

        async def one(sink: Sink) -> str | None:
            timeout = self.sink_timeout_s if ends is None else round(max(0.05, min(self.sink_timeout_s, ends - time.monotonic())), 1)
            try:
                async with asyncio.timeout(timeout):
                    await sink.deliver(report, payload)
            except TimeoutError:
                why = f"no acknowledgement within {timeout:g} s"
                down[sink.name] = f"not tried: it gave no acknowledgement within {timeout:g} s for report {report.id} in this flush"
                return why
            except DeliveryError as exc:
                if exc.refused:  # this report, for good: recorded, never offered to this sink again
                    why = redact_text(str(exc))
                    self.spool.refuse(report.id, sink.name, why)
                    refused[sink.name] = why
                    return None
                # down for this flush: retryable, or the sink itself unusable (a wrong token or URL)
                down[sink.name] = f"not tried: it failed for report {report.id} in this flush ({redact_text(str(exc))})"
                return str(exc)
            except Exception as exc:  # a broken sink plugin must not lose the report
                return f"{type(exc).__name__}: {exc}"
            self.spool.ack(report.id, sink.name)
            return None

        results = await asyncio.gather(*(one(s) for s in trying))
        delivered = []
        for sink, error in zip(trying, results):
            if error is None:
                if sink.name not in refused:
                    delivered.append(sink.name)
            else:
                failed[sink.name] = redact_text(error)
                log.warning("sink did not take the report; it stays in the spool", sink=sink.name, report=report.id, error=failed[sink.name])
        reasons = {**(self.spool.refusals(report.id) if entry.refused else {}), **refused}
        if failed:
            if refused:
                log.warning("sink refused the report for good; not offered to it again, kept for the others",
                            report=report.id, refused=refused, waiting_for=sorted(failed))
            return DeliveryOutcome(report.id, tuple(delivered), already, failed, False, note=note, refused=reasons)
        if reasons:
            where = str(self.spool.set_aside(report.id, reasons, at=_now()))
            log.error("sink refused the report for good; moved aside (not sent again; `agentd reports resend` offers it again)",
                      report=report.id, refused=reasons, to=where)
            return DeliveryOutcome(report.id, tuple(delivered), already, {}, True, moved_aside=where, note=note, refused=reasons)
        self.spool.remove(report.id)
        return DeliveryOutcome(report.id, tuple(delivered), already, failed, True, note=note)

    def _move_aside(self, entry: SpoolEntry) -> str:
        corrupt = self.spool.folder / "corrupt"
        corrupt.mkdir(exist_ok=True)
        entry.path.replace(corrupt / entry.path.name)
        self.spool.remove(entry.report_id)
        return str(corrupt / entry.path.name)

    def _repair_name(self, entry: SpoolEntry, inner_id: str) -> tuple[SpoolEntry | None, str]:
        """Rename ``entry`` to the id inside it: (the renamed entry, a note), or (None, why
        it was moved aside) when that id cannot be a file name or is already spooled."""
        try:
            safe_name(inner_id, "report id")
            usable = self.spool.get(inner_id) is None
        except DeliveryError:
            usable = False
        if not usable:
            where = self._move_aside(entry)
            why = f"spool file {entry.path.name} holds report {inner_id!r}, not {entry.report_id}; moved to {where}"
            log.error("spooled report's name and id disagree; moved aside", file=entry.path.name, id=inner_id, to=where)
            return None, why
        target = self.spool.folder / f"{inner_id}.json"
        entry.path.replace(target)
        self.spool.remove(entry.report_id)  # its markers were for the wrong name: every sink is asked
        note = f"spool file {entry.path.name} held report {inner_id}; renamed to {target.name}"
        log.warning("spooled report's name and id disagreed; renamed", file=entry.path.name, id=inner_id)
        return SpoolEntry(inner_id, target, entry.size, frozenset()), note


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
    refused = delivery.spool.get_refused(report_id)
    if refused is not None:
        return refused.read(), "refused"
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
    refused = [
        {"id": e.report_id, "bytes": e.size, "path": str(e.path), "refused": e.reasons, "at": e.at}
        for e in delivery.spool.refused_entries()
    ]
    stats = delivery.spool.stats()
    if args.json:
        print(json.dumps({"spool": str(delivery.spool.folder), "sinks": sink_names, "pending": pending, "refused": refused,
                          "stored": stored, "dropped": stats.dropped}, indent=2))
        return 0
    print(f"spool {delivery.spool.folder}: {len(pending)} pending, {len(refused)} refused, {stats.dropped} dropped by the size bound; "
          f"sinks: {', '.join(sink_names) or 'none'}")
    for item in pending:
        print(f"  pending  {item['id']}  waiting for {', '.join(item['waiting_for']) or '-'}")
    for item in refused:
        why = "; ".join(f"{sink}: {reason}" for sink, reason in item["refused"].items()) or "reason not recorded"
        print(f"  refused  {item['id']}  {why} (not sent again; `agentd reports resend {item['id']}` offers it again)")
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
    payload, where = found
    entry = delivery.spool.get(args.report_id) or delivery.spool.put(args.report_id, payload)
    if where == "refused":  # back among the pending ones: asked again like a new report
        delivery.spool.drop_refused(args.report_id)
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
    return 0 if all(o.done for o in outcomes) else 1


def describe(outcome: DeliveryOutcome) -> str:
    parts = []
    if outcome.spool_error:
        parts.append(f"not spooled ({outcome.spool_error})")
    if outcome.note:
        parts.append(outcome.note)
    if outcome.delivered:
        parts.append(f"delivered to {', '.join(outcome.delivered)}")
    if outcome.already:
        parts.append(f"already at {', '.join(outcome.already)}")
    for sink, why in outcome.failed.items():
        parts.append(f"{sink}: {why}")
    for sink, why in outcome.refused.items():
        parts.append(f"{sink} refused it for good: {why}")
    if outcome.moved_aside and outcome.refused:
        state = f"refused; moved aside to {outcome.moved_aside}, not sent again"
    elif outcome.moved_aside:
        state = "moved aside, not delivered"
    elif outcome.spool_error:
        state = "delivered; not kept in the spool" if not outcome.failed else "not kept; the sinks that failed will not get it"
    elif outcome.left_spool:
        state = "done"
    else:
        state = "not delivered" if "spool" in outcome.failed else "kept in the spool"
    return f"report {outcome.report_id}: {'; '.join(parts) or 'nothing to do'} ({state})"


def _open_delivery(app: App, report: Report) -> Delivery | DeliveryOutcome:
    try:
        return Delivery.from_app(app)
    except (DeliveryError, OSError) as exc:  # the spool folder cannot even be made
        return DeliveryOutcome(report.id, failed={"spool": _why(exc)}, spool_error=_why(exc))


async def upload(app: App, report: Report) -> DeliveryOutcome:
    """What ``--upload`` does: spool the report and deliver it (older pending ones get a
    short budget after it); say what happened on stderr."""
    delivery = _open_delivery(app, report)
    if isinstance(delivery, DeliveryOutcome):
        # an unusable spool folder: the sinks are built without it, the report goes to them directly
        outcome = await _direct(app, report, delivery.spool_error or "")
    else:
        outcome = await delivery.submit(report)
    print(f"agentd: {describe(outcome)}", file=sys.stderr)
    return outcome


async def _direct(app: App, report: Report, why: str) -> DeliveryOutcome:
    sinks = [sink for _, sink in app.plugins.collect_sinks(app.config)]
    payload = report.to_json().encode("utf-8")
    return await deliver_directly(sinks, report, payload, why=why, timeout_s=spool_settings(app.config).sink_timeout_s)


async def deliver_directly(sinks: Sequence[Sink], report: Report, payload: bytes, *, why: str, timeout_s: float) -> DeliveryOutcome:
    """A report the spool could not keep: every sink once, in parallel, under the
    per-sink deadline; nothing is recorded (there is nowhere to)."""

    async def one(sink: Sink) -> str | None:
        try:
            async with asyncio.timeout(timeout_s):
                await sink.deliver(report, payload)
        except TimeoutError:
            return f"no acknowledgement within {timeout_s:g} s"
        except Exception as exc:  # a broken sink plugin too: say it, go on
            return redact_text(str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}")
        return None

    results = await asyncio.gather(*(one(s) for s in sinks))
    delivered = tuple(s.name for s, error in zip(sinks, results) if error is None)
    failed = {s.name: error for s, error in zip(sinks, results) if error is not None}
    if not sinks:
        failed = {"-": "no sink is configured"}
    return DeliveryOutcome(report.id, delivered, (), failed, left_spool=False, spool_error=why)


async def deliver_report(app: App, report: Report) -> DeliveryOutcome:
    """The daemon's way in (scheduled runs, ``upload`` over the control socket): like
    ``--upload`` without the older reports (the daemon flushes those in the background),
    logged instead of printed."""
    delivery = _open_delivery(app, report)
    if isinstance(delivery, DeliveryOutcome):
        outcome = await _direct(app, report, delivery.spool_error or "")
    else:
        outcome = await delivery.submit(report, others_budget_s=0)
    if outcome.spool_error:
        log.error("report not spooled", report=report.id, error=outcome.spool_error, failed=outcome.failed)
    elif outcome.failed:
        log.warning("report kept in the spool", report=report.id, failed=outcome.failed)
    return outcome


async def flush_spool(app: App) -> list[DeliveryOutcome]:
    """Deliver what is pending (the daemon calls it at start-up, after each delivery that
    left older reports waiting, now and then, and before it stops)."""
    return await Delivery.from_app(app).flush()


def pending_count(app: App) -> int:
    """How many reports wait in the spool (0 when it cannot be read)."""
    try:
        return len(open_spool(app.config).entries())
    except OSError:
        return 0


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot write the spool: {exc.strerror}" + (f" ({exc.filename})" if exc.filename else "")
    return str(exc)
