"""``path.load`` and its load service on loopback: the service's limits (busy, token, budget),
the check's skips (no target, a call in progress, a busy service), its byte cap, and the
``agentd reflect --http-port`` command."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentd.app import App
from agentd.model import Status
from agentd.testing.coturn import free_port
from agentd.timeline import Timeline, default_path
from agentd_plugins.loaded_latency.client import Busy, LoadClient, Target
from agentd_plugins.loaded_latency.server import LoadHttpServer, LoadService

from .helpers import config_text


async def _server(**kw) -> tuple[LoadHttpServer, str]:
    front = LoadHttpServer(LoadService(**kw))
    port = await front.start("127.0.0.1", 0)
    return front, f"http://127.0.0.1:{port}"


async def _raw(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    target = Target.parse(url)
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        writer.write(request)
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
        lines = head.split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 5)
        return int(lines[0].split()[1]), headers, body
    finally:
        writer.close()


async def test_the_service_admits_a_bounded_number_of_tests_and_answers_busy_with_retry_after():
    front, url = await _server(max_tests=1, ttl_s=20)
    try:
        client = LoadClient(Target.parse(url), token=None, ssl_context=None, timeout_s=2)
        first = await client.start()
        assert isinstance(first, tuple)
        second = await client.start()
        assert isinstance(second, Busy) and 1 <= second.retry_after_s <= 20
        status, headers, _ = await _raw(url, b"POST /load/v1/session HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert status == 429 and int(headers["retry-after"]) >= 1
        counts = await client.end(first[0])
        assert counts == {"uploaded": 0, "downloaded": 0}
        assert isinstance(await client.start(), tuple)  # the slot is free again
        assert front.service.stats.busy == 2
    finally:
        await front.close()


async def test_the_service_wants_its_token():
    front, url = await _server(token="s3cret-load-token")
    try:
        status, _, body = await _raw(url, b"POST /load/v1/session HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert status == 401 and b"s3cret" not in body
        wrong = LoadClient(Target.parse(url), token="nope", ssl_context=None, timeout_s=2)
        with pytest.raises(Exception, match="refused the token"):
            await wrong.start()
        right = LoadClient(Target.parse(url), token="s3cret-load-token", ssl_context=None, timeout_s=2)
        assert isinstance(await right.start(), tuple)
    finally:
        await front.close()


async def test_the_service_keeps_each_session_within_its_budget():
    front, url = await _server(max_bytes=256 * 1024)
    try:
        client = LoadClient(Target.parse(url), token=None, ssl_context=None, timeout_s=2)
        session, budget = await client.start()
        assert budget == 256 * 1024
        too_big = f"POST /load/v1/upload?session={session} HTTP/1.1\r\nHost: x\r\nContent-Length: {budget + 1}\r\n\r\n".encode()
        assert (await _raw(url, too_big))[0] == 413
        # a download asks for more than the budget: it gets the budget, and the next one nothing
        status, headers, body = await _raw(url, f"GET /load/v1/download?session={session}&bytes={10 * budget} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert status == 200 and len(body) == budget
        status, _, body = await _raw(url, f"GET /load/v1/download?session={session}&bytes=1000 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert status == 200 and body == b""
        assert (await _raw(url, b"GET /load/v1/download?session=nosuch&bytes=1 HTTP/1.1\r\nHost: x\r\n\r\n"))[0] == 410
        assert (await _raw(url, b"GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n"))[0] == 404
        assert (await _raw(url, b"garbage\r\n\r\n"))[0] == 400
    finally:
        await front.close()


def _config(agentd_env, url: str | None, extra: str = "") -> Path:
    body = f'[loaded_latency]\nurl = "{url}"\nload_s = 1.5\nidle_s = 0.5\nramp_s = 0.5\n{extra}' if url else extra
    return agentd_env.write_config(config_text(extra=body))


async def test_no_target_configured_skips_and_says_what_to_set(agentd_env):
    app = App.load(_config(agentd_env, None))
    report = await app.run_check("full", only=["path.load"])
    (check,) = report.checks
    assert check.status is Status.SKIP
    assert "[loaded_latency] url" in check.summary and "agentd reflect --http-port" in check.summary
    assert not report.verdicts


async def test_the_check_is_not_in_the_preshift_profile(agentd_env):
    app = App.load(_config(agentd_env, "http://127.0.0.1:9"))
    _, checks, _ = app.plan("preshift")
    assert "path.load" not in {c.id for c in checks}
    _, checks, _ = app.plan("full")
    assert "path.load" in {c.id for c in checks}


async def test_a_loopback_test_stays_under_its_byte_cap(agentd_env):
    front, url = await _server()
    try:
        # no STUN server configured: the round trips are TCP handshakes to the service
        app = App.load(_config(agentd_env, url, "upload_cap_mb = 1\ndownload_cap_mb = 2\nflows = 4\n"))
        report = await app.run_check("full", only=["path.load"])
        (check,) = report.checks
        assert check.status is Status.PASS, check.summary
        assert check.details["probe_kind"] == "tcp" and "TCP handshakes" in check.details["probe"]
        assert 0 < check.metrics["uploaded_bytes"] <= 2**20
        assert 0 < check.metrics["downloaded_bytes"] <= 2 * 2**20
        (ended,) = front.service.stats.ended
        assert ended["uploaded"] <= 2**20 and ended["downloaded"] <= 2 * 2**20
        if check.details.get("reason") == "cap_too_small":  # loopback moves 3 MiB in a few ms: often no round trip fits
            assert "not measurable" in check.summary and "grade" not in check.details
        else:
            assert check.details["grade"] in ("A+", "A", "B", "C", "D", "F")
            assert check.metrics["rpm"] > 0 and check.metrics["idle_rtt_ms"] >= 0
        assert not front.service.sessions  # the session was ended
        assert not [v for v in report.verdicts if v.code == "network.bufferbloat"]
    finally:
        await front.close()


async def test_a_busy_service_is_waited_for_once_then_skipped(agentd_env):
    front, url = await _server(max_tests=1, ttl_s=30)
    try:
        front.service.admit("another PC")  # the one test the service admits runs already
        app = App.load(_config(agentd_env, url, "busy_wait_s = 0\n"))
        report = await app.run_check("full", only=["path.load"])
        (check,) = report.checks
        assert check.status is Status.SKIP and check.details["reason"] == "busy"
        assert "busy with another PC's test" in check.summary and "retry after" in check.summary
        assert front.service.stats.admitted == 1  # nothing was loaded
    finally:
        await front.close()


async def test_no_load_during_a_call(agentd_env):
    front, url = await _server()
    try:
        timeline = Timeline(default_path())  # as the daemon's notifications monitor records calls
        timeline.record("call.start", {"conversationId": "conv-1", "participantId": "p", "source": "notification"})
        timeline.close()
        app = App.load(_config(agentd_env, url, "upload_cap_mb = 1\ndownload_cap_mb = 2\n"))  # small: the service shares this test's loop
        report = await app.run_check("full", only=["path.load"])
        (check,) = report.checks
        assert check.status is Status.SKIP and check.details["reason"] == "call_active"
        assert "a call is in progress (conversation conv-1" in check.summary
        assert front.service.stats.admitted == 0
        timeline = Timeline(default_path())
        timeline.record("call.end", {"conversationId": "conv-1", "participantId": "p", "state": "disconnected"})
        timeline.close()
        report = await app.run_check("full", only=["path.load"])
        assert report.checks[0].status is Status.PASS, report.checks[0].summary
        assert report.checks[0].details["call_state"] == "no call"
    finally:
        await front.close()


def test_reflect_serves_the_load_service_and_rejects_bad_arguments(agentd_env):
    agentd_env.write_config(config_text())
    bad = agentd_env.run("reflect", "--listen", "127.0.0.1")
    assert bad.returncode == 2 and "--http-port" in bad.stderr
    bad = agentd_env.run("reflect", "--listen", "127.0.0.1", "--http-port", "0", "--load-token", "AGENTD_TEST_NO_SUCH_VAR")
    assert bad.returncode == 2 and "AGENTD_TEST_NO_SUCH_VAR" in bad.stderr
    port = free_port("127.0.0.1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentd", "reflect", "--listen", "127.0.0.1", "--http-port", str(port), "--duration", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=agentd_env.env,
    )
    try:
        line = proc.stdout.readline()
        assert f"load service on http://127.0.0.1:{port}/load/v1/" in line, (line, proc.stderr.read() if proc.poll() is not None else "")

        async def one_session() -> dict:
            client = LoadClient(Target.parse(f"http://127.0.0.1:{port}"), token=None, ssl_context=None, timeout_s=3)
            session, _ = await client.start()
            return await client.end(session)

        assert asyncio.run(one_session()) == {"uploaded": 0, "downloaded": 0}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "load service stopped; 1 tests" in out


def test_bad_url_is_a_configuration_error(agentd_env):
    agentd_env.write_config(config_text(extra='[loaded_latency]\nurl = "ftp://somewhere"\n'))
    proc = agentd_env.run("check", "--profile", "full", "--only", "path.load", "--json")
    assert proc.returncode == 2 and "loaded_latency.url" in proc.stderr and "Traceback" not in proc.stderr


async def test_a_wrong_token_is_an_error_that_never_shows_the_token(agentd_env, monkeypatch):
    front, url = await _server(token="the-right-load-token")
    try:
        monkeypatch.setenv("AGENTD_TEST_LOAD_TOKEN", "a-wrong-load-token")
        app = App.load(_config(agentd_env, url, 'token = { env = "AGENTD_TEST_LOAD_TOKEN" }\n'))
        report = await app.run_check("full", only=["path.load"])
        (check,) = report.checks
        assert check.status is Status.ERROR and "refused the token" in check.summary
        assert "a-wrong-load-token" not in report.to_json() and front.service.stats.refused == 1
    finally:
        await front.close()


SLOW_MEDIA = '''
import asyncio, time
from agentd import hookimpl
from agentd.checks import Check, Outcome

async def run(ctx):
    await asyncio.sleep(1.5)
    return Outcome.passed("measured", details={"ended_at": time.time()})

@hookimpl
def agentd_collect_checks(plan):
    return [Check("media.path", "a slow media check", run, timeout_s=5, profiles=frozenset({"full"}))]
'''


async def test_the_line_is_loaded_only_after_the_other_checks_ended(agentd_env):
    folder = agentd_env.root / "plugins.d"
    folder.mkdir()
    (folder / "slow_media.py").write_text(SLOW_MEDIA)
    front, url = await _server()
    admitted: list[float] = []
    admit = front.service.admit
    front.service.admit = lambda peer="": admitted.append(time.time()) or admit(peer)
    try:
        agentd_env.write_config(
            f'[agentd]\nplugin_dir = "{folder}"\ndisable_plugins = ["media"]\n'
            + config_text(extra=f'[loaded_latency]\nurl = "{url}"\nload_s = 1\nidle_s = 0.3\nramp_s = 0.3\nupload_cap_mb = 1\ndownload_cap_mb = 1\n')
        )
        app = App.load(agentd_env.config_file)
        report = await app.run_check("full", only=["media.path", "path.load"])
        checks = {c.id: c for c in report.checks}
        assert checks["media.path"].status is Status.PASS and checks["path.load"].status is Status.PASS, checks["path.load"].summary
        assert len(admitted) == 1 and admitted[0] >= checks["media.path"].details["ended_at"]
    finally:
        await front.close()
