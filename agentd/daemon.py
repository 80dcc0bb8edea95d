"""``agentd run``: the service. One asyncio loop, shaped like uvicorn's ``Server``:
start-up, a main wait, and a bounded shut-down.

Start-up: open the host timeline (SQLite in the state directory), listen on the
control socket, await every plugin's ``agentd_daemon_start`` under a deadline, start
the pre-shift schedule, then tell systemd ``READY=1`` (and ``WATCHDOG=1`` at half of
``$WATCHDOG_USEC`` from then on, from the loop itself, so a stuck loop is restarted).

Signals: SIGTERM or SIGINT stop (on Windows Ctrl-C, Ctrl-Break or the service manager:
agentd/osdeps/stop.py); a second one stops at once. SIGHUP re-reads the configuration; a new one that does not validate is rejected with a log line naming
file, key and problem, and the old one stays in force.

Shut-down is bounded by ``[daemon] stop_timeout_s`` in total: a check that is running
gets half of it to finish and is then cancelled (its report still comes out, with the
unfinished checks as errors); then plugins' ``agentd_daemon_stop``, the plugins' own
tasks, and a flush of the delivery spool each get what is left. The exit code is 0.

Plugins reach the daemon through the hooks' ``daemon`` argument: ``daemon.spawn(coro,
name=...)`` for long-running work (cancelled on stop), ``daemon.timeline`` to record
events (``daemon.timeline.record("ws.drop", {...})``), ``daemon.app`` for the
configuration. This module is also the plugin that declares ``[daemon]`` and
``[schedule]``; it imports nothing heavy, as it is loaded by every ``agentd`` command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import io
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Coroutine, Iterable

import structlog

from agentd import __version__, hookimpl, paths
from agentd.config import Config, ConfigSection
from agentd.errors import ConfigError, UsageError
from agentd.model import CheckResult, Report, Status, isoformat, new_report_id, utcnow
from agentd.osdeps import stop as os_stop
from agentd.runner import CheckFinished, CheckStarted, EventCallback
from agentd.schedule import Clock, DueRun, Schedule, Scheduler, ScheduleSettings, SystemClock, parse_times
from agentd.sdnotify import Notifier, watchdog_interval_s
from agentd.fileio import write_atomic

log = structlog.get_logger("agentd.daemon")

LAST_REPORT = "last-report.json"
LOGIN_TIMEOUT_S = 30.0
"""A handed-over login is checked with the service before it is kept: that has a deadline."""
SCHEDULE_STATE = "schedule.json"


@dataclass(frozen=True)
class DaemonSettings:
    """``[daemon]``: the service's own behaviour."""

    control_group: str | None = field(
        default=None,
        metadata={"help": "group given access to the control socket (default: the daemon's own group)"},
    )
    stop_timeout_s: float = field(
        default=4.0,
        metadata={"help": "on SIGTERM, everything (running check, plugins, spool) ends within this", "min": 0.5, "max": 120},
    )
    hook_timeout_s: float = field(
        default=5.0, metadata={"help": "deadline of each plugin's daemon start-up hook", "min": 0.1, "max": 120}
    )
    flush_interval_s: float = field(
        default=900.0, metadata={"help": "how often reports still in the spool are offered to their sinks again", "min": 10, "max": 86400}
    )
    flush_timeout_s: float = field(
        default=300.0, metadata={"help": "deadline of one flush of the spool while running", "min": 1, "max": 3600}
    )


# -- the plugin side: the sections this module owns ---------------------------------------


@hookimpl
def agentd_config_sections() -> list[ConfigSection]:
    return [
        ConfigSection("daemon", DaemonSettings, "the service (`agentd run`)"),
        ConfigSection("schedule", ScheduleSettings, "pre-shift checks run by the daemon"),
    ]


@hookimpl
def agentd_configure(config: Config) -> None:
    # times and zones the types cannot check: reject them at load and at reload alike
    parse_times(config.section("schedule"), file=str(config.path) if config.path else None)


@hookimpl
def agentd_unconfigured(config: Config) -> list[str]:
    schedule: ScheduleSettings = config.section("schedule")
    if schedule.times:
        return []
    return ["pre-shift schedule: none, so checks run only when asked; set [schedule] times"]


# -- the service ----------------------------------------------------------------------------


class Daemon:
    """The running service; plugins get it as the ``daemon`` argument of their hooks."""

    def __init__(self, app: Any, *, clock: Clock | None = None, notifier: Notifier | None = None, control_path: Path | None = None) -> None:
        self.app = app
        self.clock = clock or SystemClock()
        self.notifier = notifier or Notifier()
        self.control_path = control_path
        self.timeline: Any = None
        self.last_report: Report | None = _load_last_report()
        self.started_at = time.time()
        self.reloads = 0
        self.last_reload_error: str | None = None
        self.scheduler: Scheduler | None = None
        self.current_run: dict[str, Any] | None = None
        # A plugin's own objects that live as long as this daemon (a held login, a monitor, a
        # link), under "<plugin>.<what>": held here, not in module globals keyed by id(daemon).
        self.plugin_state: dict[str, Any] = {}
        self._tasks: set[asyncio.Task] = set()
        self._runs: set[asyncio.Future] = set()
        self._jobs: set[asyncio.Future] = set()
        self._run_lock: asyncio.Lock | None = None
        self._stop: asyncio.Event | None = None
        self._force = False
        self._control: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._early_stop = False  # a stop asked for before serve() had a loop (a service stopped while starting)
        self._loop_lock = threading.Lock()

    # -- what plugins use ----------------------------------------------------------------

    @property
    def settings(self) -> DaemonSettings:
        return self.app.config.section("daemon")

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task:
        """Run ``coro`` for as long as the daemon runs; cancelled on stop; a crash is logged."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("daemon task failed", task=task.get_name(), error=f"{type(exc).__name__}: {exc}")

    # -- checks ----------------------------------------------------------------------------

    async def run_check(
        self,
        profile: str = "preshift",
        *,
        trigger: str,
        on_event: EventCallback | None = None,
        only: Iterable[str] = (),
        deadline_s: float | None = None,
        upload: bool = False,
        on_delivered: Callable[[str], None] | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> Report:
        """One check run at a time (probes of two runs would disturb each other's figures).

        The run goes on in its own task: a control client that leaves does not cancel it.
        When the daemon stops, an unfinished run is cut short and still yields a report
        (finished checks as they ended, the others as errors). ``on_warning`` hears what
        could not be done with the report (spooled, recorded, saved)."""
        assert self._run_lock is not None
        async with self._run_lock:
            job = asyncio.ensure_future(self._run_job(profile, trigger, on_event, list(only), deadline_s, upload, on_delivered, on_warning))
            self._jobs.add(job)
            job.add_done_callback(self._jobs.discard)
            return await asyncio.shield(job)

    async def _run_job(
        self,
        profile: str,
        trigger: str,
        on_event: EventCallback | None,
        only: list[str],
        deadline_s: float | None,
        upload: bool,
        on_delivered: Callable[[str], None] | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> Report:
        started = time.monotonic()
        titles: dict[str, str] = {}
        finished: dict[str, CheckResult] = {}

        def track(event: Any) -> None:
            if isinstance(event, CheckStarted):
                titles[event.check_id] = event.title
            elif isinstance(event, CheckFinished):
                finished.setdefault(event.result.id, event.result)
            if on_event is not None:
                on_event(event)

        self.current_run = {"profile": profile, "trigger": trigger, "started": isoformat(utcnow())}
        self.notifier.status(f"running a {profile} check ({trigger})")
        run = asyncio.ensure_future(self.app.run_check(profile, on_event=track, only=only, deadline_s=deadline_s))
        self._runs.add(run)
        try:
            report = await run
        except asyncio.CancelledError:
            if not run.cancelled():
                raise
            report = self._cut_short(profile, titles, finished, started)
        finally:
            self._runs.discard(run)
            self.current_run = None
        # Delivery first, bookkeeping after: a full or broken state disk must not cost the
        # report its way to the caller and the sinks. Each failure after is a warning.
        warnings: list[str] = []
        sinks_well = False
        if trigger == "schedule" or upload:
            said, problem, sinks_well = await self._deliver(report)
            if problem:
                warnings.append(problem)
            if on_delivered is not None:
                on_delivered(said)
        self.last_report = report
        problem = _save_last_report(report)
        if problem:
            warnings.append(problem)
        problem = self._record_report(report, profile, trigger)
        if problem:
            warnings.append(problem)
        for text in warnings:
            log.warning("report not kept", report=report.id, problem=text)
            if on_warning is not None:
                on_warning(text)
        self.notifier.status(self._status_line())
        if sinks_well:  # older reports now, in the background; with a sink down they wait for the next flush
            self._flush_soon()
        return report

    def _record_report(self, report: Report, profile: str, trigger: str) -> str | None:
        """The report in the timeline (correlation reads earlier probes there); the problem, if any."""
        if self.timeline is None:
            return None
        try:
            self.timeline.record(
                "check.report",
                {"id": report.id, "profile": profile, "trigger": trigger, "ready": report.ready,
                 "failed": [c.id for c in report.checks if c.status.blocks_readiness],
                 # what correlation reads of earlier probes (plugins/FINDINGS.md, "The local timeline")
                 "checks": [{"id": c.id, "status": str(c.status), "metrics": c.metrics} for c in report.checks]},
            )
        except Exception as exc:  # sqlite3.OperationalError "database or disk is full" and the like
            return f"report {report.id} not recorded in the timeline: {exc}"
        return None

    def _flush_soon(self) -> None:
        """Older reports a delivery left waiting go out in the background, not in front of the caller."""
        if _delivery_module() is None or any(t.get_name() == "spool.flush-now" for t in self._tasks):
            return
        if self._stop is not None and self._stop.is_set():
            return
        pending = getattr(_delivery_module(), "pending_count", None)
        if pending is not None and pending(self.app) == 0:
            return
        self.spawn(self._flush_spool(self.settings.flush_timeout_s), name="spool.flush-now")

    def _cut_short(self, profile: str, titles: dict[str, str], finished: dict[str, CheckResult], started: float) -> Report:
        from agentd.app import agent_info

        results = [
            finished.get(check_id)
            or CheckResult(id=check_id, title=title, status=Status.ERROR, summary="not finished: the daemon was stopped")
            for check_id, title in titles.items()
        ]
        report = Report(
            id=new_report_id(), created=isoformat(utcnow()), agent=agent_info(), profile=profile,
            checks=tuple(results), duration_ms=(time.monotonic() - started) * 1000.0,
        )
        return self.app.correlate(report)

    async def _deliver(self, report: Report) -> tuple[str, str | None, bool]:
        """Through agentd.delivery (spool, then sinks) when it is there, else a file in
        the state directory. Returns one line saying what happened, a warning when the
        report could not be kept, and whether every sink took it."""
        delivery = _delivery_module()
        deliver = getattr(delivery, "deliver_report", None) if delivery else None
        if deliver is not None:
            try:
                outcome = await deliver(self.app, report)
                describe = getattr(delivery, "describe", None)
                said = describe(outcome) if describe else f"report {report.id} delivered"
                spool_error = getattr(outcome, "spool_error", None)
                warning = f"report {report.id} not spooled: {spool_error}" if spool_error else None
                return said, warning, not getattr(outcome, "failed", True)
            except Exception as exc:  # delivery keeps its own spool; the report is also kept below
                log.error("report delivery failed", report=report.id, error=f"{type(exc).__name__}: {exc}")
        folder = paths.state_dir() / "reports"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_atomic(folder / f"{report.id}.json", report.to_json() + "\n")
            return f"report {report.id} written to {folder}", None, False
        except OSError as exc:
            log.error("report not written", folder=str(folder), error=exc.strerror)
            return f"report {report.id} not delivered: {exc.strerror}", f"report {report.id} not kept: {exc.strerror}", False

    async def _scheduled(self, due: DueRun) -> None:
        log.info("scheduled check", slot=isoformat(due.slot), missed=due.missed, profile=due.profile)
        await self.run_check(due.profile, trigger="schedule")

    async def run_plugin_command(self, name: str, args: list[str]) -> dict[str, Any]:
        """Run a plugin's CLI command (``mute``) inside the daemon, its output captured."""
        command = next((c for c in self.app.plugins.commands() if c.name == name), None)
        if command is None:
            return {"ok": False, "error": f"no loaded plugin provides `agentd {name}`"}
        parser = argparse.ArgumentParser(prog=f"agentd {name}", exit_on_error=False, add_help=False)
        command.add_arguments(parser)
        out = io.StringIO()
        try:
            with contextlib.redirect_stderr(out):
                ns = parser.parse_args(args)
        except (argparse.ArgumentError, SystemExit) as exc:
            return {"ok": False, "error": f"agentd {name}: {exc or out.getvalue().strip()}"}
        for key, default in (("config", None), ("disable_plugin", []), ("log_level", None), ("json", False)):
            if not hasattr(ns, key):
                setattr(ns, key, default)
        try:
            with contextlib.redirect_stdout(out):
                result = command.run(ns, self.app)
                if inspect.isawaitable(result):
                    result = await result
        except (ConfigError, UsageError) as exc:
            return {"ok": True, "exit_code": 2, "output": out.getvalue(), "error": str(exc)}
        except Exception as exc:
            return {"ok": True, "exit_code": 1, "output": out.getvalue(), "error": f"{type(exc).__name__}: {exc}"}
        return {"ok": True, "exit_code": int(result or 0), "output": out.getvalue()}

    # -- logins handed over by users (`agentd login` / `agentd logout`) ------------------

    async def receive_login(self, service: str, login: dict[str, Any] | None, peer: dict[str, Any]) -> dict[str, Any]:
        """Store (or, with ``login`` None, clear) a user's login for ``service`` through the
        plugin that owns it; then the plugins that act for the logged-in user start over."""
        pending = self.app.plugins.daemon_hook("agentd_daemon_login", self, service=service, login=login, peer=peer)
        if not pending:
            return {"ok": False, "error": f"no plugin of this daemon takes a {service!r} login"}
        (plugin, awaitable), rest = pending[0], pending[1:]
        for _, extra in rest:  # one owner per service; a second answer is a plugin bug
            getattr(extra, "close", lambda: None)()
            log.error("two plugins answer one login", service=service, plugins=[p for p, _ in pending])
        try:
            async with asyncio.timeout(LOGIN_TIMEOUT_S):
                answer = await awaitable
        except TimeoutError:
            return {"ok": False, "error": f"the {service} login was not stored within {LOGIN_TIMEOUT_S:g} s"}
        except Exception as exc:  # AgentdError mostly: its message is for the user
            log.error("login not stored", plugin=plugin, service=service, error=f"{type(exc).__name__}: {exc}")
            return {"ok": False, "error": str(exc) or type(exc).__name__}
        if not isinstance(answer, dict):
            return {"ok": False, "error": f"plugin {plugin} answered the login with {type(answer).__name__}"}
        if answer.get("ok") and answer.get("changed", True):
            await self._await_hooks("agentd_daemon_login_changed", self.settings.hook_timeout_s, service=service)
            self.notifier.status(self._status_line())
        return answer

    # -- status -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        next_slot = None
        if self.scheduler is not None:
            nxt = self.scheduler.schedule.next_slot(self.clock.now())
            next_slot = isoformat(nxt) if nxt else None
        schedule: ScheduleSettings = self.app.config.section("schedule")
        last = self.last_report
        return {
            "pid": os.getpid(),
            "version": __version__,
            "started": isoformat(datetime.fromtimestamp(self.started_at, timezone.utc)),
            "uptime_s": round(time.time() - self.started_at, 1),
            "config": str(self.app.config.path) if self.app.config.path else None,
            "reloads": self.reloads,
            "last_reload_error": self.last_reload_error,
            "schedule": {"times": list(schedule.times), "weekdays": list(schedule.weekdays),
                         "spread_s": schedule.spread_s, "profile": schedule.profile, "next": next_slot,
                         "runs": self.scheduler.runs if self.scheduler else 0},
            "running": self.current_run,
            "last_report": None if last is None else
            {"id": last.id, "created": last.created, "profile": last.profile, "ready": last.ready},
            "timeline": self.timeline.stats() if self.timeline is not None else None,
            # wall-clock steps noticed (NTP after sleep, a clock set by hand): why a slot moved
            "clock_steps": [step.to_dict() for step in self.scheduler.clock_steps] if self.scheduler else [],
            "tasks": sorted(t.get_name() for t in self._tasks),
            "not_configured": self.app.plugins.unconfigured(self.app.config),
            **self._plugin_status(),
        }

    def _plugin_status(self) -> dict[str, Any]:
        """What plugins add (``agentd_daemon_status``): dicts merged one level deep."""
        merged: dict[str, Any] = {}
        for _, extra in self.app.plugins.daemon_status(self):
            for key, value in extra.items():
                if isinstance(value, dict) and isinstance(merged.get(key), dict):
                    merged[key] = {**merged[key], **value}
                else:
                    merged[key] = value
        return merged

    def _status_line(self) -> str:
        parts = ["idle"]
        if self.last_report is not None:
            parts.append(f"last check {'ready' if self.last_report.ready else 'NOT ready'} at {self.last_report.created}")
        if self.scheduler is not None:
            nxt = self.scheduler.schedule.next_slot(self.clock.now())
            if nxt is not None:
                parts.append(f"next {nxt.astimezone().strftime('%a %H:%M:%S')}")
        return "; ".join(parts)

    # -- signals ----------------------------------------------------------------------------

    def request_stop(self) -> None:
        assert self._stop is not None
        if self._stop.is_set():  # a second signal: stop now
            self._force = True
            for task in list(self._runs) + list(self._tasks):
                task.cancel()
            return
        log.info("stopping")
        self._stop.set()

    def request_stop_threadsafe(self) -> bool:
        """``request_stop`` from another thread (the Windows service manager's). False when
        the loop does not run: not yet (serve() then stops as soon as it starts) or no more."""
        with self._loop_lock:
            loop = self._loop
            if loop is None:
                self._early_stop = True
                return False
        try:
            loop.call_soon_threadsafe(self.request_stop)
        except RuntimeError:  # the loop is closed: the daemon has stopped already
            return False
        return True

    def reload(self) -> bool:
        """Re-read the configuration; a broken one is rejected and the old one kept."""
        self.notifier.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            config = self.app.reload()
        except ConfigError as exc:
            self.last_reload_error = str(exc)
            log.error("configuration reload rejected; keeping the previous configuration", error=str(exc))
            self.notifier.ready(f"reload rejected: {exc}"[:200])
            return False
        self.reloads += 1
        self.last_reload_error = None
        if self.scheduler is not None:
            self.scheduler.replace(self._schedule(config))
        log.info("configuration reloaded", config=str(config.path))
        self.notifier.ready(self._status_line())
        return True

    # -- the main loop ------------------------------------------------------------------------

    def _schedule(self, config: Config) -> Schedule:
        return Schedule.from_settings(config.section("schedule"), paths.install_id(), file=str(config.path) if config.path else None)

    async def serve(self) -> int:
        from agentd.control import ControlServer
        from agentd.timeline import Timeline, default_path

        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._run_lock = asyncio.Lock()
        os_stop.install(loop, stop=self.request_stop, reload=self.reload)
        with self._loop_lock:
            self._loop = loop
            if self._early_stop:
                self._stop.set()

        try:
            self.timeline = Timeline(default_path())
        except Exception as exc:  # a read-only or full disk: keep the history in memory instead
            log.error("timeline file not usable; keeping it in memory", file=str(default_path()), error=str(exc))
            self.timeline = Timeline(Path(":memory:"))
        self.app.timeline = self.timeline

        self._control = ControlServer(self, path=self.control_path, group=self.settings.control_group)
        await self._control.start()

        await self._await_hooks("agentd_daemon_start", self.settings.hook_timeout_s)

        self.scheduler = Scheduler(self._schedule(self.app.config), state_file=paths.state_dir() / SCHEDULE_STATE, now=self.clock.now())
        self.spawn(self.scheduler.run_forever(self.clock, self._scheduled), name="schedule")
        interval = watchdog_interval_s()
        if interval is not None:
            self.spawn(self._watchdog(interval), name="watchdog")
        if _delivery_module() is not None:  # reports a sink did not take yet: at start, then now and then
            self.spawn(self._flush_now_and_then(), name="spool.flush")
        self.notifier.ready(self._status_line())
        log.info("daemon ready", pid=os.getpid(), control=str(self._control.path))
        from agentd.tls import trust_problem

        trust = trust_problem()
        if trust is not None:  # said once at start; every TLS connection's error names it again
            log.error("TLS connections will fail: fix the service's environment", problem=trust)

        await self._stop.wait()
        return await self._shutdown()

    async def _flush_now_and_then(self) -> None:
        while True:
            await self._flush_spool(self.settings.flush_timeout_s)
            await asyncio.sleep(self.settings.flush_interval_s)

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    async def _await_hooks(self, hook: str, budget_s: float, **kwargs: Any) -> None:
        """Every plugin's awaitable at once, each under ``budget_s``: a slow plugin costs
        its own deadline, not the sum of all of them."""
        budget_s = max(0.05, budget_s)

        async def one(plugin: str, awaitable: Awaitable[Any]) -> None:
            try:
                async with asyncio.timeout(budget_s):
                    await awaitable
            except TimeoutError:
                log.error("plugin daemon hook timed out", plugin=plugin, hook=hook, timeout_s=round(budget_s, 2))
            except Exception as exc:
                log.error("plugin daemon hook failed", plugin=plugin, hook=hook, error=f"{type(exc).__name__}: {exc}")

        pending = self.app.plugins.daemon_hook(hook, self, **kwargs)
        if pending:
            await asyncio.gather(*(one(plugin, awaitable) for plugin, awaitable in pending))

    async def _shutdown(self) -> int:
        budget = self.settings.stop_timeout_s
        deadline = time.monotonic() + budget
        left = lambda: max(0.05, deadline - time.monotonic())  # noqa: E731
        self.notifier.stopping("stopping")
        if self.scheduler is not None:
            for task in list(self._tasks):
                if task.get_name() == "schedule":
                    task.cancel()
        if self._jobs:
            if not self._force:
                log.info("waiting for the running check", timeout_s=round(budget / 2, 1))
                await asyncio.wait(list(self._jobs), timeout=budget / 2)
            for run in list(self._runs):
                run.cancel()  # the job then reports what finished, the rest as errors
            if self._jobs:
                await asyncio.wait(list(self._jobs), timeout=min(1.0, left()))
        await self._control.stop(grace_s=min(1.0, left()))
        if not self._force:
            await self._await_hooks("agentd_daemon_stop", left())
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=min(1.0, left()))
        await self._flush_spool(left())
        if self.timeline is not None:
            self.timeline.close()
        self.app.timeline = None
        self.notifier.close()
        log.info("stopped")
        return 0

    async def _flush_spool(self, timeout_s: float) -> None:
        delivery = _delivery_module()
        flush = getattr(delivery, "flush_spool", None) if delivery else None
        if flush is None:
            return
        try:
            async with asyncio.timeout(timeout_s):
                result = flush(self.app)
                if inspect.isawaitable(result):
                    await result
        except TimeoutError:
            log.warning("spool not flushed before stop; it is kept for the next start", timeout_s=round(timeout_s, 1))
        except Exception as exc:
            log.error("spool flush failed", error=f"{type(exc).__name__}: {exc}")


def _delivery_module() -> Any:
    """agentd.delivery when it exists (built by another part of the project), else None."""
    try:
        return importlib.import_module("agentd.delivery")
    except ModuleNotFoundError:
        return None


def _save_last_report(report: Report) -> str | None:
    """Keep the report for ``agentd status`` after a restart; the problem, if any."""
    try:
        paths.state_dir().mkdir(parents=True, exist_ok=True)
        write_atomic(paths.state_dir() / LAST_REPORT, report.to_json() + "\n")
    except OSError as exc:
        return f"report {report.id} not saved as the last report: {exc.strerror or exc}"
    return None


def _load_last_report() -> Report | None:
    try:
        return Report.from_json((paths.state_dir() / LAST_REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


# -- the commands (wired in agentd/cli.py) -------------------------------------------------


def run_command(app: Any) -> int:
    """``agentd run``."""
    return asyncio.run(Daemon(app).serve())


def status_command(args: argparse.Namespace) -> int:
    """``agentd status``: the daemon's state, or exit 1 when none runs."""
    from agentd.control import ControlClient
    from agentd.errors import ControlError

    client = ControlClient()
    if not client.present():
        print(f"agentd: {_no_daemon(client.path)}")
        return 1
    try:
        status = asyncio.run(client.status())
    except ControlError as exc:
        print(f"agentd: {exc}")
        return 1
    if getattr(args, "json", False):
        print(json.dumps(status, indent=2))
        return 0
    last = status.get("last_report") or {}
    sched = status.get("schedule") or {}
    lines = [
        f"agentd {status['version']} daemon, pid {status['pid']}, up {status['uptime_s']:.0f} s",
        f"config: {status.get('config') or '(defaults)'}; reloads: {status['reloads']}"
        + (f"; last reload rejected: {status['last_reload_error']}" if status.get("last_reload_error") else ""),
        "schedule: " + (f"{' '.join(sched.get('times') or [])} on {' '.join(sched.get('weekdays') or [])}, next {sched.get('next')}"
                        if sched.get("times") else "none"),
        "running: " + (f"{status['running']['profile']} check ({status['running']['trigger']})" if status.get("running") else "nothing"),
        "last report: " + (f"{last['id']} {'ready' if last['ready'] else 'NOT READY'} ({last['profile']}, {last['created']})" if last else "none"),
    ]
    for service, login in sorted((status.get("logins") or {}).items()):
        if isinstance(login, dict):
            lines.append(f"login ({service}): {login.get('summary') or 'none'}")
    steps = status.get("clock_steps") or []
    if steps:
        from agentd.clocks import span

        last_step = steps[-1]
        lines.append(
            f"clock: moved {'forward' if last_step['by_s'] > 0 else 'back'} {span(abs(last_step['by_s']))} at {last_step['at']}"
            + (f" ({len(steps)} steps since start)" if len(steps) > 1 else "")
            + "; the schedule was re-planned from the new time"
        )
    if status.get("timeline"):
        t = status["timeline"]
        lines.append(f"timeline: {t['samples']} samples, {t['events']} events, {t['size_bytes'] / 2**20:.1f} MB, last sample {t['last_sample']}")
    lines += [f"not configured: {line}" for line in status.get("not_configured") or ()]
    print("\n".join(lines))
    return 0


def _no_daemon(address: Path | str) -> str:
    if isinstance(address, Path):
        folder = address.parent
        if folder.is_dir() and not os.access(folder, os.X_OK):  # /run/agentd is 0750: group agentd only
            return f"permission denied on {folder}: ask to be added to the daemon's group"
    return f"no daemon is running (no control socket at {address})"


def reload_command(args: argparse.Namespace) -> int:
    """``agentd reload``: the daemon re-reads its configuration and says whether it took it
    (the unit's ExecReload: no signal-sending binary needed). Exit 0 reloaded, 1 no daemon
    answers, 2 the new file was rejected (the daemon keeps the old one)."""
    from agentd.control import ControlClient
    from agentd.errors import ControlError

    client = ControlClient()
    if not client.present():
        print(f"agentd: {_no_daemon(client.path)}", file=sys.stderr)
        return 1
    try:
        answer = asyncio.run(client.request({"op": "reload"}, timeout_s=30.0))
    except ControlError as exc:
        print(f"agentd: {exc}", file=sys.stderr)
        return 1
    if answer.get("ok"):
        print(f"agentd: configuration reloaded from {answer.get('config') or '(defaults)'}")
        return 0
    if answer.get("rejected"):
        print(f"agentd: reload rejected, the daemon keeps its previous configuration: {answer.get('error')}", file=sys.stderr)
        return 2
    print(f"agentd: {answer.get('error') or 'reload refused'}", file=sys.stderr)
    return 1


async def check_through_daemon(
    args: argparse.Namespace, on_event: EventCallback | None, *, warnings: list[str] | None = None
) -> Report | None:
    """``agentd check`` through a running daemon; None when there is none (run in-process then)."""
    from agentd.control import ControlClient
    from agentd.errors import ControlError

    client = ControlClient()
    if not client.present():
        return None
    try:
        await client.status()
    except ControlError as exc:
        if "permission denied" in str(exc):  # the user can still check in its own process: say why
            print(f"agentd: {exc}; running the check in this process instead", file=sys.stderr)
        else:
            log.info("daemon not answering; running in-process", error=str(exc))
        return None
    from agentd import config as config_mod

    # a file named on purpose (--config, $AGENTD_CONFIG) must be the daemon's; else the daemon's own is used
    path, explicit = config_mod.locate(getattr(args, "config", None))
    upload = bool(getattr(args, "upload", False))
    report = await client.check(
        profile=args.profile,
        only=list(args.only or []),
        deadline_s=args.deadline,
        config=str(path) if path and explicit else None,
        upload=upload,
        on_event=on_event,
        warnings=warnings,
    )
    if report is not None and upload:
        # the daemon delivered it, with the service's own credentials: the CLI must not again
        args.upload = False
    return report
