"""Issue-3 benchmark: the pre-shift profile's wall time and memory, and media.path's loss accuracy.

    .venv/bin/python -m benchmarks.preshift            # everything (needs root for the lab)
    .venv/bin/python -m benchmarks.preshift --no-lab   # loopback parts only
    .venv/bin/python -m benchmarks.preshift --help

Prints markdown tables (benchmarks/README.md holds a measured copy):

1. ``agentd check --profile preshift`` as a process, against a real coturn on loopback
   (median and max of ``--runs``), and with every ICE server blackholed (a loopback port
   whose UDP socket and TCP listener never answer); wall time and the process's peak RSS.
   The Genesys region is an ``.invalid`` name, so dns/https fail at once and the time is
   the ICE probes' (stun, nat, turn.*, udp.ports, media.path) and host's.
2. The same probes written the straightforward way with the libraries' default timeouts
   (benchmarks/tutorial_baseline.py), cut off at ``--cutoff`` seconds.
3. In the network lab (agentd/testing/netlab.py; root): random UDP loss injected at the
   router, the same share each way; media.path's ``loss_pct`` with ``--probes`` probes
   against the softphone's expected round-trip loss 1 - (1 - p)^2, and the raw two-peer
   echo loss (what a naive echo test reports) against its own expectation 1 - (1 - p)^4.

Traffic goes only to loopback and to the lab's own namespaces.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from agentd.testing import coturn as coturn_mod
from agentd.testing.coturn import Coturn

OFFLINE_GENESYS = '[genesys]\nregion = "agentd-bench.invalid"\n'


@dataclass(frozen=True)
class ProcessRun:
    wall_s: float
    peak_rss_mb: float
    returncode: int | None
    """None: cut off."""
    stdout: str


def run_process(args: list[str], env: dict[str, str], *, cutoff_s: float) -> ProcessRun:
    """Run ``args``; wall time and peak RSS of that process (wait4), killed at ``cutoff_s``."""
    with tempfile.TemporaryFile() as out:
        started = time.monotonic()
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.DEVNULL, start_new_session=True)
        returncode = None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() - started > cutoff_s:
                os.killpg(proc.pid, signal.SIGKILL)
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        wall = time.monotonic() - started
        proc.returncode = returncode if returncode is not None else -9  # reaped here, not by Popen
        out.seek(0)
        return ProcessRun(wall, usage.ru_maxrss / 1024.0, returncode, out.read().decode(errors="replace"))


def agentd_env(root: Path, config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTD_", "NOTIFY_SOCKET"))}
    for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR", "AGENTD_STATE_DIR", "AGENTD_RUNTIME_DIR"):
        (root / name).mkdir(parents=True, exist_ok=True)
        env[name] = str(root / name)
    env["AGENTD_CONFIG"] = str(config)
    return env


class Blackhole:
    """One loopback port whose UDP socket and TCP listener never answer."""

    def __enter__(self) -> Blackhole:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.port = self.udp.getsockname()[1]
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen(64)
        return self

    def __exit__(self, *exc) -> None:
        self.udp.close()
        self.tcp.close()

    def ice_toml(self) -> str:
        p = self.port
        return (
            "[ice]\n\n[[ice.servers]]\n"
            f'urls = ["stun:127.0.0.1:{p}"]\n\n[[ice.servers]]\n'
            f'urls = ["turn:127.0.0.1:{p}?transport=udp", "turn:127.0.0.1:{p}?transport=tcp", "turns:127.0.0.1:{p}?transport=tcp"]\n'
            'username = "agent"\ncredential = "x"\n'
        )


def _checks(stdout: str) -> dict:
    try:
        return {c["id"]: c for c in json.loads(stdout)["checks"]}
    except (ValueError, KeyError):
        return {}


@dataclass(frozen=True)
class ProfileRuns:
    process: list[ProcessRun]
    """``agentd check`` as a process: interpreter start-up, imports, plugins, checks, report."""
    in_process_s: list[float]
    """``App.run_check("preshift")`` alone, in a loaded process (what the daemon's runs cost)."""
    checks: dict


def bench_profile(work: Path, ice_toml: str, runs: int, cutoff_s: float) -> ProfileRuns:
    work.mkdir(parents=True, exist_ok=True)
    config = work / "agentd.toml"
    config.write_text(OFFLINE_GENESYS + ice_toml)
    env = agentd_env(work, config)
    cli = [sys.executable, "-m", "agentd", "check", "--profile", "preshift", "--json", "--no-daemon"]
    process = [run_process(cli, env, cutoff_s=cutoff_s) for _ in range(runs)]
    inner = [sys.executable, "-m", "benchmarks.preshift", "--profile-once", str(config)]
    timed = [run_process(inner, env, cutoff_s=cutoff_s) for _ in range(runs)]
    in_process = [float(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else cutoff_s for r in timed]
    return ProfileRuns(process, in_process, _checks(process[-1].stdout))


def profile_once(config: str) -> None:
    """Load agentd, then time one pre-shift run in this process; prints the seconds."""
    import asyncio

    from agentd.app import App

    app = App.load(config)
    started = time.monotonic()
    asyncio.run(app.run_check("preshift"))
    print(f"{time.monotonic() - started:.4f}")


def bench_baseline(work: Path, ice_toml: str, cutoff_s: float, duration_s: float) -> ProcessRun:
    work.mkdir(parents=True, exist_ok=True)
    config = work / "baseline.toml"
    config.write_text(ice_toml)
    args = [sys.executable, "-m", "benchmarks.tutorial_baseline", "--config", str(config), "--duration", str(duration_s)]
    return run_process(args, {**os.environ}, cutoff_s=cutoff_s)


def _wall(runs: list[ProcessRun], cutoff_s: float) -> str:
    walls = [r.wall_s for r in runs]
    cut = [r for r in runs if r.returncode is None]
    if cut:
        return f">= {cutoff_s:.0f} s (cut off)"
    if len(walls) == 1:
        return f"{walls[0]:.2f} s"
    return f"{statistics.median(walls):.2f} s ({max(walls):.2f})"


def _steps(run: ProcessRun) -> str:
    steps = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    if not steps:
        return "no step finished"
    return ", ".join(f"{s['step']} {'ok' if s['ok'] else 'failed'} at {s['elapsed_s']:.1f} s" for s in steps)


def loopback_tables(args) -> None:
    if not coturn_mod.available():
        print("coturn is not installed: loopback part skipped\n")
        return
    with tempfile.TemporaryDirectory(prefix="agentd-bench-") as tmp:
        work = Path(tmp)
        with Coturn.start(work / "turn", listen_ip="127.0.0.1", second_ip="127.0.0.2") as turn:
            clean = bench_profile(work / "clean", turn.ice_toml(), args.runs, args.cutoff)
            base_clean = bench_baseline(work / "clean", turn.ice_toml(), args.cutoff, args.duration)
        with Blackhole() as hole:
            blocked = bench_profile(work / "blocked", hole.ice_toml(), args.runs, args.cutoff)
            base_blocked = bench_baseline(work / "blocked", hole.ice_toml(), args.cutoff, args.duration)
    print(f"### Pre-shift profile ({args.runs} runs each; median, max in brackets)\n")
    print("| path | profile run in a loaded process | `agentd check` process wall time | target | peak RSS | checks (last run) |")
    print("|---|---|---|---|---|---|")
    for name, runs, target in (("coturn on loopback, clean", clean, "< 3 s"), ("every ICE server blackholed", blocked, "< 8 s")):
        states = ", ".join(f"{k} {v['status']} {v['duration_ms'] / 1000:.1f} s" for k, v in runs.checks.items() if k not in ("dns", "https", "websocket"))
        inner = f"{statistics.median(runs.in_process_s):.2f} s ({max(runs.in_process_s):.2f})"
        print(f"| {name} | {inner} | {_wall(runs.process, args.cutoff)} | {target} | {max(r.peak_rss_mb for r in runs.process):.0f} MB | {states} |")
    print()
    print(f"### Baseline: the same probes the straightforward way, library default timeouts (cut off at {args.cutoff:.0f} s)\n")
    print("| path | wall time | peak RSS | steps |")
    print("|---|---|---|---|")
    for name, run in (("coturn on loopback, clean", base_clean), ("every ICE server blackholed", base_blocked)):
        print(f"| {name} | {_wall([run], args.cutoff)} | {run.peak_rss_mb:.0f} MB | {_steps(run)} |")
    print()


def lab_table(args) -> None:
    from agentd.testing.netlab import Netlab, NetlabUnavailable

    levels = [float(x) for x in args.levels.split(",")]
    duration = args.probes * args.interval_ms / 1000.0
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="agentd-bench-lab-") as tmp, Netlab.create(nat="plain") as lab:
            work = Path(tmp)
            with lab.start_coturn(work / "turn") as turn:
                config = work / "agentd.toml"
                config.write_text(
                    OFFLINE_GENESYS
                    + f'[ice]\nca_file = "{turn.certs.ca}"\ntimeout_s = 10.0\n\n[[ice.servers]]\n'
                    + f'urls = ["{turn.turn_udp_url}"]\nusername = "{turn.username}"\ncredential = "{turn.password}"\n'
                    + f"\n[media]\nduration_s = {duration}\ninterval_ms = {args.interval_ms}\nconnect_timeout_s = 40.0\n"
                )
                env = agentd_env(work, config)
                for pct in levels:
                    lab.clear_faults()
                    lab.set_loss(upstream_pct=pct, downstream_pct=pct, protocol="udp")
                    proc = lab.run_in_agent(
                        [sys.executable, "-m", "agentd", "check", "--only", "media.path", "--json", "--no-daemon", "--deadline", "180"],
                        env=env, timeout=240,
                    )
                    rows.append((pct, _checks(proc.stdout).get("media.path")))
    except NetlabUnavailable as exc:
        print(f"network lab unavailable ({exc}): loss part skipped\n")
        return
    print(f"### media.path loss in the lab: random UDP loss p each way at the router, {args.probes} probes every {args.interval_ms:g} ms\n")
    print("| injected p | expected loss_pct 1-(1-p)^2 | measured loss_pct | error | within 3 pts | raw echo loss (naive) | raw expected 1-(1-p)^4 | MOS | connect |")
    print("|---|---|---|---|---|---|---|---|---|")
    for pct, row in rows:
        p = pct / 100.0
        expected = 100 * (1 - (1 - p) ** 2)
        raw_expected = 100 * (1 - (1 - p) ** 4)
        if not row or "loss_pct" not in row.get("metrics", {}):
            why = ("; ".join(a.get("error", "") for a in row["details"].get("attempts", [])) or row["summary"]) if row else "no report"
            print(f"| {pct:g}% | {expected:.2f} | - | - | no | - | {raw_expected:.2f} | - | {why} |")
            continue
        measured = row["metrics"]["loss_pct"]
        error = measured - expected
        d = row["details"]
        print(
            f"| {pct:g}% | {expected:.2f} | {measured:.2f} | {error:+.2f} | {'yes' if abs(error) <= 3 else 'NO'} "
            f"| {d['raw_loss_pct']:.2f} | {raw_expected:.2f} | {row['metrics']['mos']:.2f} | {d['connect_ms'] / 1000:.1f} s |"
        )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description="Issue-3 benchmark: pre-shift wall time and memory, media.path loss accuracy.")
    parser.add_argument("--runs", type=int, default=5, help="runs of each pre-shift case (default 5)")
    parser.add_argument("--cutoff", type=float, default=30.0, help="kill a run after this many seconds (default 30)")
    parser.add_argument("--duration", type=float, default=2.5, help="the baseline's probing time, as media.path's default (s)")
    parser.add_argument("--probes", type=int, default=1000, help="probes per loss level in the lab (default 1000)")
    parser.add_argument("--interval-ms", type=float, default=5.0, help="probe interval in the lab (default 5 ms, to keep 1000 probes at 5 s)")
    parser.add_argument("--levels", default="0,2,5,10,20", help="injected loss levels in percent (default 0,2,5,10,20)")
    parser.add_argument("--no-lab", action="store_true", help="skip the lab (loss) part")
    parser.add_argument("--no-loopback", action="store_true", help="skip the loopback (wall time) part")
    parser.add_argument("--profile-once", metavar="CONFIG", help=argparse.SUPPRESS)  # internal: one timed in-process run
    args = parser.parse_args()
    if args.profile_once:
        profile_once(args.profile_once)
        return
    if not args.no_loopback:
        loopback_tables(args)
    if not args.no_lab:
        lab_table(args)


if __name__ == "__main__":
    main()
