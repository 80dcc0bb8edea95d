"""The PCs' WebSockets held by this hub process, and how a helpdesk request reaches one.

A check request goes to the PC's socket when this process holds it. With PostgreSQL,
several hub processes serve one fleet: the request is published with ``NOTIFY
agentd_hub`` and the process that holds the PC's socket (every process ``LISTEN``s)
sends it on. The PC answers on its socket with progress events, which are written to
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
from typing import Any

import sqlalchemy as sa
import structlog

from agentd.hub.store import Store

log = structlog.get_logger("agentd.hub.agents")

CHANNEL = "agentd_hub"


class Agents:
    def __init__(self, store: Store, node: str, *, pg_dsn: str | None = None) -> None:
        self.store = store
        self.node = node
        self.pg_dsn = pg_dsn
        self.sockets: dict[str, Any] = {}
        self.runs: dict[str, str] = {}  # run id -> install id, for runs sent from this process
        self._listener: Any = None
        self._tasks: set[asyncio.Task] = set()

    # -- start and stop --------------------------------------------------------------------

    async def start(self) -> None:
        if self.pg_dsn:
            import asyncpg

            self._listener = await asyncpg.connect(self.pg_dsn, timeout=10)
            await self._listener.add_listener(CHANNEL, self._notified)

    async def stop(self) -> None:
        for ws in list(self.sockets.values()):
            with contextlib.suppress(Exception):
                await ws.close(code=1012)  # service restart: the PC reconnects
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=2)

    # -- sockets ---------------------------------------------------------------------------

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
        if self._listener is not None:
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
                await self.store.run_state(run_id, "done", report_id=report_id if isinstance(report_id, str) else None)
                self.runs.pop(run_id, None)
            else:
                await self.store.run_state(run_id, "failed", error=str(message.get("error") or "failed on the PC"))
                self.runs.pop(run_id, None)
