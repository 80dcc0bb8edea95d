"""The daemon's control channel, JSON lines: a Unix socket in the runtime directory, or
a named pipe on Windows (the transport is agentd/osdeps/control_channel.py).

Who may connect: the socket file is mode 0660 (owner and group; with ``[daemon]
control_group`` the group is set to that one), so the kernel refuses anyone else at
``connect()``; on Windows the pipe's security descriptor admits SYSTEM, Administrators,
the daemon's user and that group. The server also checks the peer (SO_PEERCRED,
getpeereid, the pipe client's token) and answers a stranger with an error before closing.

The protocol, one JSON object per line each way. A request names an ``op``:

- ``{"op": "status"}`` → ``{"ok": true, "status": {...}}``
- ``{"op": "check", "profile": "preshift", "only": [], "deadline_s": null, "config": PATH,
  "upload": false}`` → progress events ``{"event": "started"|"note"|"finished", ...}``,
  with ``upload`` a ``{"event": "delivered", "summary": ...}``, then
  ``{"event": "report", "report": {...agentd.report/1...}}``
- ``{"op": "last_report"}`` → ``{"ok": true, "report": {...}}`` (or ``ok: false``)
- ``{"op": "reload"}`` → re-reads the configuration file: ``{"ok": true, "config": PATH}``,
  or ``{"ok": false, "rejected": true, "error": "..."}`` with the old configuration kept
- ``{"op": "mute", "args": ["on"]}`` → runs the plugin command ``mute`` in the daemon:
  ``{"ok": true, "exit_code": N, "output": "..."}``
- ``{"op": "login", "service": "genesys", "login": {...}}`` → a user's login handed to the
  daemon (``agentd login``), kept by the plugin that owns the service; ``{"op": "logout",
  "service": "genesys"}`` clears it. Answers ``{"ok": true, ...}`` (never a secret). Any
  account the socket lets in may hand over its login: the latest one wins.

Errors come back as ``{"ok": false, "error": "..."}`` (``"usage": true`` when the request
named something that does not exist, such as an unknown check id). A check whose report
could not be kept sends ``{"event": "warning", "text": ...}`` before the report.

Bounds (the socket is reachable by every member of the group): a request line is at
most :data:`MAX_REQUEST` bytes, at most :data:`MAX_CLIENTS` connections are served at
once (more get a one-line "busy" answer), so what the daemon buffers for requests stays
under ``MAX_CLIENTS`` × 2 × ``MAX_REQUEST``. Every malformed request (too long, not
JSON, nested too deep, a field of the wrong type) gets a one-line error answer, and the
fields are checked before anything uses them.

The client side (:class:`ControlClient`) is what ``agentd check`` and ``agentd status`` use.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

import structlog

from agentd.errors import ControlError, DaemonFailed, UsageError
from agentd.model import CheckResult, Report
from agentd.osdeps import control_channel
from agentd.runner import CheckFinished, CheckNote, CheckStarted, RunnerEvent

if TYPE_CHECKING:
    from agentd.daemon import Daemon

log = structlog.get_logger("agentd.control")

MAX_LINE = 4 * 2**20
"""A report with evidence can be large; anything past this is a broken peer."""


MAX_REQUEST = 64 * 2**10
"""Requests are a few hundred bytes; a longer line is a broken or hostile peer."""
MAX_CLIENTS = 32
"""Connections served at once; together with MAX_REQUEST this bounds request buffers."""
LINGER_BYTES = 16 * 2**20
"""At most this much of a refused request is read (and dropped) so the answer arrives."""
REQUEST_READ_S = 5.0
"""A client has this long to send its request line (a slow or silent one is dropped)."""


def socket_path() -> Path | str:
    """Where this daemon listens: a socket file, or a pipe name on Windows."""
    return control_channel.server_address()


def client_socket_path() -> Path | str:
    """Where a CLI should look: this user's daemon if one runs, else the system service's."""
    return control_channel.client_address()


# -- events on the wire --------------------------------------------------------------------


def event_to_wire(event: RunnerEvent) -> dict[str, Any]:
    if isinstance(event, CheckStarted):
        return {"event": "started", "check_id": event.check_id, "title": event.title}
    if isinstance(event, CheckNote):
        return {"event": "note", "check_id": event.check_id, "text": event.text}
    return {"event": "finished", "result": event.result.to_dict()}


def event_from_wire(message: dict[str, Any]) -> RunnerEvent | None:
    kind = message.get("event")
    if kind == "started":
        return CheckStarted(message["check_id"], message.get("title", ""))
    if kind == "note":
        return CheckNote(message["check_id"], message.get("text", ""))
    if kind == "finished":
        return CheckFinished(CheckResult.from_dict(message["result"]))
    return None


# -- the server ------------------------------------------------------------------------------


class ControlServer:
    """Serves the control socket for one :class:`~agentd.daemon.Daemon`."""

    def __init__(self, daemon: Daemon, path: Path | str | None = None, group: str | None = None) -> None:
        self.daemon = daemon
        self.path = path or socket_path()
        self.group = group
        self._listener: Any = None
        self._clients: set[asyncio.Task] = set()

    async def start(self) -> None:
        listener = control_channel.Listener(self.path, self.group)
        await listener.start(self._serve, limit=MAX_REQUEST)
        self._listener = listener
        log.info("control socket listening", path=str(self.path))

    async def stop(self, grace_s: float = 1.0) -> None:
        """No new connections; clients get ``grace_s`` to receive what they wait for."""
        listener = self._listener
        if listener is not None:
            listener.close()
            if self._clients:
                await asyncio.wait(list(self._clients), timeout=grace_s)
            for task in list(self._clients):
                task.cancel()
            listener.remove()
            self._listener = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        busy = len(self._clients) >= MAX_CLIENTS
        if task is not None and not busy:
            self._clients.add(task)
        try:
            if busy:
                log.warning("control connection refused: too many at once", limit=MAX_CLIENTS)
                await _send(writer, {"ok": False, "error": f"busy: {MAX_CLIENTS} control connections are open; try again"})
                await _close_gently(reader, writer, max_s=0.5)
                return
            # read the request either way: answering before it is read races the sender
            request, problem = await _read_request(reader)
            # after the read: a pipe client's token can be looked at once it has written
            allowed, why = self._listener.check_peer(writer)
            if not allowed:
                log.warning("control connection refused", reason=why)
                await _send(writer, {"ok": False, "error": "permission denied: not the daemon's user or group"})
                return
            if request is None:
                if problem:
                    log.info("malformed control request", error=problem)
                    await _send(writer, {"ok": False, "error": f"bad request: {problem}"})
                    await _close_gently(reader, writer)
                return
            await self._handle(request, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away: nothing to answer
        finally:
            if task is not None:
                self._clients.discard(task)
            writer.close()

    async def _handle(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        op = request.get("op")
        daemon = self.daemon
        if op == "status":
            await _send(writer, {"ok": True, "status": daemon.status()})
        elif op == "last_report":
            report = daemon.last_report
            await _send(writer, {"ok": True, "report": report.to_dict()} if report else {"ok": False, "error": "no report yet"})
        elif op == "check":
            problem = check_request_problem(request)
            if problem:
                await _send(writer, {"ok": False, "error": f"bad request: {problem}"})
                return
            await self._check(request, writer)
        elif op == "reload":  # SIGHUP's twin, with an answer: ExecReload needs no kill binary
            if daemon.reload():
                await _send(writer, {"ok": True, "config": str(daemon.app.config.path) if daemon.app.config.path else None})
            else:
                await _send(writer, {"ok": False, "rejected": True, "error": daemon.last_reload_error})
        elif op == "mute":
            args = request.get("args") or []
            if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
                await _send(writer, {"ok": False, "error": "bad request: args must be a list of strings"})
                return
            await _send(writer, await daemon.run_plugin_command("mute", args))
        elif op in ("login", "logout"):
            await self._login(op, request, writer)
        else:
            shown = op if isinstance(op, str) else type(op).__name__
            await _send(writer, {"ok": False, "error": f"unknown op {str(shown)[:40]!r}; known: status, check, last_report, reload, mute, login, logout"})

    async def _login(self, op: str, request: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        service = request.get("service")
        login = request.get("login") if op == "login" else None
        if not isinstance(service, str) or not service:
            await _send(writer, {"ok": False, "error": "bad request: service must name whose login it is"})
            return
        if op == "login" and not isinstance(login, dict):
            await _send(writer, {"ok": False, "error": "bad request: login must be an object"})
            return
        await _send(writer, await self.daemon.receive_login(service, login, self._listener.peer_account(writer)))

    async def _check(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        daemon = self.daemon
        wanted = request.get("config")
        own = str(daemon.app.config.path) if daemon.app.config.path else None
        if wanted and (not own or os.path.realpath(wanted) != os.path.realpath(own)):
            await _send(writer, {"ok": False, "error": f"the daemon uses {own}, not {wanted}", "fallback": True})
            return
        profile = request.get("profile") or "preshift"
        only = request.get("only") or []
        deadline = request.get("deadline_s")
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def on_event(event: RunnerEvent) -> None:
            queue.put_nowait(event_to_wire(event))

        def on_delivered(summary: str) -> None:
            queue.put_nowait({"event": "delivered", "summary": summary})

        def on_warning(text: str) -> None:
            queue.put_nowait({"event": "warning", "text": text})

        run = asyncio.ensure_future(
            daemon.run_check(
                profile, trigger="control", on_event=on_event, only=only, deadline_s=deadline,
                upload=bool(request.get("upload")), on_delivered=on_delivered, on_warning=on_warning,
            )
        )
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, run}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    await _send(writer, getter.result())
                    continue
                getter.cancel()
                while not queue.empty():
                    await _send(writer, queue.get_nowait())
                break
            try:
                report = run.result()
            except UsageError as exc:  # a bad profile or an unknown check id: the client exits 2
                await _send(writer, {"ok": False, "error": str(exc), "usage": True})
                return
            except Exception as exc:  # the client says it
                await _send(writer, {"ok": False, "error": str(exc) or type(exc).__name__})
                return
            await _send(writer, {"event": "report", "ok": True, "report": report.to_dict()})
        except (ConnectionError, asyncio.CancelledError):
            # the client left or the daemon stops: the run ends under its own deadline, its report kept
            raise


async def _close_gently(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, max_s: float = 2.0) -> None:
    """Answered before the client finished sending: take (and drop) what it still sends
    for a moment. Closing a Unix socket with unread data resets it, and the client would
    lose the answer it was given. Bounded in time and bytes; nothing is kept."""
    try:
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(max_s):
            dropped = 0
            while dropped < LINGER_BYTES:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                dropped += len(chunk)
    except (TimeoutError, ConnectionError, OSError, ValueError):
        pass


async def _read_request(reader: asyncio.StreamReader) -> tuple[dict[str, Any] | None, str | None]:
    """One request line, parsed: (request, None), or (None, what is wrong with it);
    (None, None) when the client sent nothing."""
    try:
        async with asyncio.timeout(REQUEST_READ_S):
            line = await reader.readline()
    except TimeoutError:
        return None, f"no complete request line within {REQUEST_READ_S:g} s"
    except ValueError:  # StreamReader.readline turns a line over the limit into ValueError
        return None, f"request line longer than {MAX_REQUEST} bytes"
    if not line:
        return None, None
    if not line.endswith(b"\n"):
        return None, "the request line was not finished (no newline before the end)"
    try:
        request = json.loads(line)
    except RecursionError:
        return None, "JSON nested too deeply"
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        return None, f"not JSON: {str(exc)[:120]}"
    if not isinstance(request, dict):
        return None, f"a request is a JSON object, not {_json_type(request)}"
    return request, None


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def check_request_problem(request: dict[str, Any]) -> str | None:
    """What is wrong with the fields of a ``check`` request (None: nothing). Checked
    before any of them is used: a wrong type is the client's mistake, not a crash."""
    expected = {
        "profile": (lambda v: v is None or isinstance(v, str), "a string"),
        "only": (lambda v: v is None or (isinstance(v, list) and all(isinstance(i, str) for i in v)), "a list of check ids (strings)"),
        "deadline_s": (lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 86400),
                       "a number of seconds (0 < deadline_s <= 86400) or null"),
        "config": (lambda v: v is None or isinstance(v, str), "a file path (string) or null"),
        "upload": (lambda v: v is None or isinstance(v, bool), "true or false"),
    }
    for key, (ok, what) in expected.items():
        value = request.get(key)
        if not ok(value):
            return f"{key!r} must be {what}, not {_json_type(value)}"
    return None


async def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(json.dumps(message, ensure_ascii=False, allow_nan=False, default=str).encode() + b"\n")
    await writer.drain()


# -- the client --------------------------------------------------------------------------------


class ControlClient:
    """Talks to a running daemon. ``connect_timeout_s`` bounds how long a dead socket costs."""

    def __init__(self, path: Path | str | None = None, *, connect_timeout_s: float = 1.0) -> None:
        self.path = path or client_socket_path()
        self.connect_timeout_s = connect_timeout_s

    def present(self) -> bool:
        return control_channel.present(self.path)

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                return await control_channel.connect(self.path, limit=MAX_LINE)
        except PermissionError:
            raise ControlError(f"permission denied on {self.path}: ask to be added to the daemon's group") from None
        except (OSError, TimeoutError) as exc:
            raise ControlError(f"the daemon does not answer on {self.path}: {getattr(exc, 'strerror', None) or exc}") from None

    async def stream(self, request: dict[str, Any], *, timeout_s: float) -> AsyncIterator[dict[str, Any]]:
        """Send one request; yield each answer line until the daemon closes."""
        reader, writer = await self._open()
        try:
            await _send(writer, request)
            async with asyncio.timeout(timeout_s):
                while True:
                    line = await reader.readline()
                    if not line:
                        return
                    try:
                        message = json.loads(line)
                    except ValueError:
                        raise ControlError("the daemon sent a line that is not JSON") from None
                    yield message
        except TimeoutError:
            raise ControlError(f"the daemon did not finish within {timeout_s:g} s") from None
        except ConnectionError as exc:
            raise DaemonFailed(f"the daemon closed the connection: {exc}") from None
        finally:
            writer.close()

    async def request(self, request: dict[str, Any], *, timeout_s: float = 5.0) -> dict[str, Any]:
        async for message in self.stream(request, timeout_s=timeout_s):
            return message
        raise ControlError("the daemon closed the connection without an answer")

    async def status(self) -> dict[str, Any]:
        answer = await self.request({"op": "status"})
        if not answer.get("ok"):
            raise ControlError(answer.get("error") or "status refused")
        return answer["status"]

    async def check(
        self,
        *,
        profile: str,
        only: list[str],
        deadline_s: float | None,
        config: str | None,
        upload: bool = False,
        on_event: Callable[[RunnerEvent], None] | None = None,
        timeout_s: float = 3600.0,
        warnings: list[str] | None = None,
    ) -> Report | None:
        """The report of a check run by the daemon; None when the daemon uses another
        configuration file than the one asked for (the caller then runs in-process).
        ``warnings`` collects what the daemon could not do with the report (keep it,
        spool it); they are printed on stderr too. Raises :class:`DaemonFailed` when the
        daemon ends the connection without a report (it crashed mid-check)."""
        request = {"op": "check", "profile": profile, "only": only, "deadline_s": deadline_s, "config": config, "upload": upload}
        async for message in self.stream(request, timeout_s=timeout_s):
            if message.get("event") == "delivered":  # --upload: the daemon says what it did
                print(f"agentd: {message.get('summary')} (by the daemon)", file=sys.stderr)
                continue
            if message.get("event") == "warning":  # the report was made but not kept somewhere
                text = str(message.get("text"))
                print(f"agentd: warning: {text} (in the daemon)", file=sys.stderr)
                if warnings is not None:
                    warnings.append(text)
                continue
            if "event" in message and message["event"] != "report":
                event = event_from_wire(message)
                if event is not None and on_event is not None:
                    on_event(event)
                continue
            if message.get("ok") and "report" in message:
                return Report.from_dict(message["report"])
            if message.get("fallback"):
                log.info("daemon not used", reason=message.get("error"))
                return None
            if message.get("usage"):
                raise UsageError(str(message.get("error")))
            raise ControlError(message.get("error") or "the daemon refused the check")
        raise DaemonFailed("the daemon stopped during the check and sent no report (see its log: journalctl -u agentd); "
                           "`agentd check --no-daemon` runs it in this process")
