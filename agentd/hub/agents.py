"""The PCs' WebSockets held by this hub process, and how a helpdesk request reaches one.

A check request goes to the PC's socket when this process holds it. With PostgreSQL,
several hub processes serve one fleet: the request is published with ``NOTIFY
agentd_hub`` and the process that holds the PC's socket (every process ``LISTEN``s)
sends it on. The LISTEN connection is watched (asyncpg's termination callback and a
``SELECT 1`` every few seconds): when PostgreSQL restarts or the connection drops, it is
reopened with backoff, and both are logged. The PC answers on its socket with progress events, which are written to
the database, so any process can show them.

The messages, JSON text frames:
- hub → PC: ``{"type": "check", "run_id": ..., "profile": "preshift"|"full"}``
- PC → hub: ``{"type": "hello", "hostname", "version"}``,
  ``{"type": "progress", "run_id", "seq", "event": {...}}`` (the control socket's events),
  ``{"type": "done", "run_id", "report_id", "delivered": "..."}``,
  ``{"type": "failed", "run_id", "error": "..."}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import sqlalchemy as sa
import structlog

from agentd.hub.store import SAFE_ID, Store

log = structlog.get_logger("agentd.hub.agents")

CHANNEL = "agentd_hub"
LISTEN_CHECK_S = 5.0
"""How often an idle LISTEN connection is checked with ``SELECT 1``."""
REOPEN_MIN_S, REOPEN_MAX_S = 0.2, 1.0
"""Backoff of reopening a lost LISTEN connection: doubling from the first to the second."""


class Agents:
    def __init__(self, store: Store, node: str, *, pg_dsn: str | None = None) -> None:
        self.store = store
        self.node = node
        self.pg_dsn = pg_dsn
        self.sockets: dict[str, Any] = {}
        self.runs: dict[str, str] = {}  # run id -> install id, for runs sent from this process
        self._listener: Any = None
        self._lost = asyncio.Event()
        self._watch: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self.listen_reopened = 0
        self.stopping = False
        self._connects: list[tuple[str, str | None, asyncio.Future[None]]] = []
        self._writer: asyncio.Task | None = None
        self.pending_s = 30.0  # a request older than this has been shown as failed (RUN_ANSWER_S)

    # -- start and stop --------------------------------------------------------------------

    async def start(self) -> None:
        if self.pg_dsn:
            await self._listen()  # the first time, a failure stops the start (the database is not there)
            self._watch = asyncio.get_running_loop().create_task(self._keep_listening())

    async def _listen(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.pg_dsn, timeout=10)
        try:
            await conn.add_listener(CHANNEL, self._notified)
            conn.add_termination_listener(lambda _conn: self._lost.set())
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
            raise
        self._listener = conn
        self._lost.clear()

    async def _keep_listening(self) -> None:
        """Reopen the LISTEN connection whenever it is lost (PostgreSQL restarted, a
        network cut): a request published by another process would otherwise never
        reach the PCs held here."""
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._lost.wait(), LISTEN_CHECK_S)
            conn = self._listener
            if not self._lost.is_set() and conn is not None and not conn.is_closed():
                try:
                    await conn.fetchval("SELECT 1", timeout=LISTEN_CHECK_S)
                    continue
                except Exception:
                    pass
            log.warning("LISTEN connection to PostgreSQL lost; reopening it (check requests from other hub processes wait until then)")
            self._listener = None
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.terminate()
            delay, attempts, started = REOPEN_MIN_S, 0, time.monotonic()
            while True:
                attempts += 1
                try:
                    await self._listen()
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if attempts == 1 or attempts % 10 == 0:
                        log.warning("LISTEN connection not reopened yet; retrying", attempts=attempts, error=type(exc).__name__,
                                    retry_in_s=round(delay, 2))
                    await asyncio.sleep(delay)
                    delay = min(REOPEN_MAX_S, delay * 2)
            self.listen_reopened += 1
            log.warning("LISTEN connection to PostgreSQL reopened", attempts=attempts, after_s=round(time.monotonic() - started, 2))
            try:
                await self._send_pending()
            except Exception as exc:
                log.warning("requests made while LISTEN was down not looked up", error=type(exc).__name__)

    async def _send_pending(self) -> None:
        """Requests published while this process was not listening were not heard: send
        the recent ones still waiting for a PC held here."""
        for run_id, install_id, profile in await self.store.pending_runs(self.pending_s):
            if install_id in self.sockets and run_id not in self.runs:
                log.info("sending a check request made while LISTEN was down", run=run_id, install_id=install_id)
                await self._send_local(run_id, install_id, profile)

    async def close_all(self) -> None:
        """The process is stopping: every PC's socket closes with 1012 (service restart:
        it reconnects), and one statement marks them all not connected (each socket's
        handler then skips its own write)."""
        self.stopping = True
        held = list(self.sockets.values())
        await asyncio.gather(*(self._close_quietly(ws) for ws in held))
        if held:
            with contextlib.suppress(Exception):
                await self.store.node_stopped(self.node)

    @staticmethod
    async def _close_quietly(ws: Any) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(code=1012), 2)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        await self.close_all()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=2)

    # -- sockets ---------------------------------------------------------------------------

    async def record_connected(self, install_id: str, public_ip: str | None) -> None:
        """Return once this PC's connection is in the database (raises when the write
        failed). Connections arriving while a write runs go in the next one: a fleet
        reconnecting after a restart costs a commit per batch, not one per PC."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._connects.append((install_id, public_ip, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_connects())
        await done

    async def _write_connects(self) -> None:
        while self._connects:
            batch, self._connects = self._connects[:500], self._connects[500:]
            try:
                await self.store.connected_many(self.node, [(install_id, ip) for install_id, ip, _ in batch])
            except Exception as exc:
                for *_, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                        done.exception()  # retrieved here too: a PC that went away meanwhile is not an error
            else:
                for *_, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def attach(self, install_id: str, ws: Any) -> None:
        old = self.sockets.get(install_id)
        self.sockets[install_id] = ws
        if old is not None and old is not ws:
            with contextlib.suppress(Exception):
                await old.close(code=4000)  # a newer connection of the same PC wins

    def detach(self, install_id: str, ws: Any) -> bool:
        if self.sockets.get(install_id) is ws:
            del self.sockets[install_id]
            return True
        return False

    async def close(self, install_id: str, code: int = 4001) -> None:
        ws = self.sockets.get(install_id)  # the socket's handler detaches it (and records that)
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close(code=code)

    # -- requests --------------------------------------------------------------------------

    async def request_check(self, run_id: str, install_id: str, profile: str) -> str:
        """Send the request to the PC; returns the run's state: ``sent`` or ``requested``
        (published for the process that holds it)."""
        if await self._send_local(run_id, install_id, profile):
            return "sent"
        if self.pg_dsn:
            if self._listener is None:
                log.warning("check request published while this process's LISTEN connection is being reopened", run=run_id)
            payload = json.dumps({"op": "check", "run_id": run_id, "install_id": install_id, "profile": profile})
            async with self.store.engine.begin() as conn:  # delivered to the listeners at commit
                await conn.execute(sa.text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload})
            return "requested"
        await self.store.run_state(run_id, "failed", error="the PC is not connected to the hub")
        return "failed"

    async def _send_local(self, run_id: str, install_id: str, profile: str) -> bool:
        ws = self.sockets.get(install_id)
        if ws is None:
            return False
        try:
            await ws.send_text(json.dumps({"type": "check", "run_id": run_id, "profile": profile}))
        except Exception as exc:
            log.warning("check request not sent", install_id=install_id, error=type(exc).__name__)
            return False
        self.runs[run_id] = install_id
        await self.store.run_state(run_id, "sent")
        return True

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            return
        if message.get("op") == "check" and message.get("install_id") in self.sockets:
            task = asyncio.ensure_future(self._send_local(message["run_id"], message["install_id"], message.get("profile", "preshift")))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- what a PC says ----------------------------------------------------------------------

    async def handle(self, install_id: str, message: dict[str, Any]) -> None:
        kind = message.get("type")
        run_id = message.get("run_id")
        if kind in ("progress", "done", "failed"):
            if not isinstance(run_id, str) or self.runs.get(run_id) != install_id:
                return  # not a run this process sent to this PC
            if kind == "progress":
                seq = message.get("seq")
                event = message.get("event")
                if isinstance(seq, int) and isinstance(event, dict):
                    await self.store.add_run_event(run_id, seq, event)
            elif kind == "done":
                report_id = message.get("report_id")
                await self.store.run_state(run_id, "done", report_id=report_id if isinstance(report_id, str) and SAFE_ID.match(report_id) else None)
                self.runs.pop(run_id, None)
            else:
                error = str(message.get("error") or "failed on the PC").replace("\x00", "?")  # no NUL into the database
                await self.store.run_state(run_id, "failed", error=error)
                self.runs.pop(run_id, None)
