"""No secret or token is written anywhere: logs at debug level, reports, the archive, errors.

Runs the real commands (subprocesses) against the fake with both grants, including
failures (401, 429, 5xx) whose paths log the most, then searches every byte agentd wrote
for the client secret and every access and refresh token the fake issued.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

from agentd.testing.fake_genesys import CC_CLIENT_ID, CC_CLIENT_SECRET, DROPPED_CALL_ID, LOGIN_CLIENT_ID
from agentd_plugins.genesys.login import login

from .helpers import config_text, settings_for
from .test_login import follow_in_browser

SECRET_ENV = {"AGENTD_TEST_CLIENT_SECRET": CC_CLIENT_SECRET}


def leaks(texts: dict[str, str], secrets: set[str]) -> list[tuple[str, str]]:
    found = []
    for where, text in texts.items():
        for secret in secrets:
            if secret and secret in text:
                found.append((where, secret[:6] + "..."))
        for marker in ("Bearer ", "Basic "):
            if marker in text:
                found.append((where, marker))
    return found


def written_files(root: Path, *, except_files: tuple[Path, ...] = ()) -> dict[str, str]:
    out = {}
    for path in root.rglob("*"):
        if path.is_file() and path not in except_files:
            out[str(path)] = path.read_bytes().decode("utf-8", "replace")
    return out


async def test_no_secret_or_token_in_logs_reports_or_archive(fake_genesys, agentd_env):
    state = fake_genesys.state
    agentd_env.write_config(config_text(fake_genesys, extra='[agentd]\nlog_level = "debug"\n'))
    state.inject("^/api/v2/conversations/", status=401, times=1)  # refresh path
    state.inject("^/api/v2/integrations/", status=429, times=2, retry_after="0.1")
    state.inject("^/api/v2/users/.*/station$", status=500, times=1)
    outputs: dict[str, str] = {}
    report_file = agentd_env.root / "report.json"
    for name, args in {
        "diagnose": ("diagnose", DROPPED_CALL_ID, "--json", "--log-level", "debug", "--output", str(report_file)),
        "diagnose-text": ("diagnose", DROPPED_CALL_ID, "--log-level", "debug"),
        "archive": ("archive", "--since", "24h", "--log-level", "debug"),
    }.items():
        done = await asyncio.to_thread(agentd_env.run, *args, extra_env=SECRET_ENV)
        assert done.returncode == 0, done.stderr
        outputs[f"{name} stdout"], outputs[f"{name} stderr"] = done.stdout, done.stderr
    assert "DEBUG" in outputs["diagnose stderr"].upper() and "HTTP Request" in outputs["diagnose stderr"]  # really at debug

    # a wrong secret: the error paths must not echo it either
    agentd_env.write_config(config_text(fake_genesys, secret_env="AGENTD_WRONG_SECRET"))
    wrong = "wrong-secret-0123456789"
    done = await asyncio.to_thread(agentd_env.run, "diagnose", DROPPED_CALL_ID, "--json", "--log-level", "debug", extra_env={"AGENTD_WRONG_SECRET": wrong})
    outputs["wrong stdout"], outputs["wrong stderr"] = done.stdout, done.stderr
    assert "genesys.auth" in done.stdout

    secrets = {CC_CLIENT_SECRET, wrong, base64.b64encode(f"{CC_CLIENT_ID}:{CC_CLIENT_SECRET}".encode()).decode()}
    secrets |= set(state.tokens) | set(state.refresh_tokens)
    assert len(state.tokens) >= 3
    texts = {**outputs, **written_files(agentd_env.root, except_files=(agentd_env.config_file,))}
    assert any(p.endswith("genesys-archive.sqlite") for p in texts) and str(report_file) in texts
    assert leaks(texts, secrets) == []


async def test_no_token_of_agentd_login_outside_the_token_file(fake_genesys, agentd_env):
    token_file = agentd_env.root / "state" / "genesys-token.json"
    settings = settings_for(fake_genesys, client_id=LOGIN_CLIENT_ID, client_secret=None, token_file=token_file)
    shown: list[str] = []
    await login(settings, open_url=follow_in_browser, port=0, timeout_s=10, announce=shown.append)
    agentd_env.write_config(
        f'[genesys]\napi_base_url = "{fake_genesys.url}"\nlogin_base_url = "{fake_genesys.url}"\nclient_id = "{LOGIN_CLIENT_ID}"\n'
    )
    fake_genesys.state.expire_tokens()  # the run must refresh (and rotate) the refresh token
    done = await asyncio.to_thread(agentd_env.run, "diagnose", DROPPED_CALL_ID, "--json", "--log-level", "debug")
    assert done.returncode == 0, done.stderr
    assert '"genesys.conversation"' in done.stdout
    state = fake_genesys.state
    secrets = set(state.tokens) | set(state.refresh_tokens)
    assert len(state.refresh_tokens) == 1 and len(state.tokens) == 2
    texts = {"stdout": done.stdout, "stderr": done.stderr, "login output": "\n".join(shown)}
    texts |= written_files(agentd_env.root, except_files=(token_file,))
    assert leaks(texts, secrets) == []
    assert next(iter(state.refresh_tokens)) in token_file.read_text()  # kept where it belongs
