"""Plugins: built-ins listed with their hooks, drop-ins loaded, broken or disabled ones contained."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

HELLO_PLUGIN = textwrap.dedent(
    '''
    from dataclasses import dataclass
    from agentd import hookimpl
    from agentd.checks import Check, Outcome
    from agentd.config import ConfigSection

    @dataclass(frozen=True)
    class HelloSettings:
        greeting: str = "hello"

    @hookimpl
    def agentd_config_sections():
        return [ConfigSection("hello", HelloSettings)]

    async def run(ctx):
        return Outcome.passed(ctx.section("hello").greeting + " from a drop-in", metrics={"answer_ms": 42.0})

    @hookimpl
    def agentd_collect_checks(plan):
        return [Check("hello", "a drop-in check", run, timeout_s=2)]
    '''
)


@pytest.fixture
def drop_in(agentd_env):
    folder = agentd_env.root / "plugins.d"
    folder.mkdir()
    (folder / "hello.py").write_text(HELLO_PLUGIN)
    agentd_env.write_config(f'[agentd]\nplugin_dir = "{folder}"\n\n[genesys]\nregion = "agentd-test.invalid"\n\n[hello]\ngreeting = "bonjour"\n')
    return folder


def test_plugins_lists_the_builtins_with_their_hooks(agentd_env):
    result = agentd_env.run("plugins", "--json")
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    for name in ("dns", "https", "host", "genesys-settings"):
        assert plugins[name]["origin"] == "builtin"
        assert plugins[name]["state"] == "loaded"
    assert "agentd_collect_checks" in plugins["dns"]["hooks"]
    assert "agentd_config_sections" in plugins["dns"]["hooks"]
    table = agentd_env.run("plugins").stdout
    assert "dns" in table and "collect_checks" in table


def test_a_drop_in_plugin_is_listed_configured_and_its_check_runs(agentd_env, drop_in):
    listing = {p["name"]: p for p in json.loads(agentd_env.run("plugins", "--json").stdout)}
    assert listing["hello"]["origin"] == "drop-in"
    assert listing["hello"]["location"].endswith("hello.py")
    assert set(listing["hello"]["hooks"]) == {"agentd_config_sections", "agentd_collect_checks"}
    report = json.loads(agentd_env.run("check", "--json").stdout)
    hello = next(c for c in report["checks"] if c["id"] == "hello")
    assert hello["status"] == "pass"
    assert hello["summary"] == "bonjour from a drop-in"
    assert hello["metrics"] == {"answer_ms": 42.0}


def test_a_plugin_can_be_disabled_by_flag(agentd_env, drop_in):
    result = agentd_env.run("check", "--json", "--disable-plugin", "hello")
    ids = {c["id"] for c in json.loads(result.stdout)["checks"]}
    assert "hello" not in ids and "dns" in ids
    listing = {p["name"]: p for p in json.loads(agentd_env.run("plugins", "--json", "--disable-plugin", "hello").stdout)}
    assert listing["hello"]["state"] == "disabled"


def test_a_builtin_can_be_disabled_in_the_config(agentd_env):
    agentd_env.write_config('[agentd]\ndisable_plugins = ["https"]\n[genesys]\nregion = "agentd-test.invalid"\n')
    ids = {c["id"] for c in json.loads(agentd_env.run("check", "--json").stdout)["checks"]}
    assert "https" not in ids and "dns" in ids


def test_a_broken_drop_in_is_reported_and_the_others_still_run(agentd_env, drop_in):
    (drop_in / "broken.py").write_text("this is not python(\n")
    (drop_in / "raises.py").write_text(
        "from agentd import hookimpl\n\n@hookimpl\ndef agentd_collect_checks(plan):\n    raise RuntimeError('planning failed')\n"
    )
    listing = {p["name"]: p for p in json.loads(agentd_env.run("plugins", "--json").stdout)}
    assert listing["broken"]["state"].startswith("failed: SyntaxError")
    result = agentd_env.run("check", "--json")
    report = json.loads(result.stdout)
    by_id = {c["id"]: c for c in report["checks"]}
    assert by_id["hello"]["status"] == "pass"
    assert by_id["plugin.raises"]["status"] == "error"
    assert "planning failed" in by_id["plugin.raises"]["summary"]
    assert result.returncode == 1  # a plugin that could not plan its checks makes the run not ready


@pytest.mark.floor
def test_every_builtin_plugin_and_module_loads(agentd_env):
    """Every entry point pyproject.toml declares loads, and every module of agentd and its
    plugins imports (the Windows-only ones, __main__ and the migration scripts aside): with the
    newest versions and, in .venv-floor, with the lowest versions pyproject.toml allows."""
    import tomllib
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    declared = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["entry-points"]["agentd"]
    result = agentd_env.run("plugins", "--json")
    assert result.returncode == 0, result.stderr
    states = {p["name"]: p["state"] for p in json.loads(result.stdout) if p["origin"] == "builtin"}
    assert states == {name: "loaded" for name in declared}

    modules = []
    for package, folder in (("agentd", repo / "agentd"), ("agentd_plugins", repo / "plugins")):
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if "migrations" in parts or parts[-1] == "__main__" or any(part.startswith("_windows") for part in parts):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules.append(".".join((package, *parts)))
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    imported = subprocess.run([sys.executable, "-c", script, *modules], capture_output=True, text=True, timeout=120, env=agentd_env.env)
    assert imported.returncode == 0, imported.stderr[-3000:]
