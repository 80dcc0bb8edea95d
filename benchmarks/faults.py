"""Issue-14 benchmark: memory under hostile input.

    .venv/bin/python -m benchmarks.faults                  # both tables
    .venv/bin/python -m benchmarks.faults --clients 200 --line-mb 4

1. A 50 MB Genesys answer (a plain loopback server, agentd.testing.hostile_http): the
   Genesys client in its own process; time until it is refused and that process's peak
   RSS (``wait4``'s ``ru_maxrss``). Before the cap this took ``diagnose`` to 962 MB.
2. ``agentd run`` while ``--clients`` control connections each send ``--line-mb`` MiB
   with no newline: the daemon's RSS before, its peak (VmHWM) and after; how many
   connections got an answer line; whether the daemon still answers ``status``.
   Before the bounds this took the daemon from 66 MB to 903 MB.

Targets: refused at the cap with the process under 150 MB; the daemon under 150 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agentd.testing.hostile_http import flood_unterminated

TARGET_MB = 150.0

_CLIENT = """
import asyncio, sys, time
from agentd.errors import MalformedResponse
from agentd_plugins.genesys.client import GenesysClient
from agentd_plugins.genesys.settings import GenesysSettings
from agentd_plugins.genesys.tokens import AccessToken, TokenManager

async def main():
    async def fixed():
        return AccessToken("t", time.time() + 3600, "client_credentials")
    settings = GenesysSettings(api_base_url=sys.argv[1], login_base_url=sys.argv[1], timeout_s=120, max_retries=0)
    async with GenesysClient(settings, tokens=TokenManager(fixed)) as client:
        started = time.monotonic()
        try:
            await client.get(sys.argv[2])
            print("READ WHOLE", time.monotonic() - started)
        except MalformedResponse as exc:
            print(f"{time.monotonic() - started:.3f}", exc)

asyncio.run(main())
# this process's own peak: VmHWM (ru_maxrss would count the parent's pages from before exec)
print("VmHWM", next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")))
"""


def genesys_table(mb: int) -> bool:
    from agentd.testing.hostile_http import HostileServer

    rows = []
    ok = True
    with HostileServer() as server:
        for path in (f"/huge?mb={mb}", f"/huge-declared?mb={mb}"):
            done = subprocess.run([sys.executable, "-c", _CLIENT, server.url, path], capture_output=True, text=True, timeout=300)
            lines = done.stdout.strip().splitlines()
            peak = int(lines[-1].split()[1]) / 1024 if lines and lines[-1].startswith("VmHWM") else float("nan")
            out = lines[-2] if len(lines) > 1 else ""
            refused = "cap" in out and not out.startswith("READ")
            took = out.split(" ", 1)[0] if refused else "-"
            rows.append((path.split("?")[0], f"{mb} MB", f"{took} s", f"{peak:.0f} MB", "refused at the cap" if refused else out[:60]))
            ok = ok and refused and peak < TARGET_MB
    print(f"| Genesys answer | size | until refused | peak RSS of the client process | outcome |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return ok


def _kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def daemon_table(clients: int, line_mb: float) -> bool:
    with tempfile.TemporaryDirectory(prefix="agentd-faults-") as tmp:
        root = Path(tmp)
        config = root / "agentd.toml"
        config.write_text('[genesys]\nregion = "agentd-bench.invalid"\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTD_")}
        env.update(AGENTD_CONFIG=str(config), AGENTD_STATE_DIR=str(root / "state"), AGENTD_RUNTIME_DIR=str(root / "run"),
                   XDG_CONFIG_HOME=str(root / "xdg"), NOTIFY_SOCKET=str(root / "notify.sock"))
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(root / "notify.sock"))
        notify.settimeout(60)
        log = open(root / "daemon.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "agentd", "run"], env=env, stderr=log, stdout=subprocess.DEVNULL)
        try:
            while b"READY=1" not in notify.recv(4096):
                pass
            before = _kb(proc.pid, "VmRSS") / 1024
            started = time.monotonic()
            answered, reset = asyncio.run(flood_unterminated(str(root / "run" / "control.sock"), clients, int(line_mb * 2**20)))
            took = time.monotonic() - started
            peak = _kb(proc.pid, "VmHWM") / 1024
            after = _kb(proc.pid, "VmRSS") / 1024
            status = subprocess.run([sys.executable, "-m", "agentd", "status", "--json"], env=env, capture_output=True, text=True, timeout=60)
            alive = status.returncode == 0 and json.loads(status.stdout).get("pid") == proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
            notify.close()
            log.close()
        traceback = "Traceback" in (root / "daemon.log").read_text(errors="replace")
    print(f"| daemon, {clients} clients x {line_mb:g} MiB unterminated | measured | target |")
    print("|---|---|---|")
    for name, value, target in (
        ("RSS before", f"{before:.1f} MB", ""),
        ("peak RSS (VmHWM)", f"{peak:.1f} MB", f"< {TARGET_MB:.0f} MB"),
        ("RSS after", f"{after:.1f} MB", ""),
        ("clients answered with an error line", f"{answered} of {clients} ({reset} closed without one)", ""),
        ("flood duration", f"{took:.1f} s", ""),
        ("still answers status; exit code on SIGTERM", f"{'yes' if alive else 'NO'}; {code}", "yes; 0"),
        ("traceback in the daemon's log", "yes" if traceback else "none", "none"),
    ):
        print(f"| {name} | {value} | {target} |")
    return peak < TARGET_MB and alive and code == 0 and not traceback


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--answer-mb", type=int, default=50, help="size of the hostile Genesys answer (default 50)")
    parser.add_argument("--clients", type=int, default=200, help="control connections flooding the daemon (default 200)")
    parser.add_argument("--line-mb", type=float, default=4.0, help="MiB each sends without a newline (default 4)")
    args = parser.parse_args(argv)
    ok = genesys_table(args.answer_mb)
    print()
    ok = daemon_table(args.clients, args.line_mb) and ok
    print(f"\n{'within' if ok else 'OUTSIDE'} the targets")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
