"""agentd as a Windows service, through pywin32: registration with the Service Control
Manager, and the host the SCM starts (``python.exe -m agentd service host``).

The host runs the same :class:`~agentd.daemon.Daemon` as ``agentd run``. What systemd
learns from ``READY=1`` and ``STOPPING=1`` the SCM learns here: START_PENDING while the
daemon starts, RUNNING once it is ready (control pipe listening, plugins started),
STOP_PENDING with the stop budget as wait hint while it stops, STOPPED when it is done.
A daemon that dies reports STOPPED with an error code, and the recovery actions set at
install restart it. Logs go to ``%ProgramData%\\agentd\\agentd.log`` and, from warnings
up plus start and stop, to the Application event log (source ``agentd``).

The SCM runs ``python.exe -m agentd.winservice host``, which hands the process to the
service dispatcher before anything heavy is imported (the SCM waits 30 s for that).
The service is hosted by ``python.exe`` itself (``servicemanager.PrepareToHostSingle``),
not by pywin32's ``pythonservice.exe``, so the embeddable CPython needs nothing
registered beyond the service. Windows-only module.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any

import pywintypes
import servicemanager
import win32service
import win32serviceutil

from agentd import paths
from agentd.redact import redact_text

# asyncio, logging and the daemon are imported only once the dispatcher has the process
# (SvcRun): under a loaded PC (or Wine) importing them first can pass the SCM's deadline.

SERVICE_NAME = "agentd"
DISPLAY_NAME = "agentd softphone readiness"
DESCRIPTION = "Checks this PC's path to Genesys Cloud's media and signaling edge before and during shifts."
LOG_FILE = "agentd.log"
RESTART_DELAYS_MS = (5_000, 30_000, 120_000)
"""Recovery: restart after 5 s, then 30 s, then 2 min; the count resets after a day."""
RESET_PERIOD_S = 86_400


# -- registration -----------------------------------------------------------------------------


def command_line(config: str | None = None) -> str:
    """What the SCM runs: this very python.exe, so the service uses the folder it was installed from."""
    exe = sys.executable
    if os.path.basename(exe).lower() == "pythonw.exe":
        exe = os.path.join(os.path.dirname(exe), "python.exe")
    # agentd.winservice, not agentd: the SCM gives a service 30 s to connect, the full CLI imports too much first
    parts = [exe, "-m", "agentd.winservice", "host"] + (["--config", os.path.abspath(config)] if config else [])
    return subprocess.list2cmdline(parts)


def _scm(access: int = win32service.SC_MANAGER_ALL_ACCESS) -> Any:
    return win32service.OpenSCManager(None, None, access)


def install(config: str | None = None, *, start_type: str = "auto") -> list[str]:
    """Register the service (LocalSystem, automatic start, restart on failure) and the
    event log source. Returns what was done, one line each."""
    done = []
    start = {"auto": win32service.SERVICE_AUTO_START, "demand": win32service.SERVICE_DEMAND_START}[start_type]
    scm = _scm()
    try:
        handle = win32service.CreateService(
            scm, SERVICE_NAME, DISPLAY_NAME, win32service.SERVICE_ALL_ACCESS,
            win32service.SERVICE_WIN32_OWN_PROCESS, start, win32service.SERVICE_ERROR_NORMAL,
            command_line(config), None, 0, None, None, None,
        )
        done.append(f"service {SERVICE_NAME} registered: {command_line(config)}")
        try:
            win32service.ChangeServiceConfig2(handle, win32service.SERVICE_CONFIG_DESCRIPTION, DESCRIPTION)
            done.append(set_recovery(handle))
        finally:
            win32service.CloseServiceHandle(handle)
    finally:
        win32service.CloseServiceHandle(scm)
    try:
        register_event_source()
        done.append("event log source agentd registered (Application log)")
    except pywintypes.error as exc:
        done.append(f"event log source not registered: {exc.strerror}")
    return done


def set_recovery(handle: Any) -> str:
    actions = [(win32service.SC_ACTION_RESTART, delay) for delay in RESTART_DELAYS_MS]
    win32service.ChangeServiceConfig2(
        handle, win32service.SERVICE_CONFIG_FAILURE_ACTIONS,
        {"ResetPeriod": RESET_PERIOD_S, "RebootMsg": None, "Command": None, "Actions": actions},
    )
    said = "recovery: restart after " + ", ".join(f"{d // 1000} s" for d in RESTART_DELAYS_MS)
    try:  # a daemon that exits with an error (not only a crash) counts as a failure too
        win32service.ChangeServiceConfig2(handle, win32service.SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, True)
    except pywintypes.error as exc:
        if exc.winerror != 124:  # ERROR_INVALID_LEVEL: Wine's service manager lacks this setting
            raise
        return said + " (crashes only: this service manager does not know SERVICE_CONFIG_FAILURE_ACTIONS_FLAG)"
    return said + ", also after an exit with an error"


def recovery_actions() -> list[tuple[int, int]]:
    """The failure actions the SCM holds for the service, as (action, delay ms)."""
    scm = _scm(win32service.SC_MANAGER_CONNECT)
    try:
        handle = win32service.OpenService(scm, SERVICE_NAME, win32service.SERVICE_QUERY_CONFIG)
        try:
            config = win32service.QueryServiceConfig2(handle, win32service.SERVICE_CONFIG_FAILURE_ACTIONS)
        finally:
            win32service.CloseServiceHandle(handle)
    finally:
        win32service.CloseServiceHandle(scm)
    return list((config or {}).get("Actions") or [])


def register_event_source() -> None:
    import win32evtlogutil

    # servicemanager's message table renders the service's messages in the event viewer
    win32evtlogutil.AddSourceToRegistry(SERVICE_NAME, servicemanager.__file__, "Application")


def uninstall() -> list[str]:
    done = []
    if state() not in ("stopped", None):
        done.extend(stop())
    win32serviceutil.RemoveService(SERVICE_NAME)
    done.append(f"service {SERVICE_NAME} removed")
    try:
        import win32evtlogutil

        win32evtlogutil.RemoveSourceFromRegistry(SERVICE_NAME, "Application")
    except pywintypes.error:
        pass  # never registered: nothing to remove
    return done


STATES = {
    win32service.SERVICE_STOPPED: "stopped",
    win32service.SERVICE_START_PENDING: "starting",
    win32service.SERVICE_STOP_PENDING: "stopping",
    win32service.SERVICE_RUNNING: "running",
    win32service.SERVICE_CONTINUE_PENDING: "continuing",
    win32service.SERVICE_PAUSE_PENDING: "pausing",
    win32service.SERVICE_PAUSED: "paused",
}


def query() -> dict[str, Any] | None:
    """State, pid and exit codes; None when the service is not installed."""
    scm = _scm(win32service.SC_MANAGER_CONNECT)
    try:
        try:
            handle = win32service.OpenService(scm, SERVICE_NAME, win32service.SERVICE_QUERY_STATUS | win32service.SERVICE_QUERY_CONFIG)
        except pywintypes.error as exc:
            if exc.winerror == 1060:  # ERROR_SERVICE_DOES_NOT_EXIST
                return None
            raise
        try:
            status = win32service.QueryServiceStatusEx(handle)
            config = win32service.QueryServiceConfig(handle)
        finally:
            win32service.CloseServiceHandle(handle)
    finally:
        win32service.CloseServiceHandle(scm)
    return {
        "name": SERVICE_NAME,
        "state": STATES.get(status["CurrentState"], str(status["CurrentState"])),
        "pid": status.get("ProcessId") or None,
        "exit_code": status.get("Win32ExitCode"),
        "service_exit_code": status.get("ServiceSpecificExitCode"),
        "command": config[3],
        "start": {win32service.SERVICE_AUTO_START: "auto", win32service.SERVICE_DEMAND_START: "demand",
                  win32service.SERVICE_DISABLED: "disabled"}.get(config[1], str(config[1])),
    }


def state() -> str | None:
    found = query()
    return found["state"] if found else None


def _wait_for(wanted: str, timeout_s: float) -> str | None:
    deadline = time.monotonic() + timeout_s
    current = state()
    while current != wanted and time.monotonic() < deadline:
        time.sleep(0.25)
        current = state()
    return current


def start(timeout_s: float = 60.0) -> list[str]:
    win32serviceutil.StartService(SERVICE_NAME)
    reached = _wait_for("running", timeout_s)
    if reached != "running":
        raise RuntimeError(f"service {SERVICE_NAME} did not reach running within {timeout_s:g} s (it is {reached})")
    return [f"service {SERVICE_NAME} running"]


def stop(timeout_s: float = 60.0) -> list[str]:
    found = query()
    if found is not None and found["state"] == "stopped":
        return [f"service {SERVICE_NAME} already stopped"]
    deadline = time.monotonic() + timeout_s
    win32serviceutil.StopService(SERVICE_NAME)
    reached = _wait_for("stopped", timeout_s)
    if reached != "stopped":
        raise RuntimeError(f"service {SERVICE_NAME} did not stop within {timeout_s:g} s (it is {reached})")
    done = [f"service {SERVICE_NAME} stopped"]
    # The SCM says STOPPED before the host process has exited; until it has, its python.exe
    # and DLLs are in use and an uninstaller cannot delete them.
    pid = (found or {}).get("pid")
    if pid and not _process_exited(pid, max(1.0, deadline - time.monotonic())):
        done.append(f"its process {pid} is still running")
    return done


def _process_exited(pid: int, timeout_s: float) -> bool:
    import win32api
    import win32con
    import win32event

    try:
        handle = win32api.OpenProcess(win32con.SYNCHRONIZE, False, pid)
    except pywintypes.error:
        return True  # no such process (any more)
    try:
        return win32event.WaitForSingleObject(handle, int(timeout_s * 1000)) == win32event.WAIT_OBJECT_0
    finally:
        win32api.CloseHandle(handle)


# -- the host the SCM runs ------------------------------------------------------------------------


class ScmNotifier:
    """The daemon's notifier (agentd/sdnotify.py's interface), reporting to the SCM."""

    enabled = True

    def __init__(self, service: AgentdService) -> None:
        self.service = service

    def notify(self, *states: str) -> bool:
        return True  # RELOADING/STATUS lines have no SCM counterpart

    def ready(self, status: str | None = None) -> bool:
        if not self.service.running_reported:
            self.service.running_reported = True
            self.service.ReportServiceStatus(win32service.SERVICE_RUNNING)
            servicemanager.LogMsg(servicemanager.EVENTLOG_INFORMATION_TYPE, servicemanager.PYS_SERVICE_STARTED,
                                  (SERVICE_NAME, ""))
        return True

    def status(self, text: str) -> bool:
        return True

    def watchdog(self) -> bool:
        return True

    def stopping(self, status: str | None = None) -> bool:
        budget_ms = int((self.service.stop_budget_s + 5) * 1000)
        self.service.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=budget_ms)
        return True

    def reloading(self) -> bool:
        return True

    def close(self) -> None:
        pass


class AgentdService(win32serviceutil.ServiceFramework):
    _svc_name_ = SERVICE_NAME
    _svc_display_name_ = DISPLAY_NAME
    _svc_description_ = DESCRIPTION
    config: str | None = None

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self.daemon: Any = None
        self.running_reported = False
        self.stop_budget_s = 4.0
        self.stop_requested = threading.Event()

    def SvcStop(self) -> None:  # noqa: N802 (pywin32's name)
        self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=int((self.stop_budget_s + 5) * 1000))
        self.stop_requested.set()
        if self.daemon is not None:
            self.daemon.request_stop_threadsafe()

    def SvcRun(self) -> None:  # noqa: N802
        import logging
        import traceback

        self.ReportServiceStatus(win32service.SERVICE_START_PENDING, waitHint=60_000)
        log = logging.getLogger("agentd.service")
        try:
            code = self._serve()
        except Exception as exc:
            if logging.getLogger().handlers:
                log.error("service failed: %s: %s", type(exc).__name__, exc, exc_info=True)
            else:  # it failed before logging was set up: the file still says why
                _append_to_log_file(f"agentd service failed before logging started:\n{traceback.format_exc()}")
            servicemanager.LogErrorMsg(f"agentd failed: {type(exc).__name__}: {exc}")
            raise  # pywin32 reports STOPPED with an error: the recovery actions restart us
        servicemanager.LogMsg(servicemanager.EVENTLOG_INFORMATION_TYPE, servicemanager.PYS_SERVICE_STOPPED, (SERVICE_NAME, ""))
        if code:
            raise SystemExit(code)

    def _serve(self) -> int:
        import asyncio

        from agentd.app import App
        from agentd.daemon import Daemon

        configure_logging("info")  # before the configuration loads: its complaints go to the file too
        app = App.load(self.config)
        configure_logging(app.config.core.log_level)
        daemon = Daemon(app, notifier=ScmNotifier(self))
        self.stop_budget_s = daemon.settings.stop_timeout_s
        self.daemon = daemon
        if self.stop_requested.is_set():
            daemon.request_stop_threadsafe()
        loop = asyncio.ProactorEventLoop()  # the control pipe needs it; this thread is not the main one
        try:
            return loop.run_until_complete(daemon.serve())
        finally:
            loop.close()


def _append_to_log_file(text: str) -> None:
    try:
        folder = paths.state_dir()
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / LOG_FILE, "a", encoding="utf-8") as handle:
            handle.write(redact_text(text) + "\n")
    except OSError:
        pass


def configure_logging(level: str) -> None:
    """The log file in the state folder (a service has no console), and warnings up in
    the event log too."""
    import logging
    import logging.handlers

    from agentd import logs

    folder = paths.state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stream = open(folder / LOG_FILE, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (kept for the process)
    # a service has no console: sys.stdout and sys.stderr are None, and a stray print would raise
    sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    sys.stderr = stream
    logs.configure(level, json=True, stream=stream)
    root = logging.getLogger()
    ours = next((h for h in root.handlers if h.get_name() == "agentd"), None)
    try:
        events = logging.handlers.NTEventLogHandler(SERVICE_NAME)
    except Exception as exc:  # no event log service: the file still has everything
        logging.getLogger("agentd.service").warning("event log not available: %s", exc)
        return
    events.setLevel(logging.WARNING)
    events.set_name("agentd-eventlog")
    if ours is not None:
        events.setFormatter(ours.formatter)
    for old in [h for h in root.handlers if h.get_name() == "agentd-eventlog"]:
        root.removeHandler(old)
    root.addHandler(events)


def host(config: str | None) -> int:
    """What the SCM runs: hand this process to the service dispatcher."""
    os.environ[paths.SERVICE_ENV] = "1"  # %ProgramData%\agentd for configuration, state and logs
    AgentdService.config = config
    servicemanager.Initialize(SERVICE_NAME, servicemanager.__file__)
    servicemanager.PrepareToHostSingle(AgentdService)
    try:
        servicemanager.StartServiceCtrlDispatcher()
    except pywintypes.error as exc:
        if exc.winerror == 1063:  # ERROR_FAILED_SERVICE_CONTROLLER_CONNECT: started from a console
            print("agentd: `agentd service host` is what the service manager runs; use `agentd run` in a console", file=sys.stderr)
            return 2
        raise
    return 0

