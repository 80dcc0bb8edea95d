"""Genesys notifications: the daemon's monitor of the agent's calls, and the Genesys
channel part of the ``websocket`` check."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import structlog

from agentd import hookimpl
from agentd.config import ConfigSection
from agentd.errors import AuthError, ConfigError, GenesysError, PermissionMissing, ProbeError
from agentd.tls import client_context
from agentd_plugins.genesys.client import has_credentials, probe_reason, shared_client, stored_user_id
from agentd_plugins.websocket.probe import empty_row, probe_target, shown_url

from .calls import CALLS_TOPIC, agent_user_id, create_channel, subscribe, uses_client_credentials
from .evidence import WebsocketDropSource
from .monitor import MonitorSettings, NotificationsMonitor

log = structlog.get_logger("agentd.notifications")


@dataclass(frozen=True)
class NotificationsSettings:
    """``[notifications]``: the daemon's notifications monitor."""

    monitor: bool = field(default=True, metadata={"help": "with Genesys credentials, the daemon keeps a notification channel on the agent's calls"})
    station_topic: bool = field(default=True, metadata={"help": "also subscribe to the agent's station topic"})
    heartbeat_timeout_s: float = field(default=75.0, metadata={"help": "no message for this long (heartbeats come every 30 s) counts as a drop", "min": 1, "max": 3600})
    backoff_min_s: float = field(default=2.0, metadata={"help": "reconnect backoff: first regular delay", "min": 0.01, "max": 600})
    backoff_max_s: float = field(default=60.0, metadata={"help": "reconnect backoff: longest delay", "min": 0.01, "max": 3600})
    renew_before_expiry_s: float = field(default=600.0, metadata={"help": "move to a new channel this long before the current one expires", "min": 0, "max": 86400})
    drop_history_h: float = field(default=24.0, metadata={"help": "full checks report the monitor's drops of this many hours back as evidence", "min": 0.1, "max": 24 * 30})

    def monitor_settings(self) -> MonitorSettings:
        return MonitorSettings(
            heartbeat_timeout_s=self.heartbeat_timeout_s,
            backoff_initial_s=self.backoff_min_s,
            backoff_min_s=self.backoff_min_s,
            backoff_max_s=self.backoff_max_s,
            renew_before_expiry_s=self.renew_before_expiry_s,
            station_topic=self.station_topic,
        )


@hookimpl
def agentd_config_sections():
    return [ConfigSection("notifications", NotificationsSettings, "the daemon's monitor of Genesys call notifications")]


@hookimpl
def agentd_collect_evidence(request):
    if request.profile not in ("full", "incident"):
        return []
    settings: NotificationsSettings = request.config.section("notifications")
    return [WebsocketDropSource(history_h=settings.drop_history_h)]


# -- the daemon ----------------------------------------------------------------------------

MONITOR = "notifications.monitor"
"""The daemon's plugin_state key of its running monitor."""


@hookimpl
def agentd_daemon_start(daemon: Any):
    monitor = _new_monitor(daemon)
    return None if monitor is None else _start(daemon, monitor)


def _new_monitor(daemon: Any) -> NotificationsMonitor | None:
    settings: NotificationsSettings = daemon.app.config.section("notifications")
    genesys = daemon.app.config.section("genesys")
    if not settings.monitor or not has_credentials(genesys):
        return None
    if uses_client_credentials(genesys) and not stored_user_id(genesys):
        log.warning("notifications monitor not started: client credentials have no user; set [genesys] user_id or use `agentd login`")
        return None
    timeline = getattr(daemon, "timeline", None)
    record = timeline.record if timeline is not None and hasattr(timeline, "record") else None
    return NotificationsMonitor(shared_client(genesys), record=record, settings=settings.monitor_settings())


async def _start(daemon: Any, monitor: NotificationsMonitor) -> None:
    daemon.plugin_state[MONITOR] = monitor
    spawn = getattr(daemon, "spawn", None)
    if callable(spawn):
        monitor._task = spawn(monitor.run(), name="notifications.monitor")  # type: ignore[attr-defined]
    else:  # an embedding without spawn: a plain task, ended by agentd_daemon_stop
        monitor._task = asyncio.get_running_loop().create_task(monitor.run(), name="notifications.monitor")  # type: ignore[attr-defined]


def _cancel(daemon: Any) -> asyncio.Task | None:
    """Take the daemon's monitor off it and cancel its task; the task, to wait for if wanted."""
    monitor = daemon.plugin_state.pop(MONITOR, None)
    task = getattr(monitor, "_task", None)
    if task is not None and not task.done():
        task.cancel()
        return task
    return None


async def _stop(daemon: Any) -> None:
    task = _cancel(daemon)
    if task is not None:
        await asyncio.wait({task}, timeout=5.0)  # its socket closes on the way out


@hookimpl
def agentd_daemon_login_changed(daemon: Any, service: str):
    """A new agent logged in (or the login was cleared): the monitor starts over for the
    user of the login the daemon now holds, or stops when there is none."""
    if service != "genesys":
        return None

    async def restart() -> None:
        await _stop(daemon)
        monitor = _new_monitor(daemon)
        if monitor is not None:
            await _start(daemon, monitor)
            log.info("notifications monitor restarted for the new login")
        else:
            log.info("notifications monitor stopped: no login")

    return restart()


@hookimpl
def agentd_daemon_stop(daemon: Any):
    _cancel(daemon)  # the daemon's stop waits (bounded) for the tasks it spawned
    return None


# -- the websocket check's Genesys part --------------------------------------------------------


def _failed_row(target: str, exc: GenesysError) -> dict:
    row = empty_row(target, reason=probe_reason(exc), error=f"{target}: {exc}")
    row.update(api_status=exc.status, genesys_channel=True)
    if isinstance(exc, PermissionMissing):
        row["permission"] = exc.permission
    if isinstance(exc, AuthError):  # platform.auth_failed reads it (FINDINGS.md)
        row["genesys_auth"] = {"grant": exc.grant, "message": str(exc)}
    return row


async def probe_genesys_channel(ctx, settings, plan) -> dict | None:
    """Create a channel, connect to its connectUri, subscribe to the agent's calls, ping it."""
    genesys = ctx.section("genesys")
    if not has_credentials(genesys):
        return None
    client = shared_client(genesys)
    target = "Genesys notifications channel"
    try:
        user_id: str | None = await agent_user_id(client)
    except ConfigError:
        user_id = None  # client credentials without [genesys] user_id: the channel is still probed
    except GenesysError as exc:
        return _failed_row(target, exc)
    try:
        channel = await create_channel(client)
    except GenesysError as exc:
        return _failed_row(target, exc)
    topic = CALLS_TOPIC.format(user_id)

    async def after_open(_connection) -> None:
        if user_id is None:
            return
        try:
            await subscribe(client, channel, [topic])
        except GenesysError as exc:
            raise ProbeError(f"{target}: subscribing to {topic} failed: {exc}", reason=probe_reason(exc)) from None

    row = await probe_target(
        channel.connect_uri,
        plan,
        ssl_context=client_context(settings.ca_file or genesys.ca_file),
        after_open=after_open,
        display_url=f"{target} {shown_url(channel.connect_uri)}",
    )
    row.update(genesys_channel=True, channel_id=channel.id, subscribed=[topic] if row["reason"] is None and user_id else [])
    if user_id is None:
        row["note"] = "not subscribed: client credentials have no user; set [genesys] user_id"
    return row


class NotificationsChannel:
    """The ``websocket`` check's probe of a Genesys notifications channel (``agentd_websocket_channels``)."""

    name = "genesys-notifications"

    async def probe(self, ctx, settings, plan) -> dict | None:
        return await probe_genesys_channel(ctx, settings, plan)


@hookimpl
def agentd_websocket_channels(config):
    return [NotificationsChannel()]
