"""The streaming (XMPP) channel client against the fake over a real WebSocket on loopback:
REST bootstrap, RFC 7395 framing, SASL PLAIN, bind, extdisco, pings, and every way the
server can misbehave ending within the deadline with a named reason."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import socket
import time

import pytest

from agentd.config import Secret
from agentd.errors import ProbeError
from agentd.testing.fake_genesys import AGENT_USER_ID, LOGIN_CLIENT_ID, agent_refresh_token
from agentd.testing.fake_genesys.streaming import jabber_id, streaming_hub
from agentd_plugins.genesys.client import GenesysClient
from agentd_plugins.genesys.settings import GenesysSettings
from agentd_plugins.genesys.streaming import Deadline, StanzaError, discover, open_channel, parse_stanza


def agent_settings(fake, **overrides) -> GenesysSettings:
    values = dict(
        api_base_url=fake.url,
        login_base_url=fake.url,
        streaming_base_url=fake.ws_url,
        client_id=LOGIN_CLIENT_ID,
        auth="login",
        refresh_token=Secret(agent_refresh_token(fake.state)),
        timeout_s=5.0,
    )
    values.update(overrides)
    return GenesysSettings(**values)


def fake_services(hub) -> None:
    hub.turn_services = [
        {"type": "turn", "host": "127.0.0.1", "port": 3478, "transport": "udp"},
        {"type": "turn", "host": "127.0.0.1", "port": 3478, "transport": "tcp"},
        {"type": "turns", "host": "turn.agentd-test.example", "port": 443, "transport": "tcp"},
    ]
    hub.stun_services = [{"type": "stun", "host": "127.0.0.1", "port": 3478}]


async def run_discovery(fake, *, timeout_s: float = 3.0, **overrides):
    settings = agent_settings(fake, **overrides)
    async with GenesysClient(settings) as client:
        return await discover(settings, client, timeout_s=timeout_s)


async def test_discovery_maps_extdisco_to_ice_servers_as_the_softphone_does_and_closes(fake_genesys):
    hub = streaming_hub(fake_genesys)
    fake_services(hub)
    found = await run_discovery(fake_genesys)
    assert [s.url for s in found.services()] == [
        "turn:127.0.0.1:3478",  # udp needs no ?transport (GSC webrtc.ts)
        "turn:127.0.0.1:3478?transport=tcp",
        "turns:turn.agentd-test.example:443?transport=tcp",
        "stun:127.0.0.1:3478",
    ]
    assert not found.relay_only and found.domain == jabber_id(AGENT_USER_ID).split("@")[1]
    turn = found.turn[0]
    expiry, _, user = turn.username.partition(":")
    assert user == hub.turn_user and int(expiry) > time.time() + 3600
    expected = base64.b64encode(hmac.new(hub.turn_secret.encode(), turn.username.encode(), hashlib.sha1).digest()).decode()
    assert turn.password == expected
    assert "password" not in repr(turn) and turn.password not in repr(found)
    # the channel: one session, authenticated, closed by agentd at once; no presence ever
    assert hub.connections == 1 and hub.authenticated == 1 and hub.extdisco_requests == 2
    await asyncio.sleep(0.05)
    assert hub.client_closes == 1 and hub.open_sockets() == []
    assert hub.presences == 0
    # the REST bootstrap was a streaming channel
    (post,) = fake_genesys.state.requests_to("/api/v2/notifications/channels$", "POST")
    assert post.query == {"connectionType": "streaming"}
    for phase in ("dns_ms", "tcp_ms", "upgrade_ms", "sasl_ms", "bind_ms", "extdisco_ms", "users_me_ms", "channel_ms"):
        assert found.timings[phase] is not None and found.timings[phase] >= 0, phase
    # expiry: 6 h (the softphone's refresh), unless a credential ends earlier
    assert abs(found.expires_at() - (found.fetched_at + 6 * 3600)) < 5


async def test_a_short_credential_expiry_shortens_the_lifetime(fake_genesys):
    hub = streaming_hub(fake_genesys)
    fake_services(hub)
    hub.credential_ttl_s = 120
    found = await run_discovery(fake_genesys)
    assert found.expires_at() <= time.time() + 121


async def test_an_empty_stun_answer_is_relay_only(fake_genesys):
    hub = streaming_hub(fake_genesys)
    fake_services(hub)
    hub.stun_services = []
    found = await run_discovery(fake_genesys)
    assert found.relay_only and len(found.turn) == 3 and found.stun == ()


async def test_sasl_refused_is_auth_at_the_sasl_stage_naming_agentd_login(fake_genesys):
    hub = streaming_hub(fake_genesys)
    hub.refuse_sasl = True
    with pytest.raises(ProbeError) as caught:
        await run_discovery(fake_genesys)
    assert caught.value.reason == "auth" and caught.value.details["stage"] == "sasl"
    assert "agentd login" in str(caught.value) and "not-authorized" in str(caught.value)


async def test_the_fake_checks_the_token_and_jid_in_sasl(fake_genesys):
    """A token that is not the user's, or another JID, is refused: the fake really checks SASL PLAIN."""
    from agentd_plugins.genesys.streaming import agent_jid, channel_url, connect_session, streaming_channel

    settings = agent_settings(fake_genesys)
    hub = streaming_hub(fake_genesys)
    async with GenesysClient(settings) as client:
        jid = await agent_jid(client, timeout_s=2)
        token = (await client.tokens.token()).value
        for bad_jid, bad_token in ((jid, "fake-at-not-issued"), (jabber_id("8b1d2c3f-6e50-4f9b-8d32-1b2c3d4e5f60"), token)):
            channel_id = await streaming_channel(client, timeout_s=2)
            with pytest.raises(ProbeError) as caught:
                await connect_session(channel_url(settings, channel_id), jid=bad_jid, token=bad_token, deadline=Deadline(3))
            assert caught.value.reason == "auth" and caught.value.details["stage"] == "sasl"
        channel_id = await streaming_channel(client, timeout_s=2)
        session = await connect_session(channel_url(settings, channel_id), jid=jid, token=token, deadline=Deadline(3))
        assert session.full_jid.startswith(jid + "/agentd-")
        await session.close()
    assert hub.authenticated == 1


async def test_a_silent_server_ends_within_the_deadline(fake_genesys):
    streaming_hub(fake_genesys).silent = True
    started = time.monotonic()
    with pytest.raises(ProbeError) as caught:
        await run_discovery(fake_genesys, timeout_s=1.0)
    assert time.monotonic() - started < 2.5
    assert caught.value.reason == "timeout" and caught.value.details["stage"] in ("open", "connect")


async def test_an_unreachable_streaming_host_is_named_at_once():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    from agentd.testing.fake_genesys import FakeGenesys, default_scenario

    async with FakeGenesys(default_scenario()) as fake:
        started = time.monotonic()
        with pytest.raises(ProbeError) as caught:
            await run_discovery(fake, timeout_s=2.0, streaming_base_url=f"ws://127.0.0.1:{port}")
    assert time.monotonic() - started < 1.5
    assert caught.value.reason == "refused" and caught.value.details["stage"] == "connect"


@pytest.mark.parametrize("where", ["features", "extdisco"])
async def test_malformed_xml_is_a_protocol_error(fake_genesys, where):
    hub = streaming_hub(fake_genesys)
    fake_services(hub)
    hub.malformed_at = where
    with pytest.raises(ProbeError) as caught:
        await run_discovery(fake_genesys)
    assert caught.value.reason == "protocol" and "malformed XML" in str(caught.value)
    await asyncio.sleep(0.05)
    assert hub.open_sockets() == []  # closed on the way out


async def test_entity_declarations_from_the_server_are_refused(fake_genesys):
    hub = streaming_hub(fake_genesys)
    fake_services(hub)
    hub.malformed_at = "extdisco"
    hub.malformed_text = '<!DOCTYPE iq [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]><iq>&b;</iq>'
    with pytest.raises(ProbeError) as caught:
        await run_discovery(fake_genesys)
    assert caught.value.reason == "protocol" and "DTD" in str(caught.value)


async def test_pushed_offers_are_left_unanswered(fake_genesys):
    hub = streaming_hub(fake_genesys)
    fake_services(hub)
    hub.push_offer = True
    found = await run_discovery(fake_genesys)
    assert len(found.turn) == 3
    await asyncio.sleep(0.05)
    assert hub.answers_to_pushes == 0 and hub.presences == 0


async def test_pings_measure_rtt_and_a_server_that_stops_answering_is_seen(fake_genesys):
    hub = streaming_hub(fake_genesys)
    settings = agent_settings(fake_genesys)
    async with GenesysClient(settings) as client:
        session, _ = await open_channel(settings, client, deadline=Deadline(3), ssl_context=None)
        try:
            rtt = await session.ping(1.0)
            assert 0 <= rtt < 1000
            hub.pongs_left = 0
            started = time.monotonic()
            with pytest.raises(ProbeError) as caught:
                await session.ping(0.3)
            assert caught.value.reason == "timeout" and time.monotonic() - started < 1.0
        finally:
            await session.close()
    assert hub.pings == 2


def test_the_parser_refuses_dtds_entities_and_deep_nesting():
    assert parse_stanza('<iq xmlns="jabber:client" id="a &amp; b"/>').get("id") == "a & b"
    for bad in (
        '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
        '<!DOCTYPE x [<!ENTITY a "aa">]><x>&a;</x>',
        "<x>&undefined;</x>",
        "<x><y></x>",
        "<a>" * 40 + "</a>" * 40,
        "<x>" + "a" * 300_000 + "</x>",
    ):
        with pytest.raises(StanzaError):
            parse_stanza(bad)
