"""The notifications monitor: keeps a Genesys notification channel subscribed to the
agent's calls (and station) for as long as it runs, and records what it sees.

A plain class, usable without the daemon: give it a client and a ``record(kind, data)``
callback. The daemon hook (``__init__.py``) spawns it and records into the timeline.

What it records (kinds from plugins/FINDINGS.md): ``call.start``, ``call.end``,
``mute``, ``station``, ``ws.drop`` (``close_code``, ``reason``) and ``ws.reconnect``
(``reason``, ``attempt``, ``after_s``).

Reconnects: on ``v2.system.socket_closing`` (at once, on the same channel), on a drop
or missed heartbeats (after a backoff delay from ``websockets.client.backoff``), and
before the channel expires (a new channel). After every reconnect it subscribes again
and re-reads the call state: a call may have started, ended or been (un)muted while the
socket was down (seed 002).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import structlog
from websockets.client import backoff

from agentd.errors import AuthError, GenesysError, NotFound, ProbeError
from agentd.model import isoformat, utcnow
from agentd.tls import client_context
from agentd_plugins.genesys.client import GenesysClient
from agentd_plugins.websocket.probe import Inbox, Opened, close_quietly, finish_reader, open_timed

from .calls import (
    CALLS_TOPIC,
    ENDED_STATES,
    SOCKET_CLOSING_TOPIC,
    STATION_TOPIC,
    AgentCall,
    Channel,
    active_calls,
    agent_user_id,
    create_channel,
    own_participant,
    read_call,
    subscribe,
)

log = structlog.get_logger("agentd.notifications")

Recorder = Callable[[str, dict[str, Any]], None]
DEAD_LOGIN_GRANTS = frozenset({"login_expired", "refresh_token"})
"""AuthError grants that mean the agent's login is over (expired with no refresh token, or
its refresh token refused): retrying cannot help."""


class LiveChannel:
    """One notification socket, connected and subscribed; messages go to ``on_message``."""

    def __init__(self, channel: Channel, opened: Opened, inbox: Inbox, reader: asyncio.Task, topics: list[str]) -> None:
        self.channel = channel
        self.opened = opened
        self.inbox = inbox
        self.reader = reader
        self.topics = topics

    @classmethod
    async def open(
        cls,
        client: GenesysClient,
        topics: list[str],
        *,
        on_message: Callable[[dict], None] | None = None,
        channel: Channel | None = None,
        timeout_s: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> LiveChannel:
        """Connect to ``channel`` (a new one when None), then (re)subscribe ``topics``."""
        channel = channel or await create_channel(client)
        opened = await open_timed(channel.connect_uri, ssl_context=ssl_context or client_context(client.settings.ca_file), timeout_s=timeout_s)
        inbox = Inbox(on_message=on_message)
        reader = asyncio.create_task(inbox.run(opened.connection), name=f"notifications:{channel.id}")
        live = cls(channel, opened, inbox, reader, topics)
        try:
            await subscribe(client, channel, topics)
        except BaseException:
            await live.close()
            raise
        return live

    async def close(self) -> None:
        if not self.reader.done():
            await close_quietly(self.opened.connection)
        await finish_reader(self.reader)


@dataclass(frozen=True)
class MonitorSettings:
    heartbeat_timeout_s: float = 75.0
    """No message (Genesys sends a heartbeat every 30 s) for this long: the socket is dead."""
    connect_timeout_s: float = 10.0
    backoff_initial_s: float = 1.0
    backoff_min_s: float = 2.0
    backoff_max_s: float = 60.0
    renew_before_expiry_s: float = 600.0
    """Move to a new channel this long before the current one expires."""
    station_topic: bool = True


def _expiry_epoch(text: str | None) -> float | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


class NotificationsMonitor:
    """Runs until cancelled: ``task = asyncio.create_task(monitor.run())``."""

    def __init__(
        self,
        client: GenesysClient,
        *,
        record: Recorder | None = None,
        settings: MonitorSettings | None = None,
        user_id: str | None = None,
    ) -> None:
        self.client = client
        self.settings = settings or MonitorSettings()
        self.user_id = user_id
        self._record = record
        self.calls: dict[str, AgentCall] = {}
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=1000)
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.resyncs = 0
        self.subscriptions = 0
        self.last_error: str | None = None
        self._changed = asyncio.Condition()

    # -- what it records -----------------------------------------------------------------

    def record(self, kind: str, data: dict[str, Any]) -> None:
        event = {"at": isoformat(utcnow()), "kind": kind, "data": data}
        self.events.append(event)
        log.info("notifications event", kind=kind, **{k: v for k, v in data.items() if k in ("conversationId", "muted", "reason", "close_code")})
        if self._record is not None:
            try:
                self._record(kind, data)
            except Exception as exc:  # a full disk must not stop the monitor
                log.warning("cannot record a notifications event", kind=kind, error=f"{type(exc).__name__}: {exc}")

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.events]

    async def wait_for(self, predicate: Callable[[NotificationsMonitor], bool], timeout_s: float) -> bool:
        """Wait until ``predicate(self)`` holds (checked after every change); False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                async with self._changed:
                    await self._changed.wait_for(lambda: predicate(self))
            return True
        except TimeoutError:
            return False

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- call state ------------------------------------------------------------------------

    def apply(self, call: AgentCall, source: str) -> None:
        """Compare ``call`` with what was known and record starts, ends and mute changes."""
        before = self.calls.get(call.conversation_id)
        data = {"conversationId": call.conversation_id, "participantId": call.participant_id, "source": source}
        if call.active:
            if before is None:
                self.record("call.start", {**data, "state": call.state, "muted": call.muted})
            elif before.muted != call.muted:
                self.record("mute", {**data, "muted": call.muted})
            self.calls[call.conversation_id] = call
        elif call.state in ENDED_STATES and before is not None:
            self.calls.pop(call.conversation_id, None)
            self.record("call.end", {**data, "state": call.state})

    async def resync(self, user_id: str) -> None:
        """Re-read the agent's calls after a (re)connect; differences are recorded as ``source: resync``."""
        try:
            current = await active_calls(self.client, user_id)
        except GenesysError as exc:
            if exc.status != 400:  # 400: a client-credentials token has no "my calls"
                raise
            current = []
            for conversation_id in list(self.calls):
                call = await read_call(self.client, conversation_id, user_id)
                if call is not None:
                    current.append(call)
        seen = {c.conversation_id for c in current}
        for call in current:
            self.apply(call, "resync")
        for conversation_id, before in list(self.calls.items()):
            if conversation_id not in seen:
                ended = AgentCall(conversation_id, before.participant_id, "disconnected", before.muted)
                self.apply(ended, "resync")
        self.resyncs += 1
        await self._notify()

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        delays = self._delays()
        channel: Channel | None = None
        user_id: str | None = self.user_id
        pending_reason: str | None = None
        down_since: float | None = None
        while True:
            try:
                user_id = user_id or await agent_user_id(self.client)
                topics = [CALLS_TOPIC.format(user_id)] + ([STATION_TOPIC.format(user_id)] if self.settings.station_topic else [])
                if channel is not None and self._expiring(channel):
                    channel = None
                live = await self._connect(channel, topics, user_id)
            except Exception as exc:  # GenesysError, ProbeError, or a bug: the monitor outlives one bad answer
                if isinstance(exc, AuthError) and exc.grant in DEAD_LOGIN_GRANTS:
                    # only a new `agentd login` helps; it restarts the monitor (agentd_daemon_login_changed)
                    self.last_error = str(exc)
                    log.warning("notifications monitor stopped until the next `agentd login`", error=str(exc))
                    return
                if not isinstance(exc, (GenesysError, ProbeError)):
                    log.error("notifications monitor: unexpected error", error=f"{type(exc).__name__}: {exc}")
                if isinstance(exc, NotFound) or (isinstance(exc, ProbeError) and exc.details.get("handshake_status") in (400, 404)):
                    channel = None  # the channel is gone: the next attempt makes a new one
                self.last_error = str(exc)
                delay = next(delays)
                log.warning("notifications channel not available", error=str(exc), retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)
                continue
            channel = live.channel
            self.subscriptions += 1
            if pending_reason is not None:
                self.reconnects += 1
                after = round(time.monotonic() - down_since, 3) if down_since else None
                self.record("ws.reconnect", {"reason": pending_reason, "attempt": self.reconnects, "after_s": after})
            delays = self._delays()
            try:
                await self.resync(user_id)
            except Exception as exc:  # AgentdError mostly; the socket is up, the next reconnect re-reads again
                log.warning("cannot re-read the call state", error=f"{type(exc).__name__}: {exc}")
            self.connected.set()
            await self._notify()
            try:
                pending_reason, planned = await self._watch(live, user_id)
            finally:
                self.connected.clear()
                await live.close()
            down_since = time.monotonic()
            if pending_reason == "channel_expiry":
                channel = None
            if not planned:
                await asyncio.sleep(next(delays))

    def _delays(self):
        s = self.settings
        return backoff(initial_delay=s.backoff_initial_s, min_delay=s.backoff_min_s, max_delay=s.backoff_max_s)

    def _expiring(self, channel: Channel) -> bool:
        expires = _expiry_epoch(channel.expires)
        return expires is not None and time.time() >= expires - self.settings.renew_before_expiry_s

    async def _connect(self, channel: Channel | None, topics: list[str], user_id: str) -> LiveChannel:
        closing = asyncio.Event()

        def on_message(data: dict) -> None:
            topic = data.get("topicName") or ""
            body = data.get("eventBody")
            if topic == SOCKET_CLOSING_TOPIC:
                closing.set()
            elif topic.endswith(".conversations.calls") and isinstance(body, dict):
                call = own_participant(body, user_id)
                if call is not None:
                    self.apply(call, "event")
                    asyncio.get_running_loop().create_task(self._notify())
            elif topic.endswith(".station") and isinstance(body, dict):
                self.record("station", {"station": body})

        live = await LiveChannel.open(self.client, topics, on_message=on_message, channel=channel, timeout_s=self.settings.connect_timeout_s)
        live.closing = closing  # type: ignore[attr-defined]
        return live

    async def _watch(self, live: LiveChannel, user_id: str) -> tuple[str, bool]:
        """Until the socket ends: (why, planned). Planned ends reconnect at once."""
        closing: asyncio.Event = live.closing  # type: ignore[attr-defined]
        closing_task = asyncio.create_task(closing.wait())
        try:
            while True:
                expires = _expiry_epoch(live.channel.expires)
                until_renew = (expires - self.settings.renew_before_expiry_s - time.time()) if expires else None
                quiet_for = time.monotonic() - max(live.inbox.last_message_at, live.inbox.opened_at)
                wait = self.settings.heartbeat_timeout_s - quiet_for
                if until_renew is not None:
                    wait = min(wait, until_renew)
                done, _ = await asyncio.wait({live.reader, closing_task}, timeout=max(0.0, wait), return_when=asyncio.FIRST_COMPLETED)
                if closing_task in done:
                    return "socket_closing", True
                if live.reader in done:
                    code, why = live.inbox.closed or (1006, "")
                    self.record("ws.drop", {"close_code": code, "reason": why or "connection closed"})
                    return "drop", False
                if until_renew is not None and expires is not None and time.time() >= expires - self.settings.renew_before_expiry_s:
                    return "channel_expiry", True
                if time.monotonic() - max(live.inbox.last_message_at, live.inbox.opened_at) >= self.settings.heartbeat_timeout_s:
                    self.record("ws.drop", {"close_code": None, "reason": f"no heartbeat for {self.settings.heartbeat_timeout_s:g} s"})
                    return "missed_heartbeats", False
        finally:
            closing_task.cancel()
