"""``agentd ws-probe`` and ``agentd ws-echo`` as a helpdesk runs them: real processes, loopback servers."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from http import HTTPStatus

from websockets.asyncio.client import connect

import pytest

from . import servers
from .conftest import OFFLINE_GENESYS


@pytest.fixture(autouse=True)
def offline_config(agentd_env):
    agentd_env.write_config(OFFLINE_GENESYS)


def test_ws_probe_shows_the_drop_with_its_code_and_the_reconnect(agentd_env, ws_servers):
    handler = servers.drop_after(0.5, times=1)
    url = ws_servers.serve(handler)
    done = agentd_env.run("ws-probe", url, "--duration", "2.5", "--interval", "0.1", timeout=30)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr  # a drop happened: not healthy
    assert handler.state["dropped"] == 1
    assert re.search(r"ping +1 +rtt +[\d.]+ ms", out)
    assert "DROP  close 1006: connection closed without a close frame" in out
    assert "reconnected (1)" in out
    assert "drops 1, reconnects 1" in out
    # the summary lists the drop with its time, code and reason
    assert re.search(r"\d\d:\d\d:\d\d\.\d{3}  close 1006  connection closed without a close frame", out)
    assert re.search(r"latency avg [\d.]+ ms, p95 [\d.]+ ms, max [\d.]+ ms", out)
    # pings went on after the reconnect
    after = out.split("reconnected (1)")[1]
    assert re.search(r"ping +\d+ +rtt", after)


def test_ws_probe_json_names_a_close_frame_code_and_reason(agentd_env, ws_servers):
    url = ws_servers.serve(servers.close_after(0.3, 1001, "server restart"))
    done = agentd_env.run("ws-probe", url, "--duration", "2", "--interval", "0.1", "--json", timeout=30)
    summary = json.loads(done.stdout)
    assert done.returncode == 1
    assert summary["reconnects"] == 1
    (drop,) = summary["drops"]
    assert drop["close_code"] == 1001 and drop["reason"] == "server restart"
    assert summary["pongs_received"] >= 5 and summary["rtt_p95_ms"] is not None
    assert "DROP  close 1001: server restart" in done.stderr  # live lines on stderr with --json


def test_ws_probe_healthy_exit_0_and_refused_exit_1(agentd_env, ws_servers):
    url = ws_servers.serve(servers.healthy)
    done = agentd_env.run("ws-probe", url, "--duration", "0.6", "--interval", "0.1", timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "drops 0, reconnects 0" in done.stdout
    refused = ws_servers.serve(servers.healthy, process_request=servers.refuse(HTTPStatus.UNAUTHORIZED))
    done = agentd_env.run("ws-probe", refused, "--duration", "1", "--interval", "0.1", timeout=30)
    assert done.returncode == 1
    assert "handshake refused with HTTP 401" in done.stdout
    assert "never connected" in done.stdout


def test_ws_probe_usage_errors(agentd_env):
    done = agentd_env.run("ws-probe", "http://127.0.0.1:1/", "--duration", "1")
    assert done.returncode == 2 and "ws://" in done.stderr
    done = agentd_env.run("ws-probe", "ws://127.0.0.1:1/", "--interval", "0")
    assert done.returncode == 2 and "--interval" in done.stderr


async def test_ws_echo_answers_json_with_its_latency(agentd_env):
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentd", "ws-echo", "--listen", "127.0.0.1:0", "--delay-ms", "30",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=agentd_env.env, cwd=agentd_env.root,
    )
    try:
        async with asyncio.timeout(15):
            line = (await process.stdout.readline()).decode()
        match = re.search(r"listening on (ws://127\.0\.0\.1:\d+)", line)
        assert match, line
        async with asyncio.timeout(10):
            async with connect(match.group(1)) as ws:
                greeting = json.loads(await ws.recv())
                assert greeting["status"] == "connected"
                await ws.send(json.dumps({"type": "utterance", "id": 7}))
                reply = json.loads(await ws.recv())
                assert reply["type"] == "response" and reply["id"] == 7 and reply["request_type"] == "utterance"
                assert 30 <= reply["latency_ms"] < 1000
                await ws.send("not json")
                assert json.loads(await ws.recv()) == {"error": "Invalid JSON"}
        process.terminate()
        async with asyncio.timeout(10):
            rest = (await process.stdout.read()).decode()
            code = await process.wait()
        assert code == 0
        assert "ended after 1 message(s)" in rest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_ws_echo_bad_listen_is_a_usage_error(agentd_env):
    done = agentd_env.run("ws-echo", "--listen", "nohostport")
    assert done.returncode == 2 and "HOST:PORT" in done.stderr


def test_ws_probe_genesys_text_ping(agentd_env, ws_servers):
    url = ws_servers.serve(servers.genesys_channel())
    done = agentd_env.run("ws-probe", url, "--duration", "0.8", "--interval", "0.1", "--genesys-ping", "--json", timeout=30)
    summary = json.loads(done.stdout)
    assert done.returncode == 0, done.stderr
    assert summary["pings_sent"] >= 4 and summary["pongs_received"] == summary["pings_sent"]
    silent = ws_servers.serve(servers.genesys_channel(answer_ping=False))
    done = agentd_env.run("ws-probe", silent, "--duration", "1.5", "--interval", "0.1", "--genesys-ping", "--pong-timeout", "0.3", timeout=30)
    assert done.returncode == 1
    assert "no pong within 0.3 s" in done.stdout and "no close code  no pong within 0.3 s (keepalive timeout)" in done.stdout
