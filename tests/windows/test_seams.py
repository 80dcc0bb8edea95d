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
