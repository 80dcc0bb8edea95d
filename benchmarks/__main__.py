"""Run the benchmarks: ``.venv/bin/python -m benchmarks [NAME ...]``.

Each benchmark runs in its own process (so peak-memory figures are its own) and prints
its table; with no NAME every one runs, in the order below. Arguments after ``--`` go to
every benchmark named (``python -m benchmarks preshift -- --runs 3``).
"""

from __future__ import annotations

import subprocess
import sys
import time

BENCHMARKS = {
    "preshift": "pre-shift wall time and memory, media.path loss accuracy in the lab (issue 3; the lab needs root)",
    "genesys": "diagnose and archive against the fake Genesys Cloud, client throughput (issue 4)",
    "signaling": "WebSocket opening and pings, mute confirmation, monitor reconnects (issue 5)",
    "delivery": "correlation, HTML rendering, spool and sink throughput (issue 6)",
    "idle_daemon": "the idle daemon's memory and CPU over a minute with the host timeline on (issue 7)",
    "chromium": "Chromium's WebRTC as the reference: transport and loss next to media.path in the lab (issue 11; root)",
    "hub": "the helpdesk hub: 5 000 PCs on one process, memory per connection, trigger to first progress, ingest (issue 12)",
    "hub_fleet": "the hub's fleet page and PC list at 5 000 PCs: server time and size of a page (issue 23)",
    "media_loss": "media.path transport and loss over 20 full pre-shift runs per loss level in the lab (issue 11; root)",
    "faults": "memory under hostile input: a 50 MB Genesys answer, 200 control clients with 4 MiB lines (issue 14)",
    "bufferbloat": "path.load's added delay on a tbf-bloated uplink (truth 300 ms) and a clean link, bytes per test (issue 20; root)",
    "hub_faults": "the hub under a 5 000-PC reconnect storm, a wrong-password flood and PostgreSQL restarts (issues 23, 24)",
    "softphone_ice": "fetching the softphone's own STUN/TURN servers over the streaming channel: cold and cached (issue 10)",
    "segments": "segment verdicts (local link, ISP, beyond) over 20 full pre-shift runs per fault in the segment lab (issue 20; root)",
    "jitter": "delay and jitter true against the lab's delay stage; no blocked TCP fallback on lossy lines (issue 20; root)",
}


def main(argv: list[str]) -> int:
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        for name, what in BENCHMARKS.items():
            print(f"  {name:12} {what}")
        return 0
    unknown = [a for a in argv if a not in BENCHMARKS]
    if unknown:
        print(f"benchmarks: unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    failed = []
    for name in argv or list(BENCHMARKS):
        print(f"\n## {name}: {BENCHMARKS[name]}\n", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, "-m", f"benchmarks.{name}", *extra])
        print(f"\n({name}: {time.monotonic() - started:.0f} s, exit {code})", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"\nbenchmarks that failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
