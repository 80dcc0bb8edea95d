"""Where agentd keeps things. systemd's directories win when the service runs under it.

Nothing here creates a folder on import; callers create what they write to.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import platformdirs

APP = "agentd"


def _systemd_dir(variable: str) -> Path | None:
    # systemd may pass several colon-separated folders; the first is ours
    value = os.environ.get(variable)
    return Path(value.split(":")[0]) if value else None


def config_dir() -> Path:
    return _systemd_dir("CONFIGURATION_DIRECTORY") or Path(platformdirs.user_config_dir(APP))


def site_config_dir() -> Path:
    """The system-wide folder a package installs its configuration in (/etc/agentd on Linux)."""
    if sys.platform.startswith("linux") or (os.name == "posix" and sys.platform != "darwin"):
        return Path("/etc/agentd")
    return Path(platformdirs.site_config_dir(APP))


def state_dir() -> Path:
    override = os.environ.get("AGENTD_STATE_DIR")
    if override:
        return Path(override)
    return _systemd_dir("STATE_DIRECTORY") or Path(platformdirs.user_state_dir(APP))


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
    return Path(platformdirs.user_runtime_dir(APP))


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
