"""The control channel on Windows: a named pipe served by asyncio's proactor loop.

Who may connect: every pipe instance is created with a security descriptor whose DACL
grants SYSTEM, Administrators and the daemon's own user full access and the configured
helpdesk group (``[daemon] control_group``) read and write. Windows refuses anyone else
when the client opens the pipe. The group gets ``FILE_WRITE_DATA`` but not
``FILE_CREATE_PIPE_INSTANCE``, so a member cannot put up an instance of its own under
our name; ``FILE_FLAG_FIRST_PIPE_INSTANCE`` makes the daemon refuse to start on a name
somebody else already holds. The server also checks the client's token (impersonating it
for one call) and answers a stranger with an error, as SO_PEERCRED does on Linux.

asyncio's own ``start_serving_pipe`` creates its instances with a NULL security
descriptor (the default DACL lets Everyone read), so the accept loop is repeated here
with a PipeServer that passes ours. Windows-only module (pywin32).
"""

from __future__ import annotations

import asyncio
import getpass
import os
from asyncio import windows_events, windows_utils
from typing import Any, Awaitable, Callable

import _winapi
import pywintypes
import structlog
import win32api
import win32con
import win32pipe
import win32security
import winerror

from agentd import paths
from agentd.errors import ControlError

log = structlog.get_logger("agentd.control")

SERVICE_PIPE = r"\\.\pipe\agentd"
"""Where the Windows service listens."""

# FILE_GENERIC_READ | FILE_WRITE_DATA: read and write, but no FILE_CREATE_PIPE_INSTANCE
HELPDESK_RIGHTS = 0x0012008B
PIPE_REJECT_REMOTE_CLIENTS = 0x00000008

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def server_address() -> str:
    override = os.environ.get("AGENTD_CONTROL_PIPE")
    if override:
        return override
    if paths.service_mode():
        return SERVICE_PIPE
    return f"{SERVICE_PIPE}-{getpass.getuser()}"  # a daemon run by hand, in a user's session


def client_address() -> str:
    """This user's own daemon if one runs, else the service's."""
    own = server_address()
    if os.environ.get("AGENTD_CONTROL_PIPE") or present(own):
        return own
    return SERVICE_PIPE if present(SERVICE_PIPE) else own


def present(address: str) -> bool:
    """Is a pipe of that name there? WaitNamedPipe asks without taking an instance."""
    try:
        win32pipe.WaitNamedPipe(str(address), 1)
        return True
    except pywintypes.error as exc:
        return exc.winerror not in (winerror.ERROR_FILE_NOT_FOUND, winerror.ERROR_BAD_PATHNAME)


# -- who may connect ----------------------------------------------------------------------------

SYSTEM_SID = "S-1-5-18"
ADMINISTRATORS_SID = "S-1-5-32-544"


def own_user_sid() -> Any:
    token = win32security.OpenProcessToken(win32api.GetCurrentProcess(), win32con.TOKEN_QUERY)
    return win32security.GetTokenInformation(token, win32security.TokenUser)[0]


def group_sid(name: str) -> Any | None:
    try:
        return win32security.LookupAccountName(None, name)[0]
    except pywintypes.error as exc:
        log.warning("control pipe group not found; only SYSTEM, Administrators and the daemon's user may connect",
                    group=name, error=exc.strerror)
        return None


def pipe_sddl(owner_sid: str, helpdesk_sid: str | None) -> str:
    """The pipe's DACL, protected from inheritance (``D:P``)."""
    aces = [f"(A;;GA;;;{SYSTEM_SID})", f"(A;;GA;;;{ADMINISTRATORS_SID})", f"(A;;GA;;;{owner_sid})"]
    if helpdesk_sid:
        aces.append(f"(A;;0x{HELPDESK_RIGHTS:08x};;;{helpdesk_sid})")
    return "D:P" + "".join(aces)


class _SecuredPipeServer(windows_events.PipeServer):
    """asyncio's PipeServer, its instances created with our security attributes."""

    def __init__(self, address: str, security: Any) -> None:
        self._security = security
        super().__init__(address)

    def _server_pipe_handle(self, first: bool) -> Any:
        if self.closed():
            return None
        flags = _winapi.PIPE_ACCESS_DUPLEX | _winapi.FILE_FLAG_OVERLAPPED
        if first:
            flags |= _winapi.FILE_FLAG_FIRST_PIPE_INSTANCE
        try:
            handle = win32pipe.CreateNamedPipe(
                self._address, flags,
                _winapi.PIPE_TYPE_MESSAGE | _winapi.PIPE_READMODE_MESSAGE | _winapi.PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
                _winapi.PIPE_UNLIMITED_INSTANCES, windows_utils.BUFSIZE, windows_utils.BUFSIZE,
                0, self._security,
            )
        except pywintypes.error as exc:
            raise OSError(exc.winerror, exc.strerror, self._address, exc.winerror) from None
        pipe = windows_utils.PipeHandle(handle.Detach())
        self._free_instances.add(pipe)
        return pipe


class Listener:
    """A listening control pipe; ``check_peer`` says whether a connection may be served."""

    def __init__(self, address: str, group: str | None) -> None:
        self.address = str(address)
        self.group = group
        self._server: _SecuredPipeServer | None = None
        self._allowed_sids: list[Any] = []
        self._own_sid: Any = None

    async def start(self, handler: Handler, *, limit: int) -> None:
        loop = asyncio.get_running_loop()
        if not isinstance(loop, asyncio.ProactorEventLoop):
            raise ControlError("the control pipe needs asyncio's proactor event loop (the default on Windows)")
        self._own_sid = own_user_sid()
        helpdesk = group_sid(self.group) if self.group else None
        self._allowed_sids = [win32security.ConvertStringSidToSid(SYSTEM_SID),
                              win32security.ConvertStringSidToSid(ADMINISTRATORS_SID)]
        if helpdesk is not None:
            self._allowed_sids.append(helpdesk)
        sddl = pipe_sddl(win32security.ConvertSidToStringSid(self._own_sid),
                         win32security.ConvertSidToStringSid(helpdesk) if helpdesk is not None else None)
        attributes = win32security.SECURITY_ATTRIBUTES()
        attributes.SECURITY_DESCRIPTOR = win32security.ConvertStringSecurityDescriptorToSecurityDescriptor(
            sddl, win32security.SDDL_REVISION_1)
        try:
            server = _SecuredPipeServer(self.address, attributes)
        except PermissionError:  # FILE_FLAG_FIRST_PIPE_INSTANCE: the name is taken
            raise ControlError(f"another agentd daemon already listens on {self.address}") from None
        self._server = server

        def factory() -> asyncio.Protocol:
            reader = asyncio.StreamReader(limit=limit, loop=loop)
            return asyncio.StreamReaderProtocol(reader, handler, loop=loop)

        _serve_pipe(loop, server, factory)

    def check_peer(self, writer: asyncio.StreamWriter) -> tuple[bool, str]:
        """The client's token: the daemon's own user, SYSTEM, Administrators (elevated)
        or a member of the helpdesk group. Call after the client wrote its request."""
        pipe = writer.get_extra_info("pipe")
        if pipe is None:
            return False, "not a pipe connection"
        try:
            win32security.ImpersonateNamedPipeClient(pipe.handle)
            try:
                token = win32security.OpenThreadToken(win32api.GetCurrentThread(), win32con.TOKEN_QUERY, True)
            finally:
                win32security.RevertToSelf()
            user = win32security.GetTokenInformation(token, win32security.TokenUser)[0]
            if user == self._own_sid:
                return True, ""
            for sid in self._allowed_sids:
                if win32security.CheckTokenMembership(token, sid):
                    return True, ""
            name = _account_name(user)
        except pywintypes.error as exc:
            return False, f"client token unavailable: {exc.strerror}"
        return False, f"{name} is neither the daemon's user, an administrator nor in its group"

    def peer_account(self, writer: asyncio.StreamWriter) -> dict:
        """Who is at the other end: ``{"uid": None, "user": "DOMAIN\\name"}``."""
        pipe = writer.get_extra_info("pipe")
        try:
            win32security.ImpersonateNamedPipeClient(pipe.handle)
            try:
                token = win32security.OpenThreadToken(win32api.GetCurrentThread(), win32con.TOKEN_QUERY, True)
            finally:
                win32security.RevertToSelf()
            return {"uid": None, "user": _account_name(win32security.GetTokenInformation(token, win32security.TokenUser)[0])}
        except (pywintypes.error, AttributeError):
            return {"uid": None, "user": None}

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def remove(self) -> None:
        """A pipe disappears with its last handle: nothing is left on disk."""


def _account_name(sid: Any) -> str:
    try:
        name, domain, _kind = win32security.LookupAccountSid(None, sid)
        return f"{domain}\\{name}" if domain else name
    except pywintypes.error:
        return win32security.ConvertSidToStringSid(sid)


def _serve_pipe(loop: Any, server: _SecuredPipeServer, protocol_factory: Callable[[], asyncio.Protocol]) -> None:
    """asyncio's ProactorEventLoop.start_serving_pipe accept loop, for our PipeServer."""

    def loop_accept_pipe(f: Any = None) -> None:
        pipe = None
        try:
            if f:
                pipe = f.result()
                server._free_instances.discard(pipe)
                if server.closed():
                    pipe.close()
                    return
                loop._make_duplex_pipe_transport(pipe, protocol_factory(), extra={"addr": server._address})
            pipe = server._get_unconnected_pipe()
            if pipe is None:
                return
            f = loop._proactor.accept_pipe(pipe)
        except BrokenPipeError:
            if pipe and pipe.fileno() != -1:
                pipe.close()
            loop.call_soon(loop_accept_pipe)
        except OSError as exc:
            if pipe and pipe.fileno() != -1:
                loop.call_exception_handler({"message": "Pipe accept failed", "exception": exc, "pipe": pipe})
                pipe.close()
            loop.call_soon(loop_accept_pipe)
        except asyncio.CancelledError:
            if pipe:
                pipe.close()
        else:
            server._accept_pipe_future = f
            f.add_done_callback(loop_accept_pipe)

    loop.call_soon(loop_accept_pipe)


async def connect(address: str, *, limit: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Raises PermissionError when the pipe's DACL refuses us, FileNotFoundError when no
    daemon serves it (a busy pipe is retried by asyncio until the caller's deadline)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await loop.create_pipe_connection(lambda: protocol, str(address))
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer
