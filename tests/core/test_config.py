"""Configuration: invalid files exit 2 with file and key named; secrets by reference; redaction."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agentd.config import ConfigSection, Secret, build
from agentd.errors import ConfigError, SecretError

INVALID = [
    pytest.param("[genesys\nregion = 1\n", None, "not valid TOML", id="bad-toml"),
    pytest.param('[genesys]\nregoin = "mypurecloud.ie"\n', "genesys.regoin", "unknown key", id="unknown-key"),
    pytest.param('[nosuchsection]\nx = 1\n', "nosuchsection", "unknown section", id="unknown-section"),
    pytest.param('[genesys]\ntimeout_s = "ten"\n', "genesys.timeout_s", "must be a number", id="wrong-type"),
    pytest.param('[agentd]\npreshift_deadline_s = 0.0\n', "agentd.preshift_deadline_s", "at least 0.5", id="out-of-range"),
    pytest.param('[agentd]\nlog_level = "loud"\n', "agentd.log_level", "must be one of", id="bad-choice"),
    pytest.param(
        '[genesys]\nclient_id = "abc"\nclient_secret = { file = "/nonexistent/agentd-secret" }\n',
        "genesys.client_secret",
        "/nonexistent/agentd-secret does not exist",
        id="missing-secret-file",
    ),
    pytest.param(
        '[genesys]\nclient_secret = { env = "AGENTD_TEST_UNSET_VARIABLE" }\n',
        "genesys.client_secret",
        "AGENTD_TEST_UNSET_VARIABLE is not set",
        id="missing-secret-env",
    ),
    pytest.param('[genesys]\nclient_secret = { vault = "x" }\n', "genesys.client_secret", "unknown secret reference", id="bad-secret-ref"),
    pytest.param('[genesys]\nregion = "not a domain!"\n', "genesys.region", "is not a domain", id="plugin-validation"),
]


@pytest.mark.parametrize("text, key, problem", INVALID)
def test_invalid_configuration_exits_2_naming_file_and_key(agentd_env, text, key, problem):
    path = agentd_env.write_config(text)
    result = agentd_env.run("check", "--json")
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    message = result.stderr.strip()
    assert "Traceback" not in message
    assert len(message.splitlines()) == 1, message
    assert str(path) in message
    if key:
        assert f"'{key}'" in message
    assert problem in message


def test_an_explicit_config_file_that_does_not_exist_is_an_error(agentd_env, tmp_path):
    result = agentd_env.run("check", "--config", str(tmp_path / "missing.toml"))
    assert result.returncode == 2
    assert "missing.toml: the configuration file does not exist" in result.stderr


def test_help_still_works_with_a_broken_configuration(agentd_env):
    agentd_env.write_config("[[[")
    result = agentd_env.run("check", "--help")
    assert result.returncode == 0
    assert "--profile" in result.stdout


def test_secrets_resolve_from_env_file_and_systemd_credentials(tmp_path, monkeypatch):
    @dataclass(frozen=True)
    class Section:
        a: Secret | None = None
        b: Secret | None = None
        c: Secret | None = None

    (tmp_path / "b.txt").write_text("from-a-file\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "agentd-c").write_text("from-a-credential")
    monkeypatch.setenv("AGENTD_TEST_SECRET_A", "from-the-env")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    raw = {"s": {"a": {"env": "AGENTD_TEST_SECRET_A"}, "b": {"file": str(tmp_path / "b.txt")}, "c": {"credential": "agentd-c"}}}
    section = build(raw, [ConfigSection("s", Section)], path=None).section("s")
    assert (section.a.reveal(), section.b.reveal(), section.c.reveal()) == ("from-the-env", "from-a-file", "from-a-credential")
    assert "from-the-env" not in repr(section) and "from-a-file" not in str(section)
    assert repr(section.a) == "Secret(env:AGENTD_TEST_SECRET_A)"


def test_credential_without_systemd_says_so(monkeypatch):
    @dataclass(frozen=True)
    class Section:
        a: Secret | None = None

    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(SecretError, match=r"CREDENTIALS_DIRECTORY is not set"):
        build({"s": {"a": {"credential": "x"}}}, [ConfigSection("s", Section)], path=Path("/etc/agentd/agentd.toml"))


@dataclass(frozen=True)
class Server:
    urls: tuple[str, ...]
    username: str | None = None


@dataclass(frozen=True)
class Ice:
    servers: tuple[Server, ...] = ()


def test_nested_tables_and_lists_of_tables_are_validated_with_their_path():
    good = build({"ice": {"servers": [{"urls": ["stun:a:3478"]}]}}, [ConfigSection("ice", Ice)], path=None)
    assert good.section("ice").servers[0].urls == ("stun:a:3478",)
    with pytest.raises(ConfigError) as err:
        build({"ice": {"servers": [{"urls": ["x"]}, {"urls": "stun:b"}]}}, [ConfigSection("ice", Ice)], path=None)
    assert err.value.key == "ice.servers[1].urls"
    with pytest.raises(ConfigError) as err:
        build({"ice": {"servers": [{}]}}, [ConfigSection("ice", Ice)], path=None)
    assert err.value.key == "ice.servers[0].urls" and "required" in err.value.problem


def test_dotted_sections_and_optional_sections():
    @dataclass(frozen=True)
    class Http:
        url: str
        retries: int = field(default=3, metadata={"min": 0})

    sections = [ConfigSection("sinks.http", Http, optional=True)]
    assert build({}, sections, path=None).section("sinks.http") is None
    cfg = build({"sinks": {"http": {"url": "https://c.example/r"}}}, sections, path=None)
    assert cfg.section("sinks.http").url == "https://c.example/r"
    with pytest.raises(ConfigError) as err:
        build({"sinks": {"ftp": {}}}, sections, path=None)
    assert err.value.key == "sinks.ftp"


def test_config_show_redacts_every_secret(agentd_env, tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text("file-secret-value-123")
    agentd_env.write_config(
        f'[genesys]\nclient_id = "client-1"\nclient_secret = {{ file = "{secret_file}" }}\n'
    )
    result = agentd_env.run("config", "show")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["genesys"]["client_secret"] == f"<secret file:{secret_file}>"
    assert shown["genesys"]["client_id"] == "client-1"
    assert "file-secret-value-123" not in result.stdout + result.stderr


def test_a_disabled_plugins_section_is_ignored_not_rejected(agentd_env):
    agentd_env.write_config('[agentd]\ndisable_plugins = ["host"]\n\n[host]\ncpu_warn_pct = 50.0\n')
    result = agentd_env.run("config", "show")
    assert result.returncode == 0, result.stderr
    assert "host" not in json.loads(result.stdout)


def test_plugin_command_help_works_with_a_missing_or_broken_configuration(agentd_env, tmp_path):
    agentd_env.write_config("[[[")
    result = agentd_env.run("mute", "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: agentd mute" in result.stdout
    result = agentd_env.run("reflect", "--help", extra_env={"AGENTD_CONFIG": str(tmp_path / "missing.toml")})
    assert result.returncode == 0, result.stderr
