"""The Windows test bench: Debian's Wine, the package packaging/windows/build makes (the
official embeddable CPython 3.11 and the win_amd64 wheels from PyPI), a Wine prefix.

Cached between runs under ``$AGENTD_TEST_CACHE`` (default ``~/.cache/agentd-tests``):
the downloads (about 60 MB) and the unpacked base (about 140 MB) of the build, and a
pristine Wine prefix (about 700 MB, ``wineboot`` takes ~1 min). A first run costs
about 3-4 minutes on this 2-core machine; later runs copy the prefix as hard links
(registry files as real copies) and rebuild only agentd's own files, in seconds.

Wine's output is piped, never redirected to a file: Wine fails a redirected handle with
"Invalid handle".
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = Path(__file__).with_name("wine-constraints.txt")
# no Mono, no Gecko (their installers would prompt); no debug chatter on stderr
WINE_ENV = {"WINEDEBUG": "-all", "WINEDLLOVERRIDES": "mscoree,mshtml="}


def cache_root() -> Path:
    return Path(os.environ.get("AGENTD_TEST_CACHE") or Path.home() / ".cache" / "agentd-tests") / "windows"


def wine_missing() -> str | None:
    for tool in ("wine", "wineserver", "wineboot"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (tests/run installs Debian's wine and wine64)"
    return None


def windows_path(path: Path | str) -> str:
    """A Linux path as Wine's Z: drive sees it."""
    return "Z:" + str(Path(path).resolve()).replace("/", "\\")


@contextlib.contextmanager
def _cache_lock() -> Iterator[None]:
    """Concurrent test runs (other worktrees) build the cache once, one at a time."""
    folder = cache_root()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def pristine_prefix() -> Path:
    prefix = cache_root() / "prefix-wine"
    done = prefix / ".agentd-complete"
    if done.exists():
        return prefix
    if prefix.exists():
        shutil.rmtree(prefix)
    env = {**os.environ, **WINE_ENV, "WINEPREFIX": str(prefix)}
    env.pop("DISPLAY", None)
    subprocess.run(["wineboot", "-i"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                   timeout=600, check=True)
    subprocess.run(["wineserver", "-w"], env=env, timeout=120, check=False)
    done.write_text("ok\n")
    return prefix


def build_package(out: Path) -> Path:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "packaging" / "windows" / "build"), "--out", str(out), "--no-zip",
         "--cache", str(cache_root() / "build"), "--constraint", str(CONSTRAINTS)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=1500,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"packaging/windows/build failed: {proc.stderr[-3000:]}")
    return next(p for p in out.iterdir() if p.is_dir() and p.name.endswith("-win_amd64"))


def copy_prefix(pristine: Path, target: Path) -> None:
    """Hard links for the big, never rewritten files; real copies of what Wine rewrites in place."""
    subprocess.run(["cp", "-al", str(pristine), str(target)], check=True)
    for path in list(target.glob("*.reg")) + [target / ".update-timestamp"] + list((target / "drive_c" / "windows").glob("*.ini")):
        if path.exists():
            data = path.read_bytes()
            path.unlink()
            path.write_bytes(data)


@dataclass
class Wine:
    """One session's Wine prefix and the built package in it."""

    prefix: Path
    package: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def python(self) -> Path:
        return self.package / "python" / "python.exe"

    @property
    def drive_c(self) -> Path:
        return self.prefix / "drive_c"

    @property
    def program_data(self) -> Path:
        return self.drive_c / "ProgramData" / "agentd"

    def run(self, *args: str, timeout: float = 120.0, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """``wine ARGS...`` with stdout and stderr piped (text)."""
        return subprocess.run(
            ["wine", *args], env={**self.env, **(extra_env or {})}, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace", timeout=timeout,
        )

    def agentd(self, *args: str, timeout: float = 120.0, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return self.run(str(self.python), "-m", "agentd", *args, timeout=timeout, extra_env=extra_env)

    def python_code(self, code: str, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        return self.run(str(self.python), "-c", code, *args, timeout=timeout)

    def kill_server(self) -> None:
        subprocess.run(["wineserver", "-k"], env=self.env, timeout=60, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def wine_session(folder: Path) -> Iterator[Wine]:
    started = time.monotonic()
    with _cache_lock():
        pristine = pristine_prefix()
        package = build_package(folder / "dist")
    prefix = folder / "prefix"
    copy_prefix(pristine, prefix)
    env = {**os.environ, **WINE_ENV, "WINEPREFIX": str(prefix)}
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    wine = Wine(prefix=prefix, package=package, env=env)
    print(f"wine bench ready in {time.monotonic() - started:.0f} s", file=sys.stderr)
    try:
        yield wine
    finally:
        wine.kill_server()
        shutil.rmtree(prefix, ignore_errors=True)
