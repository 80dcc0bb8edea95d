"""Issue-20 benchmark: latency under load (``path.load``) on a bloated and on a clean line in the lab.

    .venv/bin/python -m benchmarks bufferbloat                    # 20 runs per case (root)
    .venv/bin/python -m benchmarks.bufferbloat --runs 5

The network lab (agentd/testing/netlab.py: agent ns behind a NAT router ns, server ns with
coturn and ``agentd reflect --http-port``, the load service). Two cases:

- ``bloated``: a tbf on the router's uplink (agent -> server), 4 Mbit/s with a queue that
  adds 300 ms when full (agentd/testing/bloat.py: ``limit * 8 / rate``). The truth is 300 ms.
  Must hold: ``added_delay_ms`` within 25 % of it in at least 19 of 20 runs, a grade, and
  ``network.bufferbloat``.
- ``clean``: no rate limit (veth). Must hold: no ``network.bufferbloat`` in 20 of 20.
- ``bloated-down`` (reported, no target): the same queue on the downlink instead
  (router -> agent), 20 Mbit/s, 300 ms when full.

Each run is ``agentd check --profile full --only path.load --json`` as a process in the
agent namespace (the defaults: 1 s idle, 5 s load, 16 flows each way, caps 16 MiB up and
48 MiB down). Bytes sent per run (the check's own count, and what the load service
received) must stay under the upload cap in every run. Traffic goes only to the lab's
own namespaces.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._figures import load_average, median_range

TRUTH_MS = 300.0
RATE_KBIT = 4000
DOWN_RATE_KBIT = 20000
UPLOAD_CAP_MB = 16.0
DOWNLOAD_CAP_MB = 48.0


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTD_", "STATE_DIRECTORY", "CONFIGURATION_DIRECTORY", "NOTIFY_SOCKET"))}
    for name in ("config", "state", "run", "xdg"):
        (root / name).mkdir(parents=True, exist_ok=True)
    env.update(AGENTD_STATE_DIR=str(root / "state"), AGENTD_RUNTIME_DIR=str(root / "run"), XDG_CONFIG_HOME=str(root / "xdg"),
               XDG_STATE_HOME=str(root / "xdg"), XDG_RUNTIME_DIR=str(root / "run"), NO_COLOR="1")
    return env


def _one(lab, env: dict[str, str]) -> dict:
    started = time.monotonic()
    proc = lab.run_in_agent([sys.executable, "-m", "agentd", "check", "--profile", "full", "--only", "path.load", "--json"], env=env, timeout=90)
    wall = time.monotonic() - started
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        return {"wall_s": wall, "error": (proc.stderr or proc.stdout)[-300:]}
    check = next((c for c in report["checks"] if c["id"] == "path.load"), None)
    return {"wall_s": wall, "check": check, "verdicts": [v["code"] for v in report["verdicts"]]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)

    from agentd.testing.bloat import clear_rate, limit_rate, load_service
    from agentd.testing.netlab import Netlab, unavailable_reason

    reason = unavailable_reason()
    if reason:
        print(f"bufferbloat: the lab is unavailable: {reason}", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="agentd-bufferbloat-"))
    env = _env(root)
    cases: dict[str, list[dict]] = {"bloated": [], "clean": [], "bloated-down": []}
    received: list[int] = []
    print(f"load average at start: {load_average()}", flush=True)
    with Netlab.create() as lab, lab.start_coturn(root / "turn") as turn, load_service(lab, env) as (url, proc):
        config = root / "config" / "agentd.toml"
        config.write_text(
            f'[genesys]\nregion = "agentd-test.invalid"\n{turn.ice_toml()}\n'
            f'[loaded_latency]\nurl = "{url}"\nupload_cap_mb = {UPLOAD_CAP_MB}\ndownload_cap_mb = {DOWNLOAD_CAP_MB}\n'
        )
        env["AGENTD_CONFIG"] = str(config)
        for case in cases:
            clear_rate(lab)
            if case == "bloated":
                truth = limit_rate(lab, rate_kbit=RATE_KBIT, queue_ms=TRUTH_MS).queue_ms
            elif case == "bloated-down":
                limit_rate(lab, rate_kbit=DOWN_RATE_KBIT, queue_ms=TRUTH_MS, direction="down")
            for i in range(args.runs):
                run = _one(lab, env)
                cases[case].append(run)
                c = run.get("check") or {}
                m = c.get("metrics", {})
                print(f"{case} {i + 1:2}: {c.get('status', 'no report')} {m.get('added_delay_ms')} ms p90 {m.get('added_delay_p90_ms')} "
                      f"grade {c.get('details', {}).get('grade')} up {m.get('uploaded_bytes')} B {run.get('verdicts')} {run['wall_s']:.1f} s", flush=True)
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
    cap = int(UPLOAD_CAP_MB * 2**20)
    print(f"\nload service's own log: {out.strip().splitlines()[-1] if out.strip() else '-'}")
    print(f"\ntruth (bloated): {truth:.0f} ms queue at {RATE_KBIT} kbit/s up (bloated-down: {DOWN_RATE_KBIT} kbit/s down); runs per case: {args.runs}; load average now: {load_average()}\n")
    print("| case | added delay ms, median (min-max) | p90 added ms | within 25 % of 300 ms | grades | network.bufferbloat | most bytes sent (cap) | RPM | wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    ok = True
    for case, runs in cases.items():
        checks = [r.get("check") or {} for r in runs]
        added = [c.get("metrics", {}).get("added_delay_ms") for c in checks]
        p90 = [c.get("metrics", {}).get("added_delay_p90_ms") for c in checks]
        within = sum(1 for a in added if a is not None and abs(a - TRUTH_MS) <= 0.25 * TRUTH_MS)
        grade_counts = {g: sum(1 for c in checks if c.get("details", {}).get("grade") == g) for g in sorted({c.get("details", {}).get("grade") for c in checks}, key=str)}
        verdict = sum(1 for r in runs if "network.bufferbloat" in r.get("verdicts", []))
        sent = max((c.get("metrics", {}).get("uploaded_bytes") or 0 for c in checks), default=0)
        rpm = [c.get("metrics", {}).get("rpm") for c in checks]
        wall = [r["wall_s"] for r in runs]
        print(f"| {case} | {median_range(added)} | {median_range(p90)} | {within if case != 'clean' else '-'}/{len(runs)} | "
              f"{', '.join(f'{g} x{n}' for g, n in grade_counts.items())} | {verdict}/{len(runs)} | {sent} ({cap}) | {median_range(rpm, 0)} | {median_range(wall)} |")
        if case == "bloated":
            ok &= within >= len(runs) - len(runs) // 20 and verdict >= len(runs) - len(runs) // 20
        elif case == "clean":
            ok &= verdict == 0
        ok &= sent <= cap
    print(f"\nheld: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
