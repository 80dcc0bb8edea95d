"""The platform seam's branches that can be exercised on this Linux machine: the lock,
the macOS peer-credential parser, the paths a macOS user gets. (The Windows branches,
paths included, run under Wine in tests/windows/test_wine.py.)"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import platformdirs
import pytest

from agentd import paths
from agentd.osdeps import filelock
from agentd.osdeps._posix_control import XUCRED, parse_xucred


def test_the_lock_excludes_a_second_holder_until_released(tmp_path):
    path = tmp_path / ".lock"
    first = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    second = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        assert filelock.try_lock(first) is True
        assert filelock.try_lock(second) is False
        filelock.unlock(first)
        assert filelock.try_lock(second) is True
        filelock.unlock(second)
    finally:
        os.close(first)
        os.close(second)


def test_macos_xucred_gives_uid_and_only_the_counted_groups():
    data = XUCRED.pack(0, 501, 3, 20, 12, 61, *([99] * 13))
    assert parse_xucred(data) == (501, {20, 12, 61})
    assert XUCRED.size == struct.calcsize("IIh2x16I") == 76


def test_macos_xucred_with_a_bogus_group_count_is_bounded():
    assert parse_xucred(XUCRED.pack(0, 0, 40, *range(16))) == (0, set(range(16)))
    assert parse_xucred(XUCRED.pack(0, 7, -1, *range(16))) == (7, set())


def _fresh_platformdirs(monkeypatch, platform: str):
    """platformdirs picks its implementation at import: re-import it for ``platform``."""
    monkeypatch.setattr(sys, "platform", platform)
    for name in [n for n in sys.modules if n == "platformdirs" or n.startswith("platformdirs.")]:
        monkeypatch.delitem(sys.modules, name)
    import platformdirs as fresh

    monkeypatch.setattr(paths, "platformdirs", fresh)
    return fresh


@pytest.fixture
def clean_env(monkeypatch):
    for var in ("AGENTD_STATE_DIR", "AGENTD_RUNTIME_DIR", "STATE_DIRECTORY", "RUNTIME_DIRECTORY",
                "CONFIGURATION_DIRECTORY", "AGENTD_SERVICE", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(var, raising=False)
    yield monkeypatch
    sys.modules["platformdirs"] = platformdirs


def test_macos_user_paths_are_under_library(clean_env):
    clean_env.setenv("HOME", "/Users/agent")
    _fresh_platformdirs(clean_env, "darwin")
    assert paths.state_dir() == Path("/Users/agent/Library/Application Support/agentd")
    assert paths.config_dir() == Path("/Users/agent/Library/Application Support/agentd")
    assert paths.site_config_dir() == Path("/Library/Application Support/agentd")
    assert not paths.service_mode()


POSIX_ONLY_MODULES = {"fcntl", "grp", "pwd", "termios"}
ROOT = Path(__file__).resolve().parents[2]


def _module_level_imports(tree) -> set[str]:
    """Top-level names imported outside functions, and outside ``if sys.platform`` branches
    that exclude Windows (the seam's way of choosing)."""
    import ast

    found: set[str] = set()

    def visit(nodes, windows_possible: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.Import) and windows_possible:
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and windows_possible and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.If):
                test = ast.unparse(node.test)
                if test == "sys.platform == 'win32'":
                    visit(node.body, windows_possible)
                    visit(node.orelse, False)  # the else branch never runs on Windows
                elif test == "sys.platform != 'win32'":
                    visit(node.body, False)
                    visit(node.orelse, windows_possible)
                else:
                    visit(node.body, windows_possible)
                    visit(node.orelse, windows_possible)
            elif isinstance(node, ast.Try):
                visit(node.body, windows_possible)
                for handler in node.handlers:
                    visit(handler.body, windows_possible)
                visit(node.orelse, windows_possible)
                visit(node.finalbody, windows_possible)

    visit(tree.body, True)
    return found


def test_no_posix_only_module_is_imported_at_module_level_outside_posix_only_modules():
    import ast

    offenders = {}
    files = sorted((ROOT / "agentd").rglob("*.py")) + sorted((ROOT / "plugins").rglob("*.py"))
    assert len(files) > 80
    for path in files:
        if path.name.startswith("_posix") or (ROOT / "agentd" / "testing") in path.parents:
            continue  # POSIX-only by name (agentd/osdeps/__init__.py); the test fixtures (netns, coturn, postgres) are Linux's
        imported = _module_level_imports(ast.parse(path.read_text(encoding="utf-8")))
        if imported & POSIX_ONLY_MODULES:
            offenders[str(path.relative_to(ROOT))] = sorted(imported & POSIX_ONLY_MODULES)
    assert offenders == {}


def test_the_scan_sees_an_import_the_seam_would_not_allow():
    import ast

    assert _module_level_imports(ast.parse("import fcntl\n")) == {"fcntl"}
    assert _module_level_imports(ast.parse('if sys.platform == "win32":\n    import msvcrt\nelse:\n    import fcntl\n')) == {"msvcrt"}
    assert _module_level_imports(ast.parse("def f():\n    import grp\n")) == set()


def test_the_macos_launchd_plist_runs_the_daemon_and_restarts_it_only_on_failure():
    import plistlib

    plist = plistlib.loads((ROOT / "packaging" / "macos" / "com.example.agentd.plist").read_bytes())
    assert plist["ProgramArguments"][-1] == "run" and plist["ProgramArguments"][0].endswith("/agentd")
    assert plist["KeepAlive"] == {"SuccessfulExit": False} and plist["RunAtLoad"] is True
    assert plist["ExitTimeOut"] > 4.0 + 1  # above the default [daemon] stop_timeout_s
    env = plist["EnvironmentVariables"]
    assert env["AGENTD_STATE_DIR"].startswith("/Library/") and env["AGENTD_RUNTIME_DIR"] == "/var/run/agentd"
    assert plist["Label"] == "com.example.agentd"


def test_agentd_service_says_what_to_use_instead_off_windows(monkeypatch, capsys):
    from agentd import winservice

    monkeypatch.setattr(sys, "platform", "darwin")
    assert winservice.main(["status"]) == 2
    assert "launchd plist in packaging/macos" in capsys.readouterr().err
    monkeypatch.setattr(sys, "platform", "linux")
    assert winservice.main(["install"]) == 2
    assert "systemd unit" in capsys.readouterr().err


def test_windows_interface_names_tell_wifi_and_vpn(monkeypatch):
    from types import SimpleNamespace

    from agentd_plugins.host import sample

    monkeypatch.setattr(sys, "platform", "win32")
    assert sample.is_wifi("Wi-Fi") and sample.is_wifi("Wi-Fi 2") and sample.is_wifi("WLAN")
    assert not sample.is_wifi("Ethernet") and not sample.is_wifi("Loopback Pseudo-Interface 1")
    up, down = SimpleNamespace(isup=True), SimpleNamespace(isup=False)  # what vpn_interfaces reads of psutil's stats
    stats = {"Ethernet": up, "OpenVPN Wintun": up, "PANGP Virtual Ethernet Adapter": up, "Zscaler": down, "Wi-Fi": up}
    assert sample.vpn_interfaces(stats) == ("OpenVPN Wintun", "PANGP Virtual Ethernet Adapter")
