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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agentd.testing.hostile_http import HostileServer, client_reads_in_fresh_process, flood_unterminated
from benchmarks._daemon import isolated_daemon, status_kb

TARGET_MB = 150.0

def genesys_table(mb: int) -> bool:
    rows = []
    ok = True
    with HostileServer() as server:
        for path in (f"/huge?mb={mb}", f"/huge-declared?mb={mb}"):
            read = client_reads_in_fresh_process(server.url, path, timeout_s=120)
            took = f"{read.seconds:.3f} s" if read.refused else "-"
            outcome = "refused at the cap" if read.refused and "cap" in read.message else read.message[:60] or "read whole"
            rows.append((path.split("?")[0], f"{mb} MB", took, f"{read.peak_mb:.0f} MB", outcome))
            ok = ok and read.refused and read.peak_mb < TARGET_MB
    print("| Genesys answer | size | until refused | peak RSS of the client process | outcome |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return ok


def daemon_table(clients: int, line_mb: float) -> bool:
    with tempfile.TemporaryDirectory(prefix="agentd-faults-") as tmp:
        root = Path(tmp)
        with open(root / "daemon.log", "wb") as log:
            with isolated_daemon(root, '[genesys]\nregion = "agentd-bench.invalid"\n', ready_timeout_s=60, stderr=log) as daemon:
                pid = daemon.proc.pid
                before = status_kb(pid, "VmRSS") / 1024
                started = time.monotonic()
                answered, reset = asyncio.run(flood_unterminated(str(daemon.control_socket), clients, int(line_mb * 2**20)))
                took = time.monotonic() - started
                peak = status_kb(pid, "VmHWM") / 1024
                after = status_kb(pid, "VmRSS") / 1024
                status = subprocess.run([sys.executable, "-m", "agentd", "status", "--json"], env=daemon.env,
                                        capture_output=True, text=True, timeout=60)
                alive = status.returncode == 0 and json.loads(status.stdout).get("pid") == pid
        code = daemon.exit_code
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
