"""Issue-7 benchmark: the idle daemon's resident memory and CPU use, host timeline on.

    .venv/bin/python -m benchmarks.idle_daemon                 # one minute, timeline every 5 s
    .venv/bin/python -m benchmarks.idle_daemon --duration 300 --interval 1

Starts ``agentd run`` (its own config, state and runtime folders in a temporary
directory; the Genesys region an ``.invalid`` name, no schedule), waits for READY=1 on
a NOTIFY_SOCKET it listens on, then reads ``/proc/<pid>`` for ``--duration`` seconds:
RSS (now and peak, VmHWM), and CPU time (utime + stime) over the window as a share of
one core. It also counts the timeline samples written, so a run that sampled nothing
cannot pass for a cheap one. Prints a markdown table; targets: < 60 MB, < 1 % of a core.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._daemon import isolated_daemon, status_kb

TARGET_RSS_MB = 60.0
TARGET_CPU_PCT = 1.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.idle_daemon", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to measure after READY (default 60)")
    parser.add_argument("--interval", type=float, default=5.0, help="[timeline] interval_s (default 5)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="agentd-idle-") as tmp:
        root = Path(tmp)
        config = f'[genesys]\nregion = "agentd-bench.invalid"\n[timeline]\ninterval_s = {args.interval}\n'
        with isolated_daemon(root, config, ready_timeout_s=10) as daemon:
            pid = daemon.proc.pid
            rss_ready = status_kb(pid, "VmRSS") / 1024
            cpu_start, wall_start = _cpu_seconds(pid), time.monotonic()
            rss_seen = []
            while time.monotonic() - wall_start < args.duration:
                time.sleep(min(1.0, args.duration))
                rss_seen.append(status_kb(pid, "VmRSS") / 1024)
            cpu_used = _cpu_seconds(pid) - cpu_start
            wall = time.monotonic() - wall_start
            peak = status_kb(pid, "VmHWM") / 1024
            threads = _threads(pid)
            db = sqlite3.connect(f"file:{root / 'state' / 'timeline.sqlite3'}?mode=ro", uri=True)
            samples = db.execute("SELECT count(*) FROM host_samples").fetchone()[0]
            db.close()
        ready_s, stop_s, code = daemon.ready_s, daemon.stop_s, daemon.exit_code

    cpu_pct = 100.0 * cpu_used / wall
    rss_end = rss_seen[-1] if rss_seen else rss_ready
    rows = [
        ("start to READY=1", f"{ready_s:.2f} s", "< 3 s"),
        ("RSS at READY", f"{rss_ready:.1f} MB", ""),
        (f"RSS after {wall:.0f} s idle", f"{rss_end:.1f} MB", f"< {TARGET_RSS_MB:.0f} MB"),
        ("peak RSS (VmHWM)", f"{peak:.1f} MB", f"< {TARGET_RSS_MB:.0f} MB"),
        (f"CPU over {wall:.0f} s", f"{cpu_pct:.2f} % of one core ({cpu_used:.2f} s)", f"< {TARGET_CPU_PCT:.0f} %"),
        ("timeline samples written", f"{samples} (every {args.interval:g} s)", "> 0"),
        ("threads", str(threads), ""),
        ("SIGTERM to exit", f"{stop_s:.2f} s, exit code {code}", "< 5 s, 0"),
    ]
    print("| idle daemon (timeline on) | measured | target |")
    print("|---|---|---|")
    for name, value, target in rows:
        print(f"| {name} | {value} | {target} |")
    ok = peak < TARGET_RSS_MB and cpu_pct < TARGET_CPU_PCT and samples > 0 and code == 0
    print(f"\n{'within' if ok else 'OUTSIDE'} the targets")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
