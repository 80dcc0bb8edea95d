"""When the kernel took in the last datagram a socket returned: a probe's arrival time that
does not include how long this process took to get round to reading it.

Linux: ``SIOCGSTAMPNS`` (the receive timestamp of the last datagram read from the socket;
:func:`enable` turns timestamping on for the socket once). Elsewhere (Windows, macOS) no
such call exists here: :func:`last_arrival` says None and the caller reads its own clock.
On a busy PC the difference is the point: a probe read 5 ms late by a loaded event loop
was not 5 ms late on the network, and RFC 3550 jitter counts every such millisecond.
"""

from __future__ import annotations

import struct
import sys
import time

SIOCGSTAMPNS = 0x8907
_TIMESPEC = struct.Struct("@qq")

if sys.platform == "win32":  # pragma: no cover - Windows reads its own clock
    fcntl = None
else:
    import fcntl

_STAMPS = sys.platform.startswith("linux")  # SIOCGSTAMPNS is Linux's; macOS reads its own clock too


def _stamp(fd: int) -> float | None:
    try:
        raw = fcntl.ioctl(fd, SIOCGSTAMPNS, bytes(_TIMESPEC.size))
    except (OSError, ValueError):
        return None
    sec, nsec = _TIMESPEC.unpack(raw)
    return None if sec <= 0 else sec + nsec / 1e9


def enable(sock) -> bool:
    """Turn receive timestamps on for ``sock`` (anything with ``fileno()``); False where they cannot be had."""
    if not _STAMPS or fcntl is None or sock is None:
        return False
    try:
        fd = sock.fileno()
    except (OSError, ValueError, AttributeError):
        return False
    # the first call enables SOCK_TIMESTAMP on the socket; the kernel turns stamping on from a
    # work queue, so the first datagrams may come unstamped: then the stamp reads as the time
    # of the read, which is no worse than the caller's own clock
    _stamp(fd)
    return True


def last_arrival(sock, *, max_age_s: float = 2.0) -> float | None:
    """The kernel's arrival time of the datagram just read from ``sock``, on the
    ``time.monotonic()`` clock; None when not known (or implausible: in the future, or
    older than ``max_age_s``, e.g. a socket whose timestamps were never enabled)."""
    if not _STAMPS or fcntl is None or sock is None:
        return None
    try:
        fd = sock.fileno()
    except (OSError, ValueError, AttributeError):
        return None
    stamp = _stamp(fd)
    if stamp is None:
        return None
    wall, mono = time.time(), time.monotonic()
    age = wall - stamp
    if not 0.0 <= age <= max_age_s:
        return None
    return mono - age
