"""A Debian 12 system booted under its own systemd, for the service tests.

The root is made once by ``debootstrap`` from Debian's packages and cached in
``/var/cache/agentd-tests`` under a hash of what went into it; each test container runs on
an overlay of it (the cache stays pristine, a container's writes go to a temporary upper
folder). The container is booted with ``systemd-nspawn --keep-unit --register=no -b`` and
``--private-network`` (its own loopback only: nothing in it can reach another address),
and entered with ``nsenter -t <its systemd> -a``. Teardown is bounded: SIGTERM to nspawn
(an orderly power-off of the container), then SIGKILL after a few seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator, Sequence

CACHE = Path(os.environ.get("AGENTD_TEST_CACHE", "/var/cache/agentd-tests"))
SUITE = "bookworm"
VARIANT = "minbase"
# What the fleet admin had: a minimal Debian with systemd, D-Bus and Python. No procps
# (so no /bin/kill): the unit must not need it. python3 brings python3.11, which the .deb needs.
PACKAGES = ("systemd", "dbus", "python3")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
BUILD_TIMEOUT_S = 1200
BOOT_TIMEOUT_S = 60
STOP_TIMEOUT_S = 15
UPPER_SIZE = "2g"  # what a container writes: the installed package is ~250 MB with its byte-code

ROOT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class ContainerError(AssertionError):
    """The test container could not be built, booted or entered."""


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (the one reachable from here)."""
    candidates = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in candidates:
        if not path.is_file() or not (path.suffix in (".list", ".sources") or path.name == "sources.list"):
            continue
        text = path.read_text(errors="replace")
        for uri in re.findall(r"^\s*(?:URIs:|deb)\s+(?:\[[^\]]*\]\s+)?(\S+)", text, flags=re.M):
            if uri.rstrip("/").endswith("/debian"):
                return uri.rstrip("/")
    return DEFAULT_MIRROR


def root_key(packages: Sequence[str] = PACKAGES) -> str:
    recipe = "\n".join([SUITE, VARIANT, *sorted(packages), "recipe-1"])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def debian_root(packages: Sequence[str] = PACKAGES) -> Path:
    """The cached Debian root for ``packages``; built (minutes, once) when missing."""
    target = CACHE / f"debian12-root-{root_key(packages)}"
    if (target / ".complete").exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building it: wait for that one
        if (target / ".complete").exists():
            return target
        building = Path(tempfile.mkdtemp(prefix="debian12-build-", dir=CACHE))
        try:
            started = time.monotonic()
            done = subprocess.run(
                ["debootstrap", f"--variant={VARIANT}", f"--include={','.join(packages)}", SUITE, str(building), debian_mirror()],
                capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
            )
            if done.returncode != 0:
                raise ContainerError(f"debootstrap failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
            # downloaded packages are not needed again; a machine id comes at each boot
            for deb in (building / "var/cache/apt/archives").glob("*.deb"):
                deb.unlink()
            (building / "etc/machine-id").write_text("")
            # no name server: the container has no network beyond its loopback anyway
            (building / "etc/resolv.conf").write_text("")
            (building / ".complete").write_text(f"built in {time.monotonic() - started:.0f} s\n")
            if target.exists():
                shutil.rmtree(target)
            building.rename(target)
        finally:
            if building.exists():
                shutil.rmtree(building, ignore_errors=True)
    return target


NSPAWN_RUNTIME_TAG = "agentd-tests"
"""The source name of our tmpfs on /run/systemd/nspawn (how _release_nspawn_runtime knows it is ours)."""


def _ensure_nspawn_runtime() -> None:
    """systemd-nspawn keeps state in /run/systemd/nspawn; on a host whose PID 1 is not
    systemd that folder may be missing or read-only: give it a tmpfs of its own."""
    folder = Path("/run/systemd/nspawn")
    if Path("/run/systemd/system").exists():  # systemd is the host's init: it has its folders
        return
    if _is_mountpoint(folder):
        return
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=16m", NSPAWN_RUNTIME_TAG, str(folder)], check=True, timeout=10)


def _release_nspawn_runtime() -> None:
    """Take our tmpfs off /run/systemd/nspawn again once no systemd-nspawn runs: the tests
    leave the host as they found it (another test process may still hold a container)."""
    folder = Path("/run/systemd/nspawn")
    mounted = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(folder)], capture_output=True, text=True, timeout=10)
    if mounted.stdout.strip() != NSPAWN_RUNTIME_TAG:
        return
    if any(_comm(int(entry.name)) == "systemd-nspawn" for entry in Path("/proc").iterdir() if entry.name.isdigit()):
        return
    subprocess.run(["umount", str(folder)], capture_output=True, timeout=30)


def _is_mountpoint(path: Path) -> bool:
    return subprocess.run(["mountpoint", "-q", str(path)], timeout=10).returncode == 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class Container:
    """One booted container on an overlay of a cached root."""

    def __init__(self, root: Path, *, name: str | None = None, binds_ro: Sequence[tuple[Path, str]] = (),
                 binds_rw: Sequence[tuple[Path, str]] = ()) -> None:
        self.lower = root
        self.name = name or f"agentd-test-{uuid.uuid4().hex[:8]}"
        self.binds_ro = list(binds_ro)
        self.binds_rw = list(binds_rw)
        self.work = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.merged = self.work / "merged"
        self.log = self.work / "nspawn.log"
        self.proc: subprocess.Popen | None = None
        self.init_pid: int | None = None
        self.boot_s: float | None = None
        self.stop_s: float | None = None

    # -- life --------------------------------------------------------------------------

    def mount(self) -> None:
        # the container's writes go to memory: dpkg's fsyncs cost nothing and teardown is one umount
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"mode=0700,size={UPPER_SIZE}", "agentd-test-upper", str(self.work)],
                       check=True, timeout=30)
        for sub in ("upper", "work", "merged"):
            (self.work / sub).mkdir()
        subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={self.lower},upperdir={self.work / 'upper'},workdir={self.work / 'work'}", str(self.merged)],
            check=True, timeout=30,
        )

    def _binds(self) -> list[str]:
        return [f"--bind-ro={host}:{inside}" for host, inside in self.binds_ro] + [f"--bind={host}:{inside}" for host, inside in self.binds_rw]

    def offline(self, *argv: str, timeout: float = 300, input: str | None = None) -> subprocess.CompletedProcess:
        """Run a command in the root while it is not booted (as an image builder does)."""
        cmd = ["systemd-nspawn", "--quiet", "--keep-unit", "--register=no", "--private-network", "--pipe",
               "-D", str(self.merged), "-M", self.name, *self._binds()]
        _ensure_nspawn_runtime()
        return subprocess.run([*cmd, "--", *argv], capture_output=True, text=True, timeout=timeout, input=input,
                              env={"PATH": os.environ.get("PATH", ROOT_PATH), "LANG": "C.UTF-8"})

    def boot(self) -> None:
        _ensure_nspawn_runtime()
        cmd = ["systemd-nspawn", "--quiet", "--keep-unit", "--register=no", "--private-network", "-b",
               "-D", str(self.merged), "-M", self.name, "--console=pipe", *self._binds()]
        started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = started + BOOT_TIMEOUT_S
        while time.monotonic() < deadline and self.init_pid is None:
            if self.proc.poll() is not None:
                raise ContainerError(f"systemd-nspawn exited {self.proc.returncode}: {self.log_tail()}")
            self.init_pid = self._find_init()
            if self.init_pid is None:
                time.sleep(0.1)
        if self.init_pid is None:
            raise ContainerError(f"no systemd in the container after {BOOT_TIMEOUT_S} s: {self.log_tail()}")
        while True:  # systemd's socket comes a moment after its process
            left = max(1.0, deadline - time.monotonic())
            state = self.sh(f"timeout {left:.0f} systemctl is-system-running --wait", timeout=left + 10, check=False)
            if state.stdout.strip() in ("running", "degraded") or time.monotonic() > deadline or self.proc.poll() is not None:
                break
            time.sleep(0.2)
        if state.stdout.strip() not in ("running", "degraded"):
            raise ContainerError(f"the container did not finish booting: {state.stdout}{state.stderr} {self.log_tail()}")
        self.boot_s = time.monotonic() - started

    def _find_init(self) -> int | None:
        """The container's PID 1 (its systemd), as the host numbers it: a descendant of nspawn."""
        assert self.proc is not None
        queue, seen = [self.proc.pid], set()
        while queue:
            pid = queue.pop()
            if pid in seen:
                continue
            seen.add(pid)
            for child in _children(pid):
                if _comm(child) == "systemd":
                    return child
                queue.append(child)
        return None

    def stop(self) -> None:
        """Power the container off (SIGTERM to nspawn), SIGKILL what is left after a bound."""
        started = time.monotonic()
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                if self.init_pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.init_pid, signal.SIGKILL)  # PID 1 of a pid namespace: all of it goes
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            self.stop_s = time.monotonic() - started

    def unmount(self) -> None:
        for target in (self.merged, self.work):
            for _ in range(20):
                if not _is_mountpoint(target):
                    break
                if subprocess.run(["umount", str(target)], capture_output=True, timeout=30).returncode == 0:
                    break
                time.sleep(0.25)
            else:
                subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=30)
        shutil.rmtree(self.work, ignore_errors=True)
        _release_nspawn_runtime()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- inside --------------------------------------------------------------------------

    def run(self, argv: Sequence[str], *, timeout: float = 60, check: bool = True, input: str | None = None,
            user: str | None = None) -> subprocess.CompletedProcess:
        """``argv`` inside the booted container, as root or as ``user`` (with its groups)."""
        assert self.init_pid is not None, "not booted"
        inner = list(argv)
        if user is not None:
            inner = ["runuser", "-u", user, "--", *inner]
        cmd = ["nsenter", "-t", str(self.init_pid), "-a", "-r", "-w",
               "env", "-i", f"PATH={ROOT_PATH}", "LANG=C.UTF-8", "HOME=/root", "TERM=dumb", *inner]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
        except subprocess.TimeoutExpired as exc:
            raise ContainerError(f"{' '.join(argv)} did not finish within {timeout:g} s") from exc
        if check and done.returncode != 0:
            raise ContainerError(f"{' '.join(argv)} exited {done.returncode}: {done.stdout[-2000:]}{done.stderr[-2000:]}")
        return done

    def sh(self, script: str, **kwargs) -> subprocess.CompletedProcess:
        return self.run(["sh", "-c", script], **kwargs)

    def write(self, path: str, text: str, mode: int = 0o644, owner: str = "root:root") -> None:
        self.run(["sh", "-c", f'umask 077; cat > "$1" && chmod {mode:o} "$1" && chown {owner} "$1"', "sh", path], input=text)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        done = self.run(["systemctl", "show", unit, *(f"--property={p}" for p in props)])
        return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


@contextlib.contextmanager
def booted(root: Path, **kwargs) -> Iterator[Container]:
    container = Container(root, **kwargs)
    container.mount()
    try:
        container.boot()
        yield container
    finally:
        container.stop()
        container.unmount()


def can_boot_containers() -> str | None:
    """Why containers cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("debootstrap", "systemd-nspawn", "nsenter", "mount"):
        if not shutil.which(tool):
            return f"{tool} is missing (apt-get install debootstrap systemd-container)"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "no overlayfs"
    return None
