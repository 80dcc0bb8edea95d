"""The hub as the path.load check's load target (agentd/hub/load.py) on a real uvicorn over
loopback: enrolled PCs only, one test at a time (429 Retry-After), budgets, and a PC whose
only target is its configured [hub]."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import httpx

from tests.hub.conftest import enroll


def test_only_enrolled_pcs_and_one_test_at_a_time(live_hub):
    key = live_hub.enroll_key()
    _, token = enroll(live_hub.url, key)
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.post(f"{live_hub.url}/load/v1/session", timeout=10).status_code == 401
    assert httpx.post(f"{live_hub.url}/load/v1/session", headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401
    first = httpx.post(f"{live_hub.url}/load/v1/session", headers=auth, timeout=10)
    assert first.status_code == 200, first.text
    session, budget = first.json()["session"], first.json()["max_bytes"]
    busy = httpx.post(f"{live_hub.url}/load/v1/session", headers=auth, timeout=10)
    assert busy.status_code == 429 and int(busy.headers["retry-after"]) >= 1
    up = httpx.post(f"{live_hub.url}/load/v1/upload?session={session}", headers=auth, content=b"x" * 100_000, timeout=10)
    assert up.status_code == 200 and up.json() == {"received": 100_000}
    host, port = live_hub.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:  # a head that declares more than the budget left
        raw.sendall(f"POST /load/v1/upload?session={session} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                    f"Content-Length: {budget}\r\n\r\n".encode())
        assert raw.recv(4096).startswith(b"HTTP/1.1 413")
    down = httpx.get(f"{live_hub.url}/load/v1/download?session={session}&bytes=200000", headers=auth, timeout=10)
    assert down.status_code == 200 and len(down.content) == 200_000
    end = httpx.delete(f"{live_hub.url}/load/v1/session?session={session}", headers=auth, timeout=10)
    assert end.json() == {"uploaded": 100_000, "downloaded": 200_000}
    assert httpx.post(f"{live_hub.url}/load/v1/session", headers=auth, timeout=10).status_code == 200  # free again


def test_a_pc_loads_against_its_configured_hub_by_default(live_hub, agentd_env):
    key = live_hub.enroll_key()
    agentd_env.write_config(
        '[genesys]\nregion = "agentd-test.invalid"\n'
        f'[hub]\nurl = "{live_hub.url}"\nenrollment_key = "{key}"\nconnect = false\n'
        "[loaded_latency]\nload_s = 1.5\nidle_s = 0.5\nramp_s = 0.5\nupload_cap_mb = 1\ndownload_cap_mb = 2\n"
    )
    proc = subprocess.run([sys.executable, "-m", "agentd", "check", "--profile", "full", "--only", "path.load", "--json"],
                          capture_output=True, text=True, env=agentd_env.env, timeout=90, cwd=agentd_env.root)
    report = json.loads(proc.stdout)
    (check,) = report["checks"]
    assert check["status"] == "pass", check["summary"]
    assert check["details"]["service"] == live_hub.url
    assert 0 < check["metrics"]["uploaded_bytes"] <= 2**20 and check["metrics"]["downloaded_bytes"] <= 2 * 2**20
    assert key not in proc.stdout and key not in proc.stderr
    ended = live_hub.app.state.load_service.stats.ended
    assert len(ended) == 1 and ended[0]["uploaded"] <= 2**20
