"""How a running daemon is asked to stop or to re-read its configuration.

POSIX: SIGTERM and SIGINT stop, SIGHUP reloads (the loop's signal handlers). Windows has
no SIGTERM or SIGHUP for a console program: Ctrl-C (SIGINT) and Ctrl-Break (SIGBREAK)
stop it, and the service manager's stop request reaches the daemon through
``Daemon.request_stop_threadsafe`` (agentd/winservice.py). Signal handlers can only be
set from the main thread; the Windows service runs the daemon in another one, where only
the service manager can stop it.
"""

from __future__ import annotations

import signal
import sys
import threading
from asyncio import AbstractEventLoop
from typing import Callable


def install(loop: AbstractEventLoop, *, stop: Callable[[], None], reload: Callable[[], None]) -> None:
    """Route the OS's stop and reload requests to ``stop`` and ``reload`` on ``loop``
    (for the loop's life: closing it drops them on POSIX; on Windows the process ends)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if sys.platform == "win32":

        def handler(signum: int, frame: object) -> None:
            loop.call_soon_threadsafe(stop)

        for sig in (signal.SIGINT, signal.SIGBREAK):
            signal.signal(sig, handler)
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    loop.add_signal_handler(signal.SIGHUP, reload)
