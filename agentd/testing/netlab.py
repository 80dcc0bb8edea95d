"""A network lab on one machine: an agent behind a NAT router, a server on the far side.

    agent ns                    router ns                          server ns
    eth0 10.77.1.2/24 ──veth── lan 10.77.1.1/24                    
                               wan 198.18.0.1/24 ──veth── eth0 198.18.0.2/24 (+ 198.18.0.3)

Built with ``ip netns``, veth pairs and nftables, all inside namespaces this lab creates
(the addresses exist only there; nothing touches the host's own interfaces, routes or
ruleset). The router forwards and NATs (``plain``: ``masquerade``, endpoint-independent;
``symmetric``: ``masquerade random,fully-random``, a new mapping per destination;
``none``: routing only) and can drop UDP, drop everything, or drop a random share of
packets per direction with ``numgen random mod 100 < N``. Delay and jitter (no netem in
this kernel): :meth:`Netlab.impair`, a userspace NFQUEUE stage (agentd/testing/impair.py).

    with Netlab.create(nat="plain") as lab:
        with lab.start_coturn(tmp_path / "turn") as turn:        # coturn in the server ns
            lab.drop_udp()                                        # at the router
            proc = lab.run_in_agent([sys.executable, "-m", "agentd", "check", "--json"], env=env)
            value = lab.call_in_agent(module_level_function, arg)  # a Python callable, in the agent ns

Names are ``<prefix>-<pid>-<random>-{agent,router,server}`` so concurrent runs never
collide; :meth:`Netlab.create` first removes leftovers of killed runs with the same
prefix (their pid is gone), and tears its own namespaces down on exit, also on errors
and at interpreter exit.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import os
import pickle
import re
import secrets
import signal
import subprocess
import sys
import time
from agentd.fileio import pid_alive
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

NatMode = Literal["plain", "symmetric", "none"]

DEFAULT_PREFIX = "agentd-lab"
TABLE = "agentd_lab"

AGENT_IP = "10.77.1.2"
ROUTER_LAN_IP = "10.77.1.1"
ROUTER_WAN_IP = "198.18.0.1"
SERVER_IP = "198.18.0.2"
SERVER_IP2 = "198.18.0.3"
"""A second server address: coturn needs two to serve its alternate port (RFC 5780)."""


class NetlabUnavailable(RuntimeError):
    """Network namespaces cannot be created here (not root, no ``ip``/``nft``, a sandbox)."""


def _run(args: Sequence[str], *, check: bool = True, timeout: float = 10.0, input: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def unavailable_reason() -> str | None:
    """Why a lab cannot be built here, or None when it can (tries a throw-away namespace)."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs the lab tests as root)"
    for tool in ("ip", "nft"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            return f"{tool!r} is not installed (Debian packages iproute2, nftables)"
    name = f"{DEFAULT_PREFIX}-probe-{os.getpid()}-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    try:
        nft = subprocess.run(["ip", "netns", "exec", name, "nft", "list", "ruleset"], capture_output=True, text=True)
        if nft.returncode != 0:
            return f"nftables does not work in a namespace: {nft.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _netns_list() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_and_delete(name: str) -> None:
    """Stop every process left in namespace ``name`` (TERM, then KILL), then delete it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [int(p) for p in subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split() if p.isdigit()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        for _ in range(30):  # up to 1.5 s for them to go
            if not any(pid_alive(p) for p in pids):
                break
            time.sleep(0.05)
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


def cleanup_stale(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Delete namespaces ``<prefix>-<pid>-...`` whose creating process is gone (a killed run)."""
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)-")
    removed = []
    for name in _netns_list():
        match = pattern.match(name)
        if match and not pid_alive(int(match.group(1))):
            _kill_and_delete(name)
            removed.append(name)
    return removed


@dataclass
class Netlab:
    """Three namespaces and the router's nftables table; see the module docstring."""

    prefix: str
    tag: str
    nat: NatMode = "plain"
    agent_ip: str = AGENT_IP
    server_ip: str = SERVER_IP
    server_ip2: str = SERVER_IP2
    router_wan_ip: str = ROUTER_WAN_IP
    _created: list[str] = field(default_factory=list, repr=False)
    _started: list[subprocess.Popen] = field(default_factory=list, repr=False)

    @property
    def agent(self) -> str:
        return f"{self.prefix}-{self.tag}-agent"

    @property
    def router(self) -> str:
        return f"{self.prefix}-{self.tag}-router"

    @property
    def server(self) -> str:
        return f"{self.prefix}-{self.tag}-server"

    # -- life cycle -----------------------------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def create(cls, *, nat: NatMode = "plain", prefix: str = DEFAULT_PREFIX) -> Iterator[Netlab]:
        """Build the lab (raises :class:`NetlabUnavailable` when namespaces cannot be made)."""
        reason = unavailable_reason()
        if reason:
            raise NetlabUnavailable(reason)
        cleanup_stale(prefix)
        lab = cls(prefix=prefix, tag=f"{os.getpid()}-{secrets.token_hex(3)}", nat=nat)
        atexit.register(lab.teardown)  # a failing test or Ctrl-C still leaves nothing behind
        try:
            lab._build()
            yield lab
        finally:
            lab.teardown()
            atexit.unregister(lab.teardown)

    def _build(self) -> None:
        for name in (self.agent, self.router, self.server):
            _run(["ip", "netns", "add", name])
            self._created.append(name)
            _run(["ip", "-n", name, "link", "set", "lo", "up"])
        a, r, s = self.agent, self.router, self.server
        # veth pairs are created inside the namespaces: no interface ever appears on the host
        _run(["ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "lan", "netns", r])
        _run(["ip", "-n", s, "link", "add", "eth0", "type", "veth", "peer", "name", "wan", "netns", r])
        _run(["ip", "-n", a, "addr", "add", f"{self.agent_ip}/24", "dev", "eth0"])
        _run(["ip", "-n", r, "addr", "add", f"{ROUTER_LAN_IP}/24", "dev", "lan"])
        _run(["ip", "-n", r, "addr", "add", f"{self.router_wan_ip}/24", "dev", "wan"])
        _run(["ip", "-n", s, "addr", "add", f"{self.server_ip}/24", "dev", "eth0"])
        _run(["ip", "-n", s, "addr", "add", f"{self.server_ip2}/24", "dev", "eth0"])
        for ns, dev in ((a, "eth0"), (r, "lan"), (r, "wan"), (s, "eth0")):
            _run(["ip", "-n", ns, "link", "set", dev, "up"])
        _run(["ip", "-n", a, "route", "add", "default", "via", ROUTER_LAN_IP])
        _run(["ip", "-n", s, "route", "add", "10.77.1.0/24", "via", self.router_wan_ip])  # for nat="none"
        _run(["ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        self.nft(
            r,
            f"""
            table inet {TABLE} {{
              chain forward {{ type filter hook forward priority 0; policy accept; jump faults; }}
              chain faults {{ }}
              chain postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}
            }}
            """,
        )
        self.set_nat(self.nat)
        self._wait_for_addresses()

    def _wait_for_addresses(self) -> None:
        """IPv4 addresses are usable at once, but wait until the veths report carrier."""
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            state = _run(["ip", "-n", self.agent, "-o", "link", "show", "eth0"]).stdout
            if "LOWER_UP" in state:
                return
            time.sleep(0.02)

    def teardown(self) -> None:
        """Remove every namespace of this lab (processes in them are stopped first). Idempotent."""
        while self._created:
            _kill_and_delete(self._created.pop())
        # a process popen_in started may not have entered its namespace yet when the
        # namespace's processes were listed (a loaded machine): it would outlive the lab
        while self._started:
            proc = self._started.pop()
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)

    # -- the router ---------------------------------------------------------------------------------

    def nft(self, namespace: str, script: str) -> None:
        _run(["ip", "netns", "exec", namespace, "nft", "-f", "-"], input=script)

    def set_nat(self, mode: NatMode) -> None:
        """``plain`` (endpoint-independent), ``symmetric`` (random,fully-random), ``none``."""
        rule = {"plain": "masquerade", "symmetric": "masquerade random,fully-random", "none": ""}[mode]
        script = f"flush chain inet {TABLE} postrouting\n"
        if rule:
            script += f'add rule inet {TABLE} postrouting oifname "wan" {rule}\n'
        self.nft(self.router, script)
        # existing conntrack entries keep their old mapping: flush them where the conntrack
        # tool exists; without it, only new flows (new sockets) see the new mode
        subprocess.run(["ip", "netns", "exec", self.router, "conntrack", "-F"], capture_output=True)
        self.nat = mode

    def clear_faults(self) -> None:
        """Remove every drop and loss rule."""
        self.nft(self.router, f"flush chain inet {TABLE} faults\n")

    def drop_udp(self) -> None:
        """Drop all forwarded UDP (a firewall that lets only TCP out)."""
        self.nft(self.router, f"add rule inet {TABLE} faults meta l4proto udp drop\n")

    def drop_all(self) -> None:
        """Drop everything forwarded: every server is blackholed (no ICMP, no RST)."""
        self.nft(self.router, f"add rule inet {TABLE} faults drop\n")

    def set_loss(self, upstream_pct: float = 0, downstream_pct: float = 0, *, protocol: str = "udp") -> None:
        """Drop a random share of forwarded ``protocol`` packets: upstream is agent -> server."""
        script = ""
        for iface, pct in (("lan", upstream_pct), ("wan", downstream_pct)):
            pct = int(round(pct))
            if pct > 0:
                script += f'add rule inet {TABLE} faults iifname "{iface}" meta l4proto {protocol} numgen random mod 100 < {pct} drop\n'
        if script:
            self.nft(self.router, script)

    @contextlib.contextmanager
    def impair(self, direction: Literal["up", "down"], **kw: Any):
        """Delay, jitter or loss on the router's forwarding, one direction (up: agent -> server).

        An :class:`agentd.testing.impair.Impairment` (a userspace NFQUEUE stage; keywords
        ``delay_ms``, ``jitter_ms``, ``loss_pct``, ``protocol``, ``order``, ``seed``).
        """
        from agentd.testing.impair import Impairment

        if direction not in ("up", "down"):
            raise ValueError(f"direction must be 'up' or 'down', not {direction!r}")
        with Impairment.attach(self.router, iif="lan" if direction == "up" else "wan", **kw) as stage:
            yield stage

    def counters(self) -> str:
        return _run(["ip", "netns", "exec", self.router, "nft", "list", "table", "inet", TABLE]).stdout

    # -- running things in the namespaces ------------------------------------------------------------------

    def exec(self, namespace: str, args: Sequence[str], **kw: Any) -> subprocess.CompletedProcess:
        """Run ``args`` inside ``namespace`` (``subprocess.run`` keywords pass through; text mode by default)."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 60)
        return subprocess.run(["ip", "netns", "exec", namespace, *args], **kw)

    def run_in_agent(self, args: Sequence[str], **kw: Any) -> subprocess.CompletedProcess:
        return self.exec(self.agent, args, **kw)

    def popen_in(self, namespace: str, args: Sequence[str], **kw: Any) -> subprocess.Popen:
        """Start a long-running process inside ``namespace`` (stopped at teardown at the latest)."""
        proc = subprocess.Popen(["ip", "netns", "exec", namespace, *args], **kw)
        self._started.append(proc)
        return proc

    def call_in(self, namespace: str, func: Callable[..., Any], *args: Any, timeout: float = 30.0) -> Any:
        """Run ``func(*args)`` in a fresh Python inside ``namespace`` and return its result.

        ``func`` must be importable by module and name (a module-level function); an
        ``async def`` is run with ``asyncio.run``. Arguments and result are pickled.
        """
        payload = base64.b64encode(pickle.dumps((func.__module__, func.__qualname__, args))).decode()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # the caller's imports work there too
        proc = self.exec(namespace, [sys.executable, "-c", _CALL_BOOTSTRAP], input=payload, timeout=timeout, env=env)
        marker = "AGENTD-NETLAB-RESULT:"
        for line in proc.stdout.splitlines():
            if line.startswith(marker):
                ok, value = pickle.loads(base64.b64decode(line[len(marker):]))
                if ok:
                    return value
                raise RuntimeError(f"{func.__qualname__} failed in {namespace}: {value}")
        raise RuntimeError(f"{func.__qualname__} gave no result in {namespace} (exit {proc.returncode}): {proc.stderr[-2000:]}")

    def call_in_agent(self, func: Callable[..., Any], *args: Any, timeout: float = 30.0) -> Any:
        return self.call_in(self.agent, func, *args, timeout=timeout)

    @contextlib.contextmanager
    def start_coturn(self, folder: Path, **kw: Any):
        """A real coturn in the server namespace on :attr:`server_ip` (+ :attr:`server_ip2`)."""
        from agentd.testing.coturn import Coturn

        kw.setdefault("second_ip", self.server_ip2)
        with Coturn.start(folder, listen_ip=self.server_ip, netns=self.server, **kw) as turn:
            yield turn


_CALL_BOOTSTRAP = r"""
import asyncio, base64, importlib, inspect, pickle, sys, traceback
module, qualname, args = pickle.loads(base64.b64decode(sys.stdin.read()))
target = importlib.import_module(module)
for part in qualname.split("."):
    target = getattr(target, part)
try:
    value = target(*args)
    if inspect.isawaitable(value):
        value = asyncio.run(value) if inspect.iscoroutine(value) else value
    out = (True, value)
except BaseException:
    out = (False, traceback.format_exc())
print("AGENTD-NETLAB-RESULT:" + base64.b64encode(pickle.dumps(out)).decode(), flush=True)
"""
