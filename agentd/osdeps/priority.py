"""A background thread that yields the CPU to the rest of its process.

Linux: ``setpriority`` on the calling thread's id lowers that thread alone (and the
threads it starts, such as libargon2's lanes, inherit it). Elsewhere, including macOS
(where the call would lower the whole process) and Windows: nothing, and False.
"""

from __future__ import annotations

import os
import sys
import threading


def lower_this_thread(niceness: int = 10) -> bool:
    """Lower the calling thread's CPU priority by ``niceness``; True when it was done."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, os.getpriority(os.PRIO_PROCESS, 0) + niceness))
    except (OSError, AttributeError):
        return False
    return True
