"""The Windows test bench: Debian's Wine, the package packaging/windows/build makes (the
official embeddable CPython 3.11 and the win_amd64 wheels from PyPI), a Wine prefix.

Cached between runs under ``$AGENTD_TEST_CACHE`` (default ``~/.cache/agentd-tests``):
the downloads (about 60 MB) and the unpacked base (about 140 MB) of the build, the
ProcessPrng DLL Wine 8 lacks (tests/windows/processprng.c, built with mingw-w64), and a
pristine Wine prefix (about 700 MB). An empty cache cost 37 s of set-up here (with pip's
own cache warm; else 60 MB of downloads too); later runs copy the prefix as hard links
(registry files as real copies) and rebuild only agentd's own files: ready in 3-6 s.

Wine's output is piped, never redirected to a file: Wine fails a redirected handle with
"Invalid handle".
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import selectors
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


def run_quiet(cmd: list[str], env: dict[str, str], timeout: float, check: bool = False) -> int:
    """A Wine command whose children may outlive it (wineserver, services.exe, winedevice.exe):
    no pipe of ours for them to inherit, and its own session, so nothing waits on them."""
    proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True, timeout=timeout, check=check)
    return proc.returncode


def run_piped(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """``cmd`` with stdout and stderr piped (Wine fails a redirect to a file), complete once
    the process itself has exited, not at the pipes' end of file: a Wine process it started
    that lives on (a service, a wineserver) may hold the pipes open for minutes. What the
    process wrote is in the pipes when it has exited, so a last non-blocking read gets all of
    it. Bounded by ``timeout`` (the process is killed and TimeoutExpired raised)."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    chunks: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
    selector = selectors.DefaultSelector()
    for fd in chunks:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)

    def drain(fd: int) -> None:
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            if not data:
                selector.unregister(fd)
                return
            chunks[fd].append(data)

    try:
        while True:
            exited = proc.poll() is not None
            if exited:
                for fd in list(selector.get_map()):
                    drain(fd)
                break
            if time.monotonic() - started > timeout:
                proc.kill()
                proc.wait(timeout=30)
                raise subprocess.TimeoutExpired(cmd, timeout, output=b"".join(chunks[out_fd]),
                                                stderr=b"".join(chunks[err_fd]))
            if selector.get_map():
                for key, _ in selector.select(timeout=0.2):
                    drain(key.fd)  # type: ignore[arg-type]
            else:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.2)
    finally:
        selector.close()
        proc.stdout.close()
        proc.stderr.close()

    def text(fd: int) -> str:
        return b"".join(chunks[fd]).decode("utf-8", "replace")

    return subprocess.CompletedProcess(cmd, proc.returncode, text(out_fd), text(err_fd))


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


def wine_env(prefix: Path) -> dict[str, str]:
    env = {**os.environ, **WINE_ENV, "WINEPREFIX": str(prefix)}
    for name in ("DISPLAY", "WAYLAND_DISPLAY"):
        env.pop(name, None)
    return env


def start_server(env: dict[str, str]) -> None:
    """One persistent wineserver for the prefix, started before any other Wine command: a
    wineserver that a piped ``wine`` command starts inherits that command's pipes and keeps
    them open while it lives (a test run once waited minutes on it)."""
    run_quiet(["wineserver", "-p"], env, timeout=60, check=True)


def stop_server(env: dict[str, str]) -> None:
    """Kill the prefix's wineserver and every Wine process of it; wait (bounded) until it is gone."""
    run_quiet(["wineserver", "-k"], env, timeout=60)
    with contextlib.suppress(subprocess.TimeoutExpired):
        run_quiet(["wineserver", "-w"], env, timeout=30)


def pristine_prefix() -> Path:
    prefix = cache_root() / "prefix-wine"
    done = prefix / ".agentd-complete"
    if done.exists():
        return prefix
    if prefix.exists():
        shutil.rmtree(prefix)
    env = wine_env(prefix)
    # no persistent wineserver here (it needs the prefix folder, which wineboot makes); the
    # one wineboot starts has no pipe of ours either, and ends by itself once idle
    run_quiet(["wineboot", "-i"], env, timeout=600, check=True)
    # The SCM waits ServicesPipeTimeout for a started service to connect: 30 s on Windows,
    # 10 s in Wine; python.exe importing pywin32 on this loaded 2-core machine under Wine can
    # take longer. (On a PC the host connects in about a second.)
    run_quiet(["wine", "reg", "add", r"HKLM\System\CurrentControlSet\Control", "/v", "ServicesPipeTimeout",
               "/t", "REG_DWORD", "/d", "120000", "/f"], env, timeout=300, check=True)
    try:
        run_quiet(["wineserver", "-w"], env, timeout=120)  # it writes the registry out as it exits
    except subprocess.TimeoutExpired:
        stop_server(env)
    if "ServicesPipeTimeout" not in (prefix / "system.reg").read_text(encoding="utf-8", errors="replace"):
        raise RuntimeError(f"{prefix}: ServicesPipeTimeout did not reach system.reg")
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
        """``wine ARGS...`` with stdout and stderr piped (text), done when the process exits."""
        return run_piped(["wine", *args], env={**self.env, **(extra_env or {})}, timeout=timeout)

    def agentd(self, *args: str, timeout: float = 120.0, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return self.run(str(self.python), "-m", "agentd", *args, timeout=timeout, extra_env=extra_env)

    def python_code(self, code: str, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        return self.run(str(self.python), "-c", code, *args, timeout=timeout)

    keeper: subprocess.Popen | None = None

    def start_session(self) -> None:
        """The wineserver, then a user process that keeps the session up (Wine stops
        services.exe and every service once no user process is left: a logged-out session),
        then one quiet command that waits for services.exe: every long-lived Wine process
        starts here, with no pipe of ours."""
        start_server(self.env)
        self.keeper = subprocess.Popen(["wine", str(self.python), "-c", "import time; time.sleep(7200)"], env=self.env,
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       start_new_session=True)
        run_quiet(["wine", "sc", "query", "agentd"], self.env, timeout=180)

    def end_session(self) -> None:
        """Every Wine process of the prefix ends (the keeper too), bounded."""
        stop_server(self.env)
        if self.keeper is not None:
            try:
                self.keeper.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.keeper.kill()
                self.keeper.wait(timeout=30)
            self.keeper = None

    def restart_session(self) -> None:
        """Wine's equivalent of a reboot: every Wine process ends, services.exe starts afresh."""
        self.end_session()
        self.start_session()

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


@contextlib.contextmanager
def wine_session(folder: Path) -> Iterator[Wine]:
    started = time.monotonic()
    with _cache_lock():
        pristine = pristine_prefix()
        package = build_package(folder / "dist")
    prefix = folder / "prefix"
    copy_prefix(pristine, prefix)
    wine = Wine(prefix=prefix, package=package, env=wine_env(prefix))
    try:
        wine.start_session()
        print(f"wine bench ready in {time.monotonic() - started:.0f} s", file=sys.stderr)
        yield wine
    finally:
        wine.end_session()
        shutil.rmtree(prefix, ignore_errors=True)
