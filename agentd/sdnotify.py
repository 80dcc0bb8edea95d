"""systemd's notify protocol over ``$NOTIFY_SOCKET``, without a dependency.

A unit with ``Type=notify`` waits for ``READY=1``; ``WatchdogSec=`` expects
``WATCHDOG=1`` more often than ``$WATCHDOG_USEC`` (we send at half of it); ``STOPPING=1``
and ``RELOADING=1`` tell it what the service does; ``STATUS=...`` shows in
``systemctl status``. The socket is a Unix datagram socket, either a path or an
abstract address written with a leading ``@``. Outside systemd (no variable) every call
is a no-op, so the daemon runs the same in a terminal.
"""

from __future__ import annotations

import os
import socket

import structlog

log = structlog.get_logger("agentd.sdnotify")


def _address(value: str) -> str | bytes:
    # '@name' is an abstract socket: the kernel name starts with a NUL byte
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


class Notifier:
    """Sends state lines to systemd. Never raises: a lost notification must not stop the daemon."""

    def __init__(self, socket_path: str | None = None) -> None:
        self.address = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET") or None
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *states: str) -> bool:
        """Send ``KEY=value`` lines as one datagram; True when it was sent."""
        if not self.address:
            return False
        message = "\n".join(states).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message, _address(self.address))
            return True
        except OSError as exc:
            log.warning("systemd notification not sent", socket=self.address, error=str(exc))
            return False

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        return self.notify("RELOADING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval_s() -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds when the watchdog is meant for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None  # the variable was inherited from a parent it was meant for
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2 / 1_000_000 if value > 0 else None
