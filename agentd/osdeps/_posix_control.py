"""The control channel on Linux and macOS: a Unix socket file, mode 0660.

The kernel refuses anyone outside owner and group at ``connect()``; the server also
checks the peer's credentials (``SO_PEERCRED`` on Linux, ``getpeereid`` via
``LOCAL_PEERCRED`` on macOS) and answers a stranger with an error. POSIX-only module.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import socket
import stat
import struct
import sys
from pathlib import Path
from typing import Awaitable, Callable

import structlog

from agentd import paths
from agentd.errors import ControlError

log = structlog.get_logger("agentd.control")

SOCKET_NAME = "control.sock"
SYSTEM_SOCKET = Path("/run/agentd") / SOCKET_NAME
"""Where the packaged service listens (systemd ``RuntimeDirectory=agentd``)."""

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def server_address() -> Path:
    return paths.runtime_dir() / SOCKET_NAME


def client_address() -> Path:
    """The socket a CLI should talk to: this user's daemon if one runs, else the system
    service's (a user's own runtime folder differs from the service's ``/run/agentd``)."""
    own = server_address()
    if own.exists() or os.environ.get("AGENTD_RUNTIME_DIR") or os.environ.get("RUNTIME_DIRECTORY"):
        return own
    try:
        return SYSTEM_SOCKET if SYSTEM_SOCKET.exists() else own
    except PermissionError:  # /run/agentd is the group's: say so when connecting, not with a traceback
        return SYSTEM_SOCKET


def present(address: Path | str) -> bool:
    try:
        return stat.S_ISSOCK(Path(address).stat().st_mode)
    except OSError:
        return False


# -- who is at the other end -----------------------------------------------------------------


XUCRED = struct.Struct("IIh2x16I")
"""macOS ``struct xucred``: version, uid, ngroups, then up to 16 gids (the first the effective one)."""
SOL_LOCAL, LOCAL_PEERCRED = 0, 0x001


def parse_xucred(data: bytes) -> tuple[int, set[int]]:
    """(uid, groups) from what ``getsockopt(SOL_LOCAL, LOCAL_PEERCRED)`` returns on macOS."""
    _version, uid, ngroups, *gids = XUCRED.unpack_from(data)
    return uid, set(gids[: max(0, min(ngroups, 16))])


def peer_identity(sock: socket.socket) -> tuple[int, set[int]]:
    """(uid, groups) of the process at the other end."""
    if sys.platform == "darwin":  # getpeereid(3) and the groups with it
        return parse_xucred(sock.getsockopt(SOL_LOCAL, LOCAL_PEERCRED, XUCRED.size))
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid, {gid} | peer_groups(pid)


def peer_groups(pid: int) -> set[int]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Groups:"):
                return {int(g) for g in line.split()[1:]}
    except (OSError, ValueError):
        pass
    return set()


class Listener:
    """A listening control socket; ``check_peer`` says whether a connection may be served."""

    def __init__(self, address: Path, group: str | None) -> None:
        self.address = Path(address)
        self.group = group
        self.gid = os.getegid()
        self._server: asyncio.AbstractServer | None = None

    async def start(self, handler: Handler, *, limit: int) -> None:
        self.address.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale()
        old_umask = os.umask(0o117)  # the socket is born 0660: no window where others may connect
        try:
            self._server = await asyncio.start_unix_server(handler, path=str(self.address), limit=limit)
        finally:
            os.umask(old_umask)
        if self.group:
            try:
                self.gid = grp.getgrnam(self.group).gr_gid
                os.chown(self.address, -1, self.gid)
            except (KeyError, PermissionError) as exc:
                log.warning("control socket group not set", group=self.group, error=str(exc))
        os.chmod(self.address, 0o660)

    def _remove_stale(self) -> None:
        try:
            mode = self.address.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ControlError(f"{self.address} exists and is not a socket; remove it or choose another runtime directory")
        if _answers(self.address):
            raise ControlError(f"another agentd daemon already listens on {self.address}")
        self.address.unlink()

    def check_peer(self, writer: asyncio.StreamWriter) -> tuple[bool, str]:
        sock = writer.get_extra_info("socket")
        try:
            uid, groups = peer_identity(sock)
        except OSError as exc:
            return False, f"peer credentials unavailable: {exc}"
        if uid in (0, os.geteuid()) or self.gid in groups:
            return True, ""
        return False, f"uid {uid} is neither the daemon's user nor in its group"

    def peer_account(self, writer: asyncio.StreamWriter) -> dict:
        """Who is at the other end: ``{"uid", "user"}`` (``agentd login`` notes whose login the daemon holds)."""
        try:
            uid, _ = peer_identity(writer.get_extra_info("socket"))
        except (OSError, TypeError):
            return {"uid": None, "user": None}
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = None
        return {"uid": uid, "user": name}

    def close(self) -> None:
        """No new connections (those being served go on)."""
        if self._server is not None:
            self._server.close()
            self._server = None

    def remove(self) -> None:
        try:
            self.address.unlink()
        except FileNotFoundError:
            pass


def _answers(path: Path, timeout_s: float = 0.5) -> bool:
    """Is a live daemon behind this socket file? (a leftover of a crashed one is not)"""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        sock.close()


async def connect(address: Path | str, *, limit: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Raises PermissionError when the socket refuses us, OSError when nothing listens."""
    return await asyncio.open_unix_connection(str(address), limit=limit)
