"""Packaging: a wheel built from the repository runs in a fresh virtual environment, and a
third-party plugin distribution installed beside it is picked up through its entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

THIRD_PARTY_PYPROJECT = textwrap.dedent(
    """
    [build-system]
    requires = ["setuptools>=69"]
    build-backend = "setuptools.build_meta"

    [project]
    name = "agentd-hello"
    version = "0.3.0"
    dependencies = ["agentd"]

    [project.entry-points.agentd]
    hello = "agentd_hello"
    """
)
THIRD_PARTY_MODULE = textwrap.dedent(
    """
    from agentd import hookimpl
    from agentd.checks import Check, Outcome

    async def run(ctx):
        return Outcome.passed("hello from a third-party distribution")

    @hookimpl
    def agentd_collect_checks(plan):
        return [Check("hello.thirdparty", "a third-party check", run, timeout_s=2)]
    """
)


def _run(args, **kw):
    result = subprocess.run(args, capture_output=True, text=True, timeout=900, **kw)
    assert result.returncode == 0, f"{args}: {result.stdout[-2000:]} {result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    """A new virtual environment with agentd installed from a freshly built wheel."""
    work = tmp_path_factory.mktemp("wheel")
    dist = work / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(REPO)])
    wheels = list(dist.glob("agentd-*.whl"))
    assert len(wheels) == 1
    target = work / "venv"
    venv.EnvBuilder(with_pip=True).create(target)
    python = target / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", str(wheels[0])])
    return target, wheels[0]


def _env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTD_")}
    env.update(
        AGENTD_STATE_DIR=str(tmp_path / "state"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        AGENTD_CONFIG=str(tmp_path / "agentd.toml"),
    )
    (tmp_path / "agentd.toml").write_text('[genesys]\nregion = "agentd-test.invalid"\n')
    return env


def test_the_wheel_holds_the_core_and_the_builtin_plugins(fresh_venv):
    import zipfile

    _, wheel = fresh_venv
    names = zipfile.ZipFile(wheel).namelist()
    assert "agentd/cli.py" in names
    assert "agentd_plugins/dns/__init__.py" in names
    assert not any(n.startswith("plugins/") for n in names), "plugins must install as agentd_plugins"
    # the hub's page and its migrations are data files in folders without __init__.py
    assert {"agentd/hub/templates/fleet.html", "agentd/hub/templates/hub.js", "agentd/hub/migrations/script.py.mako"} <= set(names)
    assert not any("__pycache__" in n for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[agentd]" in text and "dns = agentd_plugins.dns" in text


def test_the_installed_wheel_runs_a_check(fresh_venv, tmp_path):
    target, _ = fresh_venv
    result = subprocess.run(
        [str(target / "bin" / "agentd"), "check", "--json"], capture_output=True, text=True, timeout=120, env=_env(tmp_path), cwd=tmp_path
    )
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    assert report["schema"] == "agentd.report/1"
    assert {"dns", "https", "host"} <= {c["id"] for c in report["checks"]}


def test_a_third_party_plugin_distribution_is_loaded_and_its_check_runs(fresh_venv, tmp_path):
    target, _ = fresh_venv
    src = tmp_path / "agentd-hello"
    src.mkdir()
    (src / "pyproject.toml").write_text(THIRD_PARTY_PYPROJECT)
    (src / "agentd_hello.py").write_text(THIRD_PARTY_MODULE)
    _run([str(target / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(src)])
    env = _env(tmp_path)
    listing = json.loads(_run([str(target / "bin" / "agentd"), "plugins", "--json"], env=env, cwd=tmp_path).stdout)
    hello = next(p for p in listing if p["name"] == "hello")
    assert hello["origin"] == "entry point agentd-hello 0.3.0"
    assert hello["hooks"] == ["agentd_collect_checks"]
    result = subprocess.run(
        [str(target / "bin" / "agentd"), "check", "--json"], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    check = next(c for c in json.loads(result.stdout)["checks"] if c["id"] == "hello.thirdparty")
    assert check["status"] == "pass"
    assert check["summary"] == "hello from a third-party distribution"
