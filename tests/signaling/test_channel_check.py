"""The ``websocket`` check's Genesys part against the fake: create a notifications channel,
connect to its connectUri, subscribe to the agent's calls, text-ping it, watch heartbeats."""

from __future__ import annotations

import asyncio

from agentd.model import Status
from agentd.testing.fake_genesys import AGENT_USER_ID, CC_CLIENT_ID
from agentd.testing.fake_genesys.state import ALL_SCOPES

from .conftest import agent_config, hub, run_websocket_check, service_config

FAST = "ping_count = 2\nping_interval_s = 0.05\npong_timeout_s = 1.0\n"


def channel_row(result) -> dict:
    (row,) = [r for r in result.details["targets"] if r.get("genesys_channel")]
    return row


async def test_channel_is_created_subscribed_and_answers_the_genesys_ping(fake_genesys, agentd_env):
    result = await run_websocket_check(agentd_env, FAST, genesys_toml=agent_config(fake_genesys))
    assert result.status == Status.PASS, result.summary
    row = channel_row(result)
    assert row["handshake_status"] == 101 and row["reason"] is None
    assert row["subscribed"] == [f"v2.users.{AGENT_USER_ID}.conversations.calls"]
    assert row["genesys_pings_sent"] == 2 and row["genesys_pongs_received"] == 2 and row["pongs_received"] == 2
    assert hub(fake_genesys).pings == 2  # the fake saw the text pings
    # besides it, the softphone's streaming channel (its own row): created, measured, closed
    (channel,) = [c for c in hub(fake_genesys).channels.values() if c.connection_type != "streaming"]
    assert list(channel.topics) == [f"v2.users.{AGENT_USER_ID}.conversations.calls"]
    assert row["channel_id"] == channel.id and channel.id in row["target"]
    (xmpp,) = [r for r in result.details["targets"] if r.get("streaming_channel")]
    assert xmpp["ok"] and xmpp["xmpp_pongs_received"] == 2


async def test_heartbeats_are_watched_when_observing(fake_genesys, agentd_env):
    hub(fake_genesys).heartbeat_s = 0.1
    observe = FAST + "observe_s = 0.6\nheartbeat_timeout_s = 0.35\n"
    result = await run_websocket_check(agentd_env, observe, genesys_toml=agent_config(fake_genesys))
    assert result.status == Status.PASS, result.summary
    row = channel_row(result)
    assert row["heartbeats"] >= 3
    assert 0.05 < result.metrics["max_heartbeat_gap_s"] < 0.35


async def test_missed_heartbeats_fail_the_check(fake_genesys, agentd_env):
    hub(fake_genesys).heartbeat_s = 30.0
    observe = FAST + "observe_s = 0.5\nheartbeat_timeout_s = 0.3\n"
    result = await run_websocket_check(agentd_env, observe, genesys_toml=agent_config(fake_genesys))
    assert result.status == Status.FAIL
    assert channel_row(result)["reason"] == "no_heartbeat"
    assert result.metrics["max_heartbeat_gap_s"] >= 0.5  # no heartbeat the whole time observed
    assert "no heartbeat" in result.summary


async def test_a_drop_during_the_check_is_close_1006(fake_genesys, agentd_env):
    fake_hub = hub(fake_genesys)
    fake_hub.heartbeat_s = 0.15

    # cut the socket as soon as the first heartbeat went out: the client sees no close frame
    async def cut_soon() -> None:
        for _ in range(50):
            await asyncio.sleep(0.05)
            if fake_hub.open_sockets():
                await asyncio.sleep(0.2)
                fake_hub.drop()
                return

    task = asyncio.create_task(cut_soon())
    observe = FAST + "observe_s = 2.0\nheartbeat_timeout_s = 1.0\n"
    result = await run_websocket_check(agentd_env, observe, genesys_toml=agent_config(fake_genesys))
    await task
    assert result.status == Status.FAIL
    assert result.details["close_code"] == 1006 and result.details["reason"] == "dropped"


async def test_a_missing_scope_fails_as_forbidden(fake_genesys, agentd_env):
    fake_genesys.state.clients[CC_CLIENT_ID].scopes = ALL_SCOPES - {"notifications"}
    result = await run_websocket_check(agentd_env, FAST, genesys_toml=service_config(fake_genesys))
    assert result.status == Status.FAIL
    row = channel_row(result)
    assert row["reason"] == "forbidden" and row["api_status"] == 403
    assert "notifications" in result.summary


async def test_client_credentials_without_a_user_probe_the_channel_unsubscribed(fake_genesys, agentd_env):
    config = service_config(fake_genesys).replace(f'user_id = "{AGENT_USER_ID}"\n', "")
    result = await run_websocket_check(agentd_env, FAST, genesys_toml=config)
    assert result.status == Status.PASS, result.summary
    row = channel_row(result)
    assert row["subscribed"] == [] and "user_id" in row["note"]
    assert row["genesys_pongs_received"] == 2
    assert not fake_genesys.state.requests_to(r"/api/v2/users/me$")  # not asked: it cannot answer for a client
