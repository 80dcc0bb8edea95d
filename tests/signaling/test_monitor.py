"""The notifications monitor against the fake: subscriptions, call and mute events, and
reconnects on socket_closing, drops, missed heartbeats and channel expiry, each followed
by a resubscription and a re-read of the call state."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace

from agentd.testing.fake_genesys import AGENT_USER_ID
from agentd.testing.fake_genesys.notifications import add_live_call
from agentd.timeline import Timeline
from agentd_plugins.notifications import MONITOR, agentd_daemon_start, agentd_daemon_stop
from agentd_plugins.notifications.monitor import MonitorSettings, NotificationsMonitor

from .conftest import agent_client, agent_config, hub, service_config

FAST = MonitorSettings(heartbeat_timeout_s=5.0, backoff_initial_s=0.05, backoff_min_s=0.1, backoff_max_s=0.5, renew_before_expiry_s=0.0)


@contextlib.asynccontextmanager
async def running(monitor: NotificationsMonitor):
    task = asyncio.create_task(monitor.run())
    try:
        assert await monitor.wait_for(lambda m: m.connected.is_set(), 5), monitor.last_error
        yield monitor
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def events_of(monitor: NotificationsMonitor, kind: str) -> list[dict]:
    return [e["data"] for e in monitor.events if e["kind"] == kind]


async def test_subscribes_and_records_call_start_mute_and_end(fake_genesys):
    fake_hub = hub(fake_genesys)
    async with agent_client(fake_genesys) as client, running(NotificationsMonitor(client, settings=FAST)) as monitor:
        (channel,) = fake_hub.channels.values()
        assert list(channel.topics) == [f"v2.users.{AGENT_USER_ID}.conversations.calls", f"v2.users.{AGENT_USER_ID}.station"]
        cid, pid = add_live_call(fake_genesys.state)
        fake_hub.publish_call(cid)
        assert await monitor.wait_for(lambda m: cid in m.calls, 3)
        fake_hub.set_call_state(cid, pid, muted=True)
        assert await monitor.wait_for(lambda m: m.calls[cid].muted, 3)
        fake_hub.set_call_state(cid, pid, state="disconnected")
        assert await monitor.wait_for(lambda m: cid not in m.calls, 3)
    assert monitor.kinds() == ["call.start", "mute", "call.end"]
    assert events_of(monitor, "mute") == [{"conversationId": cid, "participantId": pid, "source": "event", "muted": True}]


async def test_socket_closing_reconnects_resubscribes_and_re_reads_the_mute_state(fake_genesys):
    fake_hub = hub(fake_genesys)
    cid, pid = add_live_call(fake_genesys.state)
    async with agent_client(fake_genesys) as client, running(NotificationsMonitor(client, settings=FAST)) as monitor:
        assert monitor.calls[cid].muted is False  # the first read found the call
        subscribed_before, connections_before = fake_hub.subscribe_requests, fake_hub.connections
        # muted while no event reaches the monitor (as if it happened while it was away)
        fake_hub.set_call_state(cid, pid, muted=True, publish=False)
        await fake_hub.socket_closing()
        assert await monitor.wait_for(lambda m: m.reconnects == 1 and m.connected.is_set() and m.resyncs == 2, 5)
        assert fake_hub.connections == connections_before + 1
        assert fake_hub.subscribe_requests == subscribed_before + 1
        assert monitor.calls[cid].muted is True
    reconnect = events_of(monitor, "ws.reconnect")
    assert reconnect[0]["reason"] == "socket_closing"
    assert {"conversationId": cid, "participantId": pid, "source": "resync", "muted": True} in events_of(monitor, "mute")
    assert not events_of(monitor, "ws.drop")  # a planned close is not a drop
    assert len(fake_hub.channels) == 1  # the same channel was reused


async def test_a_tcp_drop_is_recorded_as_1006_and_backed_off(fake_genesys):
    fake_hub = hub(fake_genesys)
    async with agent_client(fake_genesys) as client, running(NotificationsMonitor(client, settings=FAST)) as monitor:
        cid, _ = add_live_call(fake_genesys.state)  # starts while the socket is down: only the re-read sees it
        fake_hub.events_enabled = False
        assert fake_hub.drop() == 1
        assert await monitor.wait_for(lambda m: m.reconnects == 1 and m.connected.is_set(), 5)
        fake_hub.events_enabled = True
    (drop,) = events_of(monitor, "ws.drop")
    assert drop["close_code"] == 1006
    assert events_of(monitor, "ws.reconnect")[0]["reason"] == "drop"
    assert {"conversationId": cid, "source": "resync"}.items() <= events_of(monitor, "call.start")[0].items()


async def test_missed_heartbeats_count_as_a_drop(fake_genesys):
    fake_hub = hub(fake_genesys)
    fake_hub.heartbeat_s = 60.0
    settings = MonitorSettings(heartbeat_timeout_s=0.3, backoff_initial_s=0.05, backoff_min_s=0.1, backoff_max_s=0.5, renew_before_expiry_s=0.0)
    async with agent_client(fake_genesys) as client, running(NotificationsMonitor(client, settings=settings)) as monitor:
        assert await monitor.wait_for(lambda m: m.reconnects >= 1, 5)
    drop = events_of(monitor, "ws.drop")[0]
    assert drop["close_code"] is None and "no heartbeat" in drop["reason"]


async def test_heartbeats_keep_it_alive(fake_genesys):
    hub(fake_genesys).heartbeat_s = 0.1
    settings = MonitorSettings(heartbeat_timeout_s=0.5, backoff_initial_s=0.05, backoff_min_s=0.1, renew_before_expiry_s=0.0)
    async with agent_client(fake_genesys) as client, running(NotificationsMonitor(client, settings=settings)) as monitor:
        await asyncio.sleep(1.2)
        assert monitor.reconnects == 0


async def test_channel_expiry_moves_to_a_new_channel(fake_genesys):
    fake_hub = hub(fake_genesys)
    async with agent_client(fake_genesys) as client, running(NotificationsMonitor(client, settings=FAST)) as monitor:
        (first,) = list(fake_hub.channels)
        await fake_hub.expire(first)  # the service ends the channel: the old connectUri answers 404
        assert await monitor.wait_for(lambda m: m.reconnects >= 1 and m.connected.is_set(), 5)
        assert first not in fake_hub.channels and len(fake_hub.channels) == 1
    # ahead of expiry: a channel that lives 1.5 s is renewed 1 s before it ends
    fake_hub.channel_lifetime_s = 1.5
    settings = MonitorSettings(heartbeat_timeout_s=5, backoff_initial_s=0.05, backoff_min_s=0.1, renew_before_expiry_s=1.0)
    async with agent_client(fake_genesys) as client, running(NotificationsMonitor(client, settings=settings)) as monitor:
        assert await monitor.wait_for(lambda m: m.reconnects >= 1, 5)
    assert events_of(monitor, "ws.reconnect")[0]["reason"] == "channel_expiry"


async def test_client_credentials_with_a_configured_user_re_read_known_calls(fake_genesys, agentd_env):
    """No user context: the re-read falls back to GET /api/v2/conversations/calls/{id}."""
    from agentd.app import App

    fake_hub = hub(fake_genesys)
    app = App.load(agentd_env.write_config(service_config(fake_genesys)))
    from agentd_plugins.genesys.client import GenesysClient

    async with GenesysClient(app.config.section("genesys")) as client, running(NotificationsMonitor(client, settings=FAST)) as monitor:
        cid, pid = add_live_call(fake_genesys.state)
        fake_hub.publish_call(cid)
        assert await monitor.wait_for(lambda m: cid in m.calls, 3)
        fake_hub.set_call_state(cid, pid, muted=True, publish=False)
        await fake_hub.socket_closing()
        assert await monitor.wait_for(lambda m: m.reconnects == 1 and m.calls[cid].muted, 5)
    assert fake_genesys.state.requests_to(rf"/api/v2/conversations/calls/{cid}$", "GET")


async def test_daemon_hook_spawns_the_monitor_and_records_into_the_timeline(fake_genesys, agentd_env, tmp_path):
    from agentd.app import App

    app = App.load(agentd_env.write_config(agent_config(fake_genesys) + "[notifications]\nbackoff_min_s = 0.1\nbackoff_max_s = 0.5\n"))
    tasks: list[asyncio.Task] = []
    daemon = SimpleNamespace(
        app=app,
        timeline=Timeline(tmp_path / "timeline.sqlite"),
        plugin_state={},
        spawn=lambda coro, name: tasks.append(asyncio.create_task(coro, name=name)) or tasks[-1],
    )
    await agentd_daemon_start(daemon)
    try:
        (task,) = tasks
        assert task.get_name() == "notifications.monitor"
        monitor = daemon.plugin_state[MONITOR]
        assert await monitor.wait_for(lambda m: m.connected.is_set(), 5)
        cid, pid = add_live_call(fake_genesys.state)
        hub(fake_genesys).publish_call(cid)
        hub(fake_genesys).set_call_state(cid, pid, muted=True)
        assert await monitor.wait_for(lambda m: cid in m.calls and m.calls[cid].muted, 3)
        hub(fake_genesys).drop()
        assert await monitor.wait_for(lambda m: m.reconnects == 1, 5)
    finally:
        agentd_daemon_stop(daemon)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    kinds = [e["kind"] for e in daemon.timeline.events()]
    assert kinds[:2] == ["call.start", "mute"] and "ws.drop" in kinds and "ws.reconnect" in kinds
    (drop,) = daemon.timeline.events(kinds=["ws.drop"])
    assert drop["data"]["close_code"] == 1006
    daemon.timeline.close()


async def test_recorded_drops_become_evidence_of_a_full_run(agentd_env):
    from agentd import paths
    from agentd.app import App
    from agentd.evidence import EvidenceRequest
    from agentd.timeline import default_path

    timeline = Timeline(default_path())
    timeline.record("ws.drop", {"close_code": 1006, "reason": "connection closed without a close frame"})
    timeline.record("call.start", {"conversationId": "x"})
    timeline.close()
    app = App.load(agentd_env.write_config('[genesys]\nregion = "agentd-test.invalid"\n'))
    items = await app.collect_evidence(EvidenceRequest(config=app.config, profile="full"))
    drops = [e for e in items if e.kind == "signaling.websocket_drop"]
    assert len(drops) == 1 and drops[0].data["close_code"] == 1006 and drops[0].status == "ok"
    assert str(paths.state_dir()) in str(default_path())  # the test's own state folder, not the machine's
    none = await app.collect_evidence(EvidenceRequest(config=app.config, profile="preshift"))
    assert not [e for e in none if e.kind == "signaling.websocket_drop"]


async def test_odd_events_do_not_end_the_connection(fake_genesys):
    fake_hub = hub(fake_genesys)
    async with agent_client(fake_genesys) as client, running(NotificationsMonitor(client, settings=FAST)) as monitor:
        topic = f"v2.users.{AGENT_USER_ID}.conversations.calls"
        for body in ([1, 2], {"id": 7, "participants": "none"}, {"participants": [{"user": "x"}]}, "text"):
            fake_genesys.state.emit(topic, body)  # what a broken or future service might send
        cid, _ = add_live_call(fake_genesys.state)
        fake_hub.publish_call(cid)
        assert await monitor.wait_for(lambda m: cid in m.calls, 3)
        assert monitor.reconnects == 0 and fake_hub.connections == 1


async def test_agentd_run_keeps_the_channel_and_records_into_its_timeline(fake_genesys, agentd_env):
    """The real daemon (`agentd run`, a process) starts the monitor through its hook."""
    import sys

    from agentd.timeline import default_path

    fake_hub = hub(fake_genesys)
    agentd_env.write_config(
        agent_config(fake_genesys) + "[notifications]\nbackoff_min_s = 0.1\nbackoff_max_s = 0.5\n[websocket]\ngenesys_channel = false\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentd", "run",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=agentd_env.env, cwd=agentd_env.root,
    )

    async def until(predicate, timeout_s: float = 15.0) -> bool:
        for _ in range(int(timeout_s / 0.05)):
            if predicate():
                return True
            await asyncio.sleep(0.05)
        return False

    try:
        assert await until(lambda: fake_hub.connections == 1 and fake_hub.subscribe_requests == 1 and fake_hub.open_sockets())
        cid, pid = add_live_call(fake_genesys.state)
        fake_hub.publish_call(cid)
        await asyncio.sleep(0.2)
        fake_hub.set_call_state(cid, pid, muted=True)
        await asyncio.sleep(0.2)
        assert fake_hub.drop() == 1
        assert await until(lambda: fake_hub.connections == 2 and fake_hub.subscribe_requests == 2 and fake_hub.open_sockets())
        await asyncio.sleep(0.3)  # the re-read after the reconnect
    finally:
        process.terminate()
        async with asyncio.timeout(20):
            _, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-2000:]
    timeline = Timeline(default_path(), readonly=True)
    try:
        events = timeline.events()
    finally:
        timeline.close()
    kinds = [e["kind"] for e in events]
    assert kinds[:2] == ["call.start", "mute"], kinds
    (drop,) = [e["data"] for e in events if e["kind"] == "ws.drop"]
    assert drop["close_code"] == 1006
    assert [e["data"]["reason"] for e in events if e["kind"] == "ws.reconnect"] == ["drop"]


async def test_daemon_hook_does_not_start_without_a_user(fake_genesys, agentd_env):
    from agentd.app import App

    config = service_config(fake_genesys).replace(f'user_id = "{AGENT_USER_ID}"\n', "")
    app = App.load(agentd_env.write_config(config))
    spawned = []
    daemon = SimpleNamespace(app=app, timeline=None, plugin_state={}, spawn=lambda coro, name: spawned.append(name))
    assert agentd_daemon_start(daemon) is None
    assert spawned == [] and MONITOR not in daemon.plugin_state
