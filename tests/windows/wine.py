"""The Windows test bench: Debian's Wine, the package packaging/windows/build makes (the
official embeddable CPython 3.11 and the win_amd64 wheels from PyPI), a Wine prefix.

Cached between runs under ``$AGENTD_TEST_CACHE`` (default ``~/.cache/agentd-tests``):
the downloads (about 60 MB) and the unpacked base (about 140 MB) of the build, the
ProcessPrng DLL Wine 8 lacks (tests/windows/processprng.c, built with mingw-w64), and a
pristine Wine prefix (about 700 MB, ``wineboot`` takes ~1 min). A first run costs
about 3-4 minutes on this 2-core machine; later runs copy the prefix as hard links
(registry files as real copies) and rebuild only agentd's own files, in seconds.

Wine's output is piped, never redirected to a file: Wine fails a redirected handle with
"Invalid handle".
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[2]
PROCESSPRNG_C = Path(__file__).with_name("processprng.c")
MINGW_GCC = "x86_64-w64-mingw32-gcc"
# no Mono, no Gecko (their installers would prompt); no debug chatter on stderr
WINE_ENV = {"WINEDEBUG": "-all", "WINEDLLOVERRIDES": "mscoree,mshtml="}


def cache_root() -> Path:
    return Path(os.environ.get("AGENTD_TEST_CACHE") or Path.home() / ".cache" / "agentd-tests") / "windows"


def wine_missing() -> str | None:
    for tool in ("wine", "wineserver", "wineboot", MINGW_GCC):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (tests/run installs Debian's wine, wine64 and gcc-mingw-w64-x86-64-win32)"
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
    # The SCM waits ServicesPipeTimeout for a started service to connect: 30 s on Windows,
    # 10 s in Wine; python.exe importing pywin32 on this loaded 2-core machine under Wine can
    # take longer. (On a PC the host connects in about a second.)
    subprocess.run(["wine", "reg", "add", r"HKLM\System\CurrentControlSet\Control", "/v", "ServicesPipeTimeout",
                    "/t", "REG_DWORD", "/d", "120000", "/f"], env=env, stdin=subprocess.DEVNULL,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300, check=True)
    subprocess.run(["wineserver", "-w"], env=env, timeout=120, check=False)
    done.write_text("ok\n")
    return prefix


def processprng_dll() -> Path:
    """tests/windows/processprng.c built for Windows (cached by its source's hash)."""
    digest = hashlib.sha256(PROCESSPRNG_C.read_bytes()).hexdigest()[:12]
    dll = cache_root() / f"processprng-{digest}" / "bcryptprimitives.dll"
    if not dll.exists():
        dll.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([MINGW_GCC, "-shared", "-O2", "-o", str(dll), str(PROCESSPRNG_C), "-ladvapi32", "-Wl,--kill-at"],
                       check=True, timeout=300)
    return dll


def build_package(out: Path) -> Path:
    """The package exactly as shipped (no version pins); then, beside the bench's own copy
    of python.exe only, the ProcessPrng that Wine 8 lacks."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "packaging" / "windows" / "build"), "--out", str(out), "--no-zip",
         "--cache", str(cache_root() / "build")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=1500,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"packaging/windows/build failed: {proc.stderr[-3000:]}")
    package = next(p for p in out.iterdir() if p.is_dir() and p.name.endswith("-win_amd64"))
    shutil.copy2(processprng_dll(), package / "python" / "bcryptprimitives.dll")
    return package


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

    def keep_session(self) -> subprocess.Popen:
        """Wine stops services.exe and every service once no user process is left (a
        logged-out session); a process waiting on its stdin keeps the session up."""
        return subprocess.Popen(["wine", str(self.python), "-c", "import sys; sys.stdin.read()"], env=self.env,
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    keeper: subprocess.Popen | None = None

    def restart_session(self) -> None:
        """Wine's equivalent of a reboot: every Wine process ends, services.exe starts afresh."""
        if self.keeper is not None:
            with contextlib.suppress(OSError):
                self.keeper.stdin.close()  # type: ignore[union-attr]
        self.kill_server()
        if self.keeper is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.keeper.wait(timeout=30)
        self.keeper = self.keep_session()

    def linux_pids(self, needle: str) -> list[int]:
        """Linux pids of this prefix's Wine processes whose command line contains ``needle``."""
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
                environ = (proc / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if needle in cmdline and f"WINEPREFIX={self.prefix}".encode() in environ:
                found.append(int(proc.name))
        return found

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
    wine.keeper = wine.keep_session()
    print(f"wine bench ready in {time.monotonic() - started:.0f} s", file=sys.stderr)
    try:
        yield wine
    finally:
        with contextlib.suppress(OSError):
            wine.keeper.stdin.close()  # type: ignore[union-attr]
        wine.kill_server()
        with contextlib.suppress(subprocess.TimeoutExpired):
            wine.keeper.wait(timeout=30)
        shutil.rmtree(prefix, ignore_errors=True)
