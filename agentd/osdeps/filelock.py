"""One exclusive, non-blocking lock on an open file, released by the OS when its holder dies.

POSIX: ``flock`` on the whole file. Windows: ``msvcrt.locking`` on the file's first byte
(Windows locks byte ranges, also past the end of an empty file; a killed process's locks
are released by the kernel like ``flock``'s). The standard library covers both, so no
lock library is needed for a one-file, one-function use.
"""

from __future__ import annotations

import errno
import os
import sys

if sys.platform == "win32":
    import msvcrt

    def try_lock(fd: int) -> bool:
        """True when this process now holds the lock; False when another one does."""
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EDEADLK):  # held by another handle
                return False
            raise

    def unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def try_lock(fd: int) -> bool:
        """True when this process now holds the lock; False when another one does."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise

    def unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
