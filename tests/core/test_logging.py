"""Logs: secrets never appear, whatever path they take (config, library logs, exceptions)."""

from __future__ import annotations

import io
import json
import logging
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import structlog

from agentd import logs
from agentd.redact import register_secret

ENV_SECRET = "env-secret-Q7x9vL2mN4"
FILE_SECRET = "file-secret-Z3k8pW5rT1"
INLINE_SECRET = "inline-secret-H6j2sD9fG0"


@pytest.fixture
def https_server(tmp_path):
    """A loopback HTTPS server (with a test CA), so the run has real traffic to log."""
    from agentd.testing.certs import make_certificates

    certs = make_certificates(tmp_path / "certs")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.cert, certs.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", certs
    server.shutdown()
    server.server_close()


def test_a_debug_run_whose_config_holds_secrets_never_prints_them(agentd_env, https_server, tmp_path):
    url, certs = https_server
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(FILE_SECRET)
    agentd_env.write_config(
        f"""
[agentd]
log_level = "debug"

[genesys]
region = "agentd-test.invalid"
api_base_url = "{url}"
login_base_url = "{url}"
ca_file = "{certs.ca}"
client_id = "client-id-1"
client_secret = {{ env = "AGENTD_TEST_CLIENT_SECRET" }}

[[ice.servers]]
urls = ["turn:127.0.0.1:9?transport=udp"]
username = "agent"
credential = "{INLINE_SECRET}"

[sinks.http]
url = "http://127.0.0.1:9/reports"
token = {{ file = "{secret_file}" }}
"""
    )
    env = {"AGENTD_TEST_CLIENT_SECRET": ENV_SECRET}
    check = agentd_env.run("check", "--json", "--log-level", "debug", extra_env=env, timeout=60)
    show = agentd_env.run("config", "show", "--log-level", "debug", extra_env=env)
    assert check.returncode in (0, 1), check.stderr
    assert show.returncode == 0, show.stderr
    report = json.loads(check.stdout)
    https = next(c for c in report["checks"] if c["id"] == "https")
    assert https["status"] == "pass", https  # the run really talked to the server
    assert check.stderr.strip(), "a debug run logs something"
    everything = check.stdout + check.stderr + show.stdout + show.stderr
    for secret in (ENV_SECRET, FILE_SECRET, INLINE_SECRET):
        assert secret not in everything


def test_the_pipeline_redacts_structlog_stdlib_and_exception_text():
    register_secret("registered-secret-value-9")
    stream = io.StringIO()
    logs.configure("debug", json=True, stream=stream)
    try:
        log = structlog.get_logger("agentd.test")
        log.info("token refresh", access_token="eyJhbGciOiJSUzI1NiJ9.payload.sig", note="used registered-secret-value-9")
        log.info("request", headers={"Authorization": "Bearer abcdef123456", "Accept": "application/json"})
        logging.getLogger("httpx").warning("HTTP Request: POST https://login.example/oauth/token body=grant_type=refresh_token&refresh_token=rt-0123456789")
        try:
            raise RuntimeError("login failed for Basic dXNlcjpwYXNzd29yZA== and registered-secret-value-9")
        except RuntimeError:
            log.exception("boom")
    finally:
        logs.configure("warning")
    text = stream.getvalue()
    for leaked in (
        "eyJhbGciOiJSUzI1NiJ9",
        "registered-secret-value-9",
        "abcdef123456",
        "rt-0123456789",
        "dXNlcjpwYXNzd29yZA==",
    ):
        assert leaked not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["access_token"] == "[redacted]"
    assert lines[1]["headers"]["Accept"] == "application/json"
    assert lines[2]["logger"] == "httpx"  # library logs are bridged into the same pipeline
    assert "RuntimeError" in lines[3]["exception"]


async def test_a_raising_check_is_logged_with_its_id_and_error():
    """The report row says what broke; the log keeps the traceback for whoever debugs the plugin."""
    from structlog.testing import capture_logs

    from agentd.checks import Check, Plan
    from agentd.config import CORE_SECTION, build
    from agentd.runner import run_checks

    async def broken(ctx):
        raise RuntimeError("socket table full")

    plan = Plan(profile="preshift", config=build({}, [CORE_SECTION], path=None))
    with capture_logs() as captured:
        (result,) = await run_checks([Check("broken", "broken", broken)], plan, deadline_s=5)
    assert result.status == "error"
    (event,) = [e for e in captured if e["event"] == "check raised"]
    assert event["check"] == "broken"
    assert "socket table full" in event["error"]
    assert event["log_level"] == "warning" and event.get("exc_info") is True
