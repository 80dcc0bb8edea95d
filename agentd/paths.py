"""Where agentd keeps things. systemd's directories win when the service runs under it.

On Windows platformdirs decides: a user's own run keeps its state in
``%LOCALAPPDATA%\\agentd``; the service (``AGENTD_SERVICE=1``, set by the service host)
keeps configuration, state and logs in ``%ProgramData%\\agentd``. On macOS the launchd
daemon names its folders in its plist (``AGENTD_STATE_DIR`` and friends).

Nothing here creates a folder on import; callers create what they write to.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import platformdirs

APP = "agentd"
SERVICE_ENV = "AGENTD_SERVICE"


def service_mode() -> bool:
    """Running as the machine's service (the Windows service host sets ``AGENTD_SERVICE=1``)."""
    return os.environ.get(SERVICE_ENV) == "1"


def _windows_service_dir() -> Path | None:
    # %ProgramData%\agentd: one folder for the machine's service, whoever its account is
    if sys.platform == "win32" and service_mode():
        return Path(platformdirs.site_data_dir(APP, appauthor=False))
    return None


def _systemd_dir(variable: str) -> Path | None:
    # systemd may pass several colon-separated folders; the first is ours
    value = os.environ.get(variable)
    return Path(value.split(":")[0]) if value else None


def config_dir() -> Path:
    return (_systemd_dir("CONFIGURATION_DIRECTORY") or _windows_service_dir()
            or Path(platformdirs.user_config_dir(APP, appauthor=False)))


def site_config_dir() -> Path:
    """The system-wide folder a package installs its configuration in (/etc/agentd on Linux)."""
    if sys.platform.startswith("linux") or (os.name == "posix" and sys.platform != "darwin"):
        return Path("/etc/agentd")
    return Path(platformdirs.site_config_dir(APP, appauthor=False))  # %ProgramData%\agentd on Windows


def state_dir() -> Path:
    override = os.environ.get("AGENTD_STATE_DIR")
    if override:
        return Path(override)
    return (_systemd_dir("STATE_DIRECTORY") or _windows_service_dir()
            or Path(platformdirs.user_state_dir(APP, appauthor=False)))


def runtime_dir() -> Path:
    override = os.environ.get("AGENTD_RUNTIME_DIR")
    if override:
        return Path(override)
    found = _systemd_dir("RUNTIME_DIRECTORY")
    if found:
        return found
    if os.name == "posix" and sys.platform != "darwin" and not os.environ.get("XDG_RUNTIME_DIR"):
        # a root shell or a service without a login session: platformdirs would warn and
        # fall back to /tmp/runtime-<uid>; the system daemon's folder is the better guess
        return Path("/run/agentd") if os.geteuid() == 0 else state_dir() / "run"
    service = _windows_service_dir()
    if service is not None:
        return service / "run"
    return Path(platformdirs.user_runtime_dir(APP, appauthor=False))


def install_id() -> str:
    """A stable random id for this installation (sent as X-Genesys-Client-Id, in reports).

    Created on first use in the state directory; if that cannot be written, a per-process
    id is used so that a read-only PC still runs checks.
    """
    path = state_dir() / "install-id"
    try:
        value = path.read_text(encoding="utf-8").strip()
        if value:
            return value
    except OSError:
        pass
    value = f"agentd-{uuid.uuid4()}"
    try:
        from agentd.fileio import write_atomic

        write_atomic(path, value + "\n")
    except OSError:
        pass
    return value
