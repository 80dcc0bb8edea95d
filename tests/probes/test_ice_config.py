"""The [ice] section: url parsing (RFC 7064/7065) and configuration errors that name the key."""

from __future__ import annotations

import pytest

from agentd_plugins.ice import parse_port_range
from agentd_plugins.ice.urls import IceUrlError, parse_ice_url
from agentd_plugins.udp_ports import sample_ports

from .helpers import checks_of, config_text, report_of


@pytest.mark.parametrize(
    "url, scheme, host, port, transport",
    [
        ("stun:stun.example.net", "stun", "stun.example.net", 3478, "udp"),
        ("stun:192.0.2.1:19302", "stun", "192.0.2.1", 19302, "udp"),
        ("stuns:stun.example.net", "stuns", "stun.example.net", 5349, "tls"),
        ("turn:turn.example.net", "turn", "turn.example.net", 3478, "udp"),
        ("turn:turn.example.net:80?transport=tcp", "turn", "turn.example.net", 80, "tcp"),
        ("TURN:turn.example.net:3478?transport=UDP", "turn", "turn.example.net", 3478, "udp"),
        ("turns:turn.example.net:443?transport=tcp", "turns", "turn.example.net", 443, "tls"),
        ("turns:turn.example.net", "turns", "turn.example.net", 5349, "tls"),
        ("turn:[2001:db8::1]:3478?transport=udp", "turn", "2001:db8::1", 3478, "udp"),
    ],
)
def test_valid_urls_parse(url, scheme, host, port, transport):
    parsed = parse_ice_url(url)
    assert (parsed.scheme, parsed.host, parsed.port, parsed.transport) == (scheme, host, port, transport)


def test_stun_url_allows_udp_and_tcp_bindings():
    assert parse_ice_url("stun:h:3478").transports == ("udp", "tcp")
    assert parse_ice_url("turn:h:3478?transport=tcp").transports == ("tcp",)


@pytest.mark.parametrize(
    "url, words",
    [
        ("http://turn.example.net", "must start with"),
        ("turn://turn.example.net:3478", "no '//'"),
        ("turn:turn.example.net:70000", "out of range"),
        ("turn:turn.example.net:3478?transport=sctp", "transport must be udp or tcp"),
        ("turns:turn.example.net:443?transport=udp", "DTLS"),
        ("stun:stun.example.net?transport=tcp", "take no query"),
        ("turn:2001:db8::1:3478", "brackets"),
        ("turn:[1:2:3:4:5:6:7:8:9]:3478", "not an IPv6 address"),
        ("turn:h:3478?foo=bar", "only query"),
        ("", "non-empty"),
    ],
)
def test_invalid_urls_are_named(url, words):
    with pytest.raises(IceUrlError, match=words):
        parse_ice_url(url)


def test_port_range_and_sampling_spread():
    assert parse_port_range("16384-65535") == (16384, 65535)
    assert parse_port_range("5000") == (5000, 5000)
    for bad in ("65535-16384", "0-10", "a-b", "1-70000"):
        with pytest.raises(ValueError):
            parse_port_range(bad)
    ports = sample_ports(16384, 65535, 12)
    assert len(ports) == len(set(ports)) == 12
    assert all(16384 <= p <= 65535 for p in ports)
    # one port per slice: the sample covers the whole range, not one corner of it
    slice_size = (65535 - 16384 + 1) // 12
    assert sorted((p - 16384) // slice_size for p in ports) == list(range(12))


def test_bad_url_is_a_config_error_naming_the_key(agentd_env):
    agentd_env.write_config(
        config_text('[[ice.servers]]\nurls = ["stun:ok.example:3478", "turn:bad.example:99999"]\nusername = "u"\ncredential = "p"\n')
    )
    proc = agentd_env.run("check", "--json")
    assert proc.returncode == 2
    assert "ice.servers[0].urls[1]" in proc.stderr and "out of range" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_turn_url_without_credentials_is_a_config_error(agentd_env):
    agentd_env.write_config(config_text('[[ice.servers]]\nurls = "turn:turn.example:3478"\n'))
    proc = agentd_env.run("check", "--json")
    assert proc.returncode == 2
    assert "ice.servers[0]" in proc.stderr and "username and credential" in proc.stderr


def test_missing_credential_env_is_a_config_error_without_the_secret(agentd_env):
    agentd_env.write_config(
        config_text('[[ice.servers]]\nurls = ["turn:turn.example:3478"]\nusername = "u"\ncredential = { env = "AGENTD_TEST_NO_SUCH_VAR" }\n')
    )
    proc = agentd_env.run("check", "--json")
    assert proc.returncode == 2
    assert "AGENTD_TEST_NO_SUCH_VAR" in proc.stderr and "ice.servers[0].credential" in proc.stderr


def test_nothing_configured_skips_every_media_check_quickly(agentd_env):
    agentd_env.write_config(config_text())
    proc = agentd_env.run("check", "--json", "--only", "stun", "--only", "nat", "--only", "turn.udp", "--only", "turn.tcp", "--only", "turn.tls", "--only", "udp.ports")
    checks = checks_of(report_of(proc.stdout))
    for check_id in ("stun", "nat", "turn.udp", "turn.tcp", "turn.tls", "udp.ports"):
        assert checks[check_id]["status"] == "skip", checks[check_id]
        assert checks[check_id]["details"]["reason"] == "not_configured"
        assert checks[check_id]["duration_ms"] < 1000
    assert proc.returncode == 0
