"""Issue-20 benchmark: where the line breaks. Segment verdicts over full pre-shift runs in the segment lab.

    .venv/bin/python -m benchmarks.segments                  # every case, 20 runs each (root)
    .venv/bin/python -m benchmarks.segments --runs 5 --cases clean,home5

The segment lab (agentd/testing/segments.py: agent -> home router (NAT) -> ISP access
router -> ISP border router -> edge with coturn, in namespaces). Each case places one fault:
random loss on every IP packet, the same share each way, on the ``home`` link (the agent's
LAN/Wi-Fi), the ``isp`` link (the access line) or ``beyond`` the ISP (border -> edge); or a
clean path, or a clean path whose ISP access router rate-limits its ICMP answers as Linux
does by default. Each run is ``agentd check --profile preshift --json`` as a process in the
agent namespace; the table counts the runs whose segment verdict is the right one (and no
other segment verdict), what else was said, wall times, and media.path's and the path
check's figures. Traffic stays inside the lab's namespaces.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from benchmarks._figures import load_average, median_range
from benchmarks.preshift import OFFLINE_GENESYS, agentd_env

SEGMENT_CODES = ("network.local_link", "network.isp", "network.beyond_isp")
CASES = {
    # name: (fault, expected segment code or None)
    "clean": (None, None),
    "ratelimit": (("icmp_ratelimit", "isp1"), None),
    "home5": (("loss", "home", 5), "network.local_link"),
    "home10": (("loss", "home", 10), "network.local_link"),
    "isp5": (("loss", "isp", 5), "network.isp"),
    "isp10": (("loss", "isp", 10), "network.isp"),
    "beyond5": (("loss", "beyond", 5), "network.beyond_isp"),
    "beyond10": (("loss", "beyond", 10), "network.beyond_isp"),
}


@dataclass(frozen=True)
class Run:
    wall_s: float
    codes: tuple[str, ...]
    media_loss: float | None
    gateway_loss: float | None
    path_status: str | None
    ok: bool
    path_s: float | None = None
    media_s: float | None = None
    right: bool = False
    """The segment verdicts are exactly the expected one (``ok`` also needs no check.unexplained)."""
    unexplained: str = ""


def one_run(lab, env: dict, expected: str | None) -> Run:
    started = time.monotonic()
    proc = lab.run_in_agent([sys.executable, "-m", "agentd", "check", "--profile", "preshift", "--json", "--no-daemon"], env=env, timeout=120)
    wall = time.monotonic() - started
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        return Run(wall, ("no report: " + proc.stderr[-200:],), None, None, None, False)
    codes = tuple(v["code"] for v in report["verdicts"])
    checks = {c["id"]: c for c in report["checks"]}
    media, path = checks.get("media.path", {}), checks.get("path", {})
    segments = [c for c in codes if c in SEGMENT_CODES]
    right = segments == ([expected] if expected else [])
    ok = right and "check.unexplained" not in codes
    unexplained = next((v["summary"] for v in report["verdicts"] if v["code"] == "check.unexplained"), "")
    return Run(
        wall, codes, media.get("metrics", {}).get("loss_pct"), path.get("metrics", {}).get("gateway_loss_pct"), path.get("status"), ok,
        path.get("duration_ms", 0) / 1000.0 if path else None, media.get("duration_ms", 0) / 1000.0 if media else None,
        right, unexplained,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Issue-20 benchmark: segment verdicts in the segment lab (root).")
    parser.add_argument("--runs", type=int, default=20, help="runs per case (default 20)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated cases (default all: {','.join(CASES)})")
    parser.add_argument("--verbose", action="store_true", help="print each run as it ends")
    parser.add_argument("--ab-runs", type=int, default=0, help="also: clean pre-shifts in the two-router netlab with and without the path check, interleaved, this many each (default 0: skip)")
    parser.add_argument("--ab-only", action="store_true", help="only the with/without comparison")
    args = parser.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    from agentd.testing.netlab import NetlabUnavailable
    from agentd.testing.segments import SegmentLab

    if args.ab_only:
        ab_table(args.ab_runs or 20)
        return
    results: dict[str, list[Run]] = {}
    load_before = load_average()
    try:
        with tempfile.TemporaryDirectory(prefix="agentd-bench-seg-") as tmp, SegmentLab.create() as lab:
            work = Path(tmp)
            with lab.start_coturn(work / "turn") as turn:
                config = work / "agentd.toml"
                config.write_text(OFFLINE_GENESYS + turn.ice_toml())
                env = agentd_env(work, config)
                for case in cases:
                    fault, expected = CASES[case]
                    lab.clear_faults()
                    if fault and fault[0] == "loss":
                        lab.set_loss(fault[1], fault[2], fault[2])
                    elif fault:
                        lab.icmp_ratelimit(fault[1])
                    runs = results.setdefault(case, [])
                    for i in range(args.runs):
                        run = one_run(lab, env, expected)
                        runs.append(run)
                        if args.verbose:
                            print(f"{case} {i + 1}: {'ok' if run.ok else 'WRONG'} {run.wall_s:.2f} s media {run.media_loss} gw {run.gateway_loss} {run.codes} {run.unexplained}", flush=True)
    except NetlabUnavailable as exc:
        print(f"segment lab unavailable ({exc})")
        return
    print(f"### Segment verdicts in the segment lab ({args.runs} full pre-shift runs per case; load {load_before} -> {load_average()})\n")
    print("| case | fault | expected | right segment verdict | with no check.unexplained too | verdicts said (runs) | media.path loss_pct | gateway loss_pct | path check s | media.path s | `agentd check` wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for case, runs in results.items():
        fault, expected = CASES[case]
        what = "none" if not fault else (f"{fault[2]} % each way on the {fault[1]} link" if fault[0] == "loss" else f"{fault[1]} rate-limits ICMP (1 per s)")
        said = Counter(c for r in runs for c in r.codes)
        said_text = ", ".join(f"{c} {n}" for c, n in said.most_common()) or "nothing"
        print(
            f"| {case} | {what} | {expected or 'no segment verdict'} | {sum(r.right for r in runs)}/{len(runs)} | {sum(r.ok for r in runs)}/{len(runs)} | {said_text} "
            f"| {median_range(r.media_loss for r in runs)} | {median_range(r.gateway_loss for r in runs)} "
            f"| {median_range((r.path_s for r in runs), 2)} | {median_range((r.media_s for r in runs), 2)} | {median_range((r.wall_s for r in runs), 2)} |"
        )
    print()
    if args.ab_runs:
        ab_table(args.ab_runs)


def ab_table(runs: int) -> None:
    """A clean pre-shift as a process in the two-router netlab (media_loss's set-up: a
    resolver that answers at once, bytecode written), with the path check and without it
    (``--disable-plugin path``), interleaved so both see the same load."""
    import os
    import resource

    from agentd.testing.netlab import Netlab
    from benchmarks.media_loss import fail_fast_resolver, installed_env

    walls: dict[str, list[float]] = {"with path": [], "without path": []}
    cpus: dict[str, list[float]] = {"with path": [], "without path": []}
    path_s: list[float] = []
    loads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="agentd-bench-ab-") as tmp, Netlab.create(nat="plain") as lab, fail_fast_resolver(lab):
        work = Path(tmp)
        with lab.start_coturn(work / "turn") as turn:
            config = work / "agentd.toml"
            config.write_text(OFFLINE_GENESYS + turn.ice_toml())
            env = installed_env(agentd_env(work, config), work)
            base = [sys.executable, "-m", "agentd", "check", "--profile", "preshift", "--json", "--no-daemon"]
            lab.run_in_agent(base, env=env, timeout=60)  # not counted: writes the bytecode
            for _ in range(runs):
                for name, extra in (("with path", []), ("without path", ["--disable-plugin", "path"])):
                    loads.append(os.getloadavg()[0])
                    before = resource.getrusage(resource.RUSAGE_CHILDREN)
                    started = time.monotonic()
                    proc = lab.run_in_agent(base + extra, env=env, timeout=60)
                    walls[name].append(time.monotonic() - started)
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    cpus[name].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
                    if name == "with path":
                        with contextlib.suppress(ValueError, KeyError, StopIteration):
                            path_s.append(next(c["duration_ms"] for c in json.loads(proc.stdout)["checks"] if c["id"] == "path") / 1000.0)
    print(f"### A clean pre-shift with and without the path check ({runs} interleaved runs each, two-router netlab; load {median_range(loads, 2)})\n")
    print("| run | `agentd check` wall median (min-max) s | runs <= 2.0 s | CPU median (min-max) s | path check s |")
    print("|---|---|---|---|---|")
    for name in walls:
        print(
            f"| {name} | {median_range(walls[name], 2)} | {sum(w <= 2.0 for w in walls[name])} of {len(walls[name])} "
            f"| {median_range(cpus[name], 2)} | {median_range(path_s, 2) if name == 'with path' else '-'} |"
        )
    print()


if __name__ == "__main__":
    main()
