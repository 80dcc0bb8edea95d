"""The ``websocket`` check against real WebSocket servers on loopback, one per failure mode."""

from __future__ import annotations

import json
from http import HTTPStatus

from agentd.model import Status
from agentd.testing.certs import make_certificates

from . import servers
from .conftest import run_websocket_check

FAST = "ping_count = 3\nping_interval_s = 0.05\npong_timeout_s = 0.5\nconnect_timeout_s = 3.0\n"


def targets(*urls: str) -> str:
    return f"targets = {json.dumps(list(urls))}\n"


async def test_healthy_server_passes_with_every_phase_timed(agentd_env, ws_servers):
    url = ws_servers.serve(servers.healthy)
    result = await run_websocket_check(agentd_env, targets(url) + FAST)
    assert result.status == Status.PASS, result.summary
    details = result.details
    assert details["target"] == url
    assert details["handshake_status"] == 101
    assert details["reason"] is None and details["close_code"] is None
    phases = details["phases"]
    assert phases["dns_ms"] is not None and phases["tcp_ms"] is not None and phases["upgrade_ms"] is not None
    assert phases["tls_ms"] is None  # ws:// has no TLS phase
    (row,) = details["targets"]
    assert row["pings_sent"] == 3 and row["pongs_received"] == 3
    assert result.metrics["ping_rtt_ms"] is not None and result.metrics["ping_rtt_ms"] < 100
    assert result.metrics["connect_ms"] is not None


async def test_handshake_refused_with_401_fails_naming_the_status(agentd_env, ws_servers):
    url = ws_servers.serve(servers.healthy, process_request=servers.refuse(HTTPStatus.UNAUTHORIZED))
    result = await run_websocket_check(agentd_env, targets(url) + FAST)
    assert result.status == Status.FAIL
    assert result.details["handshake_status"] == 401
    assert result.details["reason"] == "auth"
    assert "401" in result.summary
    assert result.details["phases"]["tcp_ms"] is not None  # TCP worked: it is the upgrade that was refused


async def test_handshake_refused_with_404_is_a_protocol_failure(agentd_env, ws_servers):
    url = ws_servers.serve(servers.healthy, process_request=servers.refuse(HTTPStatus.NOT_FOUND))
    result = await run_websocket_check(agentd_env, targets(url) + FAST)
    assert result.status == Status.FAIL
    assert result.details["handshake_status"] == 404
    assert result.details["reason"] == "protocol"


async def test_server_that_drops_tcp_is_close_1006(agentd_env, ws_servers):
    url = ws_servers.serve(servers.drop_after(0.08))
    result = await run_websocket_check(agentd_env, targets(url) + "ping_count = 10\nping_interval_s = 0.05\npong_timeout_s = 1.0\n")
    assert result.status == Status.FAIL, result.summary
    assert result.details["close_code"] == 1006
    assert result.details["reason"] == "dropped"
    assert result.details["handshake_status"] == 101
    assert "1006" in result.summary


async def test_server_that_never_answers_pings_fails_with_no_pong(agentd_env, ws_servers):
    url = ws_servers.serve(servers.never_pongs)
    result = await run_websocket_check(agentd_env, targets(url) + "ping_count = 3\npong_timeout_s = 0.3\n")
    assert result.status == Status.FAIL
    assert result.details["reason"] == "no_pong"
    (row,) = result.details["targets"]
    assert row["pings_sent"] == 1 and row["pongs_received"] == 0
    assert "no pong within 0.3 s" in result.summary


async def test_server_that_answers_slowly_warns(agentd_env, ws_servers):
    url = ws_servers.serve(servers.healthy)
    port = int(url.rsplit(":", 1)[1].strip("/"))
    proxy = servers.DelayProxy(port, delay_s=0.25)
    proxy_port = ws_servers.call(proxy.start)
    ws_servers.add(proxy)
    slow_url = f"ws://127.0.0.1:{proxy_port}/"
    result = await run_websocket_check(agentd_env, targets(slow_url) + "ping_count = 3\nping_interval_s = 0.05\npong_timeout_s = 2.0\nslow_rtt_ms = 150\n")
    assert result.status == Status.WARN, result.summary
    assert "slow pongs" in result.summary
    assert result.metrics["ping_rtt_ms"] >= 240
    assert result.details["phases"]["upgrade_ms"] >= 240
    (row,) = result.details["targets"]
    assert row["pongs_received"] == 3


async def test_large_message_is_reported(agentd_env, ws_servers):
    url = ws_servers.serve(servers.sends_large(20_000))
    result = await run_websocket_check(agentd_env, targets(url) + FAST)
    assert result.status == Status.WARN, result.summary
    (large,) = result.details["large_messages"]
    assert large["bytes"] > 20_000


async def test_wss_with_private_ca_times_tls_and_untrusted_cert_is_named(agentd_env, ws_servers, tmp_path):
    import ssl

    certs = make_certificates(tmp_path / "certs")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.cert, certs.key)
    url = ws_servers.serve(servers.healthy, ssl_context=context)
    trusted = await run_websocket_check(agentd_env, targets(url) + FAST + f'ca_file = "{certs.ca}"\n')
    assert trusted.status == Status.PASS, trusted.summary
    assert trusted.details["phases"]["tls_ms"] is not None
    untrusted = await run_websocket_check(agentd_env, targets(url) + FAST)
    assert untrusted.status == Status.FAIL
    assert untrusted.details["reason"] == "tls_untrusted"
    assert "agentd test" in untrusted.summary


async def test_refused_port_and_unresolvable_host(agentd_env, ws_servers):
    url = ws_servers.serve(servers.healthy)
    ws_servers.close()  # the port is free again: connection refused
    ws_servers.__init__()
    result = await run_websocket_check(agentd_env, targets(url, "wss://ws.agentd-test.invalid/") + FAST)
    assert result.status == Status.FAIL
    reasons = {row["target"]: row["reason"] for row in result.details["targets"]}
    assert reasons == {url: "refused", "wss://ws.agentd-test.invalid/": "dns"}


async def test_nothing_configured_skips(agentd_env):
    result = await run_websocket_check(agentd_env, "")
    assert result.status == Status.SKIP
    assert result.details["reason"] == "not_configured"


def test_cli_check_exit_code_and_json_for_a_refused_handshake(agentd_env, ws_servers):
    url = ws_servers.serve(servers.healthy, process_request=servers.refuse(HTTPStatus.FORBIDDEN))
    agentd_env.write_config('[genesys]\nregion = "agentd-test.invalid"\n[websocket]\n' + targets(url) + FAST)
    done = agentd_env.run("check", "--json", "--only", "websocket")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    (check,) = [c for c in report["checks"] if c["id"] == "websocket"]
    assert check["status"] == "fail"
    assert check["details"]["handshake_status"] == 403 and check["details"]["reason"] == "forbidden"


def test_bad_target_url_is_a_config_error_naming_the_key(agentd_env):
    agentd_env.write_config('[websocket]\ntargets = ["https://not-a-websocket.example/"]\n')
    done = agentd_env.run("check", "--only", "websocket")
    assert done.returncode == 2
    assert "websocket.targets[0]" in done.stderr and "ws://" in done.stderr


async def test_a_token_in_the_target_url_stays_out_of_the_report(agentd_env, ws_servers):
    url = ws_servers.serve(servers.healthy, process_request=servers.refuse(HTTPStatus.UNAUTHORIZED))
    secret_url = url.replace("ws://", "ws://user:pw-s3cret@") + "bot?access_token=tok-s3cret"
    result = await run_websocket_check(agentd_env, targets(secret_url) + FAST)
    assert result.status == Status.FAIL and result.details["handshake_status"] == 401
    text = json.dumps(result.to_dict())
    assert "s3cret" not in text
    assert result.details["target"] == url + "bot"


async def test_server_closing_with_a_close_frame_keeps_its_code_and_reason(agentd_env, ws_servers):
    url = ws_servers.serve(servers.close_after(0.05, 1011, "backend restarting", times=10))
    result = await run_websocket_check(agentd_env, targets(url) + "ping_count = 10\nping_interval_s = 0.05\n")
    assert result.status == Status.FAIL
    assert (result.details["close_code"], result.details["close_reason"], result.details["reason"]) == (1011, "backend restarting", "closed")
