"""Writing files so that a reader, or a crash, never sees half of one."""

from __future__ import annotations

import os
from pathlib import Path

TMP_PREFIX = ".tmp-"
"""Temporary files start with this; a folder's leftovers of a killed process are recognisable."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (it owns the leftover it named). Another user's
    process counts as alive: kill(0) is refused, not answered with "no such process"."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | str, *, mode: int | None = None, durable: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync, rename.

    ``mode`` (e.g. 0o600 for tokens) is set on the temporary file before any byte is
    written, so the content is never readable with a wider mode. ``durable`` also syncs
    the folder, so the rename itself survives a power cut (the spool needs that).
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if mode is None else mode)
    try:
        if mode is not None:
            os.fchmod(fd, mode)  # the umask must not widen it, nor an old leftover's mode
        view = memoryview(payload)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    if mode is None:
        os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
