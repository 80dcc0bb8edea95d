"""Fixtures every test area shares: an isolated agentd environment and a CLI runner.

Each test gets its own config, state and runtime folders (through the environment
variables agentd honours), so no test reads the machine's real configuration and no two
tests share state.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@dataclass
class AgentdEnv:
    root: Path
    env: dict[str, str]

    @property
    def config_file(self) -> Path:
        return self.root / "config" / "agentd.toml"

    def write_config(self, text: str) -> Path:
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(text, encoding="utf-8")
        self.env["AGENTD_CONFIG"] = str(self.config_file)
        os.environ["AGENTD_CONFIG"] = str(self.config_file)  # in-process tests too (restored by monkeypatch)
        return self.config_file

    def run(self, *args: str, timeout: float = 60.0, input: str | None = None, extra_env: dict | None = None) -> subprocess.CompletedProcess:
        """Run ``python -m agentd ARGS`` (the installed code) with this environment."""
        env = {**self.env, **(extra_env or {})}
        return subprocess.run(
            [sys.executable, "-m", "agentd", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            input=input,
            cwd=self.root,
        )


@pytest.fixture
def agentd_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AgentdEnv:
    """An isolated agentd: config, state and runtime folders under ``tmp_path``.

    Also applied to this process (monkeypatch), for in-process tests.
    """
    root = tmp_path / "agentd"
    dirs = {
        "XDG_CONFIG_HOME": root / "xdg-config",
        "XDG_STATE_HOME": root / "xdg-state",
        "XDG_RUNTIME_DIR": root / "xdg-runtime",
        "AGENTD_STATE_DIR": root / "state",
        "AGENTD_RUNTIME_DIR": root / "run",
    }
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTD_", "CONFIGURATION_DIRECTORY", "STATE_DIRECTORY", "RUNTIME_DIRECTORY", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET"))}
    env.update({k: str(v) for k, v in dirs.items()})
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "200"
    for key in list(os.environ):
        if key.startswith("AGENTD_") or key in ("CONFIGURATION_DIRECTORY", "STATE_DIRECTORY", "RUNTIME_DIRECTORY", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET"):
            monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        if key.startswith(("XDG_", "AGENTD_")):
            monkeypatch.setenv(key, value)
    (root / "config").mkdir(parents=True, exist_ok=True)
    monkeypatch.delenv("AGENTD_CONFIG", raising=False)  # registers the restore for write_config
    return AgentdEnv(root=root, env=env)


OFFLINE_GENESYS = """
[genesys]
# names under the reserved .invalid TLD never resolve (RFC 6761): a dependable offline
region = "agentd-test.invalid"
"""


# Tests that share one thing of the host and must not run at once in two pytest-xdist
# workers: the packaging ones build from this checkout (pip writes build/ in the tree) and
# boot the cached Debian root; the Wine ones share one Wine prefix and its wineserver.
# With --dist loadgroup each group runs in one worker; everything else spreads.
XDIST_GROUPS = {
    "tests/service/test_container.py": "packaging",
    "tests/service/test_packaging.py": "packaging",
    "tests/core/test_wheel.py": "packaging",
    "tests/windows/": "wine",
}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        where = Path(str(item.fspath)).relative_to(REPO).as_posix()
        for prefix, group in XDIST_GROUPS.items():
            if where.startswith(prefix):
                item.add_marker(pytest.mark.xdist_group(group))
                break


def pytest_collection_finish(session: pytest.Session) -> None:
    """In an xdist worker with --dist loadgroup, a grouped test's id carries '@group'; if
    it does not (pytest 9.2 moved Node.nodeid away from the _nodeid that xdist 3.8
    rewrites), the groups would run at once in two workers: stop instead of flaking."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    lost = [item.nodeid for item in session.items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
    if lost:
        pytest.exit(f"pytest-xdist's --dist loadgroup does not group with this pytest ({lost[0]} has no @group); "
                    "use the pytest that pyproject.toml pins, or run with -n 0", returncode=3)
