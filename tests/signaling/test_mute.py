"""Mute control against the fake Genesys Cloud: PATCH on the agent's participant, confirmed
by the notification event or a re-read; 409, several calls, no call."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from agentd.testing.fake_genesys import AGENT_USER_ID
from agentd.testing.fake_genesys.notifications import add_live_call
from agentd_plugins.mute import MuteFailed, change_mute, mute_status

from .conftest import agent_client, agent_config, hub, service_config


def muted_in_fake(fake, conversation_id: str, participant_id: str) -> bool:
    return fake.state.participant(conversation_id, participant_id)["calls"][0]["muted"]


async def test_mute_on_is_confirmed_by_the_notification_event(fake_genesys):
    cid, pid = add_live_call(fake_genesys.state)
    hub(fake_genesys).event_delay_s = 0.05  # the event comes after the PATCH's answer, as on the real service
    async with agent_client(fake_genesys) as client:
        result = await change_mute(client, "on", conversation_id=None, timeout_s=5)
    assert result.muted is True and result.confirmed_by == "notification"
    assert (result.conversation_id, result.participant_id) == (cid, pid)
    assert muted_in_fake(fake_genesys, cid, pid) is True
    (patch,) = fake_genesys.state.requests_to(rf"/api/v2/conversations/calls/{cid}/participants/{pid}$", "PATCH")
    assert json.loads(patch.body) == {"muted": True}
    assert hub(fake_genesys).subscribe_requests == 1  # it listened on the agent's calls topic
    assert any(m["eventBody"]["id"] == cid for m in hub(fake_genesys).published)


async def test_mute_off_and_toggle(fake_genesys):
    cid, pid = add_live_call(fake_genesys.state, muted=True)
    async with agent_client(fake_genesys) as client:
        off = await change_mute(client, "off", conversation_id=None, timeout_s=5)
        assert off.muted is False and muted_in_fake(fake_genesys, cid, pid) is False
        toggled = await change_mute(client, "toggle", conversation_id=None, timeout_s=5)
        assert toggled.muted is True and muted_in_fake(fake_genesys, cid, pid) is True
        again = await change_mute(client, "toggle", conversation_id=None, timeout_s=5)
        assert again.muted is False and muted_in_fake(fake_genesys, cid, pid) is False
        already = await change_mute(client, "off", conversation_id=None, timeout_s=5)
        assert already.confirmed_by == "already"
    assert len(fake_genesys.state.requests_to(r"/participants/", "PATCH")) == 3  # "already" sends nothing


async def test_without_events_a_re_read_confirms(fake_genesys):
    cid, pid = add_live_call(fake_genesys.state)
    hub(fake_genesys).events_enabled = False
    async with agent_client(fake_genesys) as client:
        result = await change_mute(client, "on", conversation_id=None, timeout_s=5)
    assert result.confirmed_by == "re-read" and result.muted is True
    assert fake_genesys.state.requests_to(rf"/api/v2/conversations/calls/{cid}$", "GET")


async def test_status_shows_the_state(fake_genesys):
    cid, _ = add_live_call(fake_genesys.state, muted=True)
    async with agent_client(fake_genesys) as client:
        (call,) = await mute_status(client, None)
    assert call.conversation_id == cid and call.muted is True and call.connected


async def test_409_while_not_connected_then_success(fake_genesys):
    cid, pid = add_live_call(fake_genesys.state, call_state="alerting")
    fake_hub = hub(fake_genesys)

    async def answer_later() -> None:
        await asyncio.sleep(0.4)
        fake_hub.set_call_state(cid, pid, state="connected")  # the agent picks up: a calls event

    answering = asyncio.create_task(answer_later())
    async with agent_client(fake_genesys) as client:
        result = await change_mute(client, "on", conversation_id=None, timeout_s=5)
    await answering
    assert result.conflicts >= 1 and result.muted is True
    statuses = [r.status for r in fake_genesys.state.requests_to(r"/participants/", "PATCH")]
    assert statuses[0] == 409 and statuses[-1] == 202
    assert muted_in_fake(fake_genesys, cid, pid) is True


async def test_409_until_the_deadline_fails(fake_genesys):
    add_live_call(fake_genesys.state, call_state="dialing")
    async with agent_client(fake_genesys) as client:
        with pytest.raises(MuteFailed) as failed:
            await change_mute(client, "on", conversation_id=None, timeout_s=1.0)
    assert failed.value.code == 1 and "409" in str(failed.value)


async def test_429_is_backed_off_like_the_client_does(fake_genesys):
    cid, pid = add_live_call(fake_genesys.state)
    fake_genesys.state.inject(r"/participants/", status=429, retry_after="0.2", times=1, method="PATCH")
    async with agent_client(fake_genesys) as client:
        result = await change_mute(client, "on", conversation_id=None, timeout_s=5)
    statuses = [r.status for r in fake_genesys.state.requests_to(r"/participants/", "PATCH")]
    assert statuses == [429, 202]
    assert result.muted is True and muted_in_fake(fake_genesys, cid, pid)


async def test_several_active_calls_need_a_conversation(fake_genesys):
    first, _ = add_live_call(fake_genesys.state)
    second, second_pid = add_live_call(fake_genesys.state)
    async with agent_client(fake_genesys) as client:
        with pytest.raises(MuteFailed) as failed:
            await change_mute(client, "on", conversation_id=None, timeout_s=5)
        assert failed.value.code == 2
        assert first in str(failed.value) and second in str(failed.value)
        chosen = await change_mute(client, "on", conversation_id=second, timeout_s=5)
    assert chosen.conversation_id == second and muted_in_fake(fake_genesys, second, second_pid)
    assert not fake_genesys.state.requests_to(rf"/calls/{first}/participants/", "PATCH")


async def test_no_active_call(fake_genesys):
    async with agent_client(fake_genesys) as client:
        with pytest.raises(MuteFailed) as failed:
            await change_mute(client, "on", conversation_id=None, timeout_s=5)
    assert failed.value.code == 1 and "no active call" in str(failed.value)


async def _cli(agentd_env, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentd", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=agentd_env.env, cwd=agentd_env.root,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    return process.returncode, out.decode(), err.decode()


async def test_cli_mute_exit_codes_and_output(fake_genesys, agentd_env):
    agentd_env.write_config(agent_config(fake_genesys))
    code, out, err = await _cli(agentd_env, "mute", "status")
    assert code == 1 and "no active call" in out, out + err
    cid, pid = add_live_call(fake_genesys.state)
    code, out, err = await _cli(agentd_env, "mute", "on")
    assert code == 0, out + err
    assert f"muted: conversation {cid} (confirmed by" in out
    code, out, _ = await _cli(agentd_env, "mute", "status", "--json")
    assert code == 0 and json.loads(out)[0]["muted"] is True
    other, _ = add_live_call(fake_genesys.state)
    code, out, _ = await _cli(agentd_env, "mute", "off")
    assert code == 2 and cid in out and other in out and "--conversation" in out
    code, out, _ = await _cli(agentd_env, "mute", "off", "--conversation", cid, "--json")
    assert code == 0 and json.loads(out)["muted"] is False
    assert "fake-rt-" not in out  # no secret in output


async def test_cli_mute_with_client_credentials_says_it_needs_the_agent(fake_genesys, agentd_env):
    add_live_call(fake_genesys.state)
    agentd_env.write_config(service_config(fake_genesys))
    code, out, err = await _cli(agentd_env, "mute", "on")
    assert code == 2 and "agentd login" in out, out + err


def test_mute_help_says_it_applies_per_call(agentd_env):
    agentd_env.write_config("")
    done = agentd_env.run("mute", "--help")
    assert done.returncode == 0 and "per call" in done.stdout


async def test_429_beyond_the_deadline_fails_in_time(fake_genesys):
    add_live_call(fake_genesys.state)
    fake_genesys.state.inject(r"/participants/", status=429, retry_after="30", times=5, method="PATCH")
    started = asyncio.get_running_loop().time()
    async with agent_client(fake_genesys) as client:
        with pytest.raises(MuteFailed) as failed:
            await change_mute(client, "on", conversation_id=None, timeout_s=1.0)
    assert asyncio.get_running_loop().time() - started < 3.0
    assert failed.value.code == 1 and "within 1 s" in str(failed.value)
