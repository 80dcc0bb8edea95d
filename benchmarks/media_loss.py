"""Issue-11 benchmark: media.path's transport and loss over many full pre-shift runs in the lab.

    .venv/bin/python -m benchmarks media_loss                       # 20 runs per level (root)
    .venv/bin/python -m benchmarks.media_loss --runs 5 --levels 0,10

The network lab (agentd/testing/netlab.py: agent ns behind a NAT router ns, coturn in a
server ns). The router drops a random share p of forwarded UDP each way
(``numgen random mod 100 < p``). For every level, ``--runs`` runs of
``agentd check --json`` (the pre-shift profile: every check, default configuration,
concurrently as the CLI runs them) as processes in the agent namespace. Per level: runs
whose media.path measured over UDP, ``loss_pct`` (median, min, max) against the
softphone's round-trip loss 1 - (1 - p)^2, runs within 3 points, runs whose 95 % interval
covers the truth, legs probed, why probing stopped, MOS, wall time of the process.

The agent namespace gets a resolv.conf naming a resolver in the server namespace that
answers NXDOMAIN to everything at once, as a home router's resolver answers for the
``.invalid`` region, instead of timing out on the host's resolver, which the namespace
cannot reach. agentd runs with bytecode, as an installed copy does (one uncounted warm-up
run writes it to a temporary PYTHONPYCACHEPREFIX). Each run's wall time, CPU time and the
machine's load average are kept: the machine is shared, and the wall time follows its load.
Traffic goes only to the lab's own namespaces.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from benchmarks._figures import load_average, median_range
from benchmarks.preshift import OFFLINE_GENESYS, agentd_env


@dataclass(frozen=True)
class Run:
    wall_s: float
    exit_code: int
    media: dict | None
    turn_udp: str | None
    verdicts: tuple[str, ...]
    rows_bad: tuple[str, ...]
    rcvbuf_drops: int = 0
    """UDP datagrams the agent namespace's kernel dropped for full socket buffers during the run
    (agentd too busy to read): counted as loss by any probe, though the network did not lose them."""
    cpu_s: float = 0.0
    """CPU time (user + system) of the ``agentd check`` process: what the run costs whatever the machine's load."""
    load: float = 0.0
    """The machine's 1-minute load average when the run started (2 cores, shared)."""

    @property
    def transport(self) -> str | None:
        return (self.media or {}).get("details", {}).get("transport")

    @property
    def loss(self) -> float | None:
        return (self.media or {}).get("metrics", {}).get("loss_pct")

    @property
    def interval(self) -> list[float] | None:
        return (self.media or {}).get("details", {}).get("loss_ci95_pct")

    def detail(self, key: str):
        return (self.media or {}).get("details", {}).get(key)

    def pattern(self) -> str | None:
        """A fingerprint of which probes were lost (to see whether runs repeat one another)."""
        series = self.detail("series")
        if not series:
            return None
        bits = "".join("x" if p.get("rtt_ms") is None or p.get("lost") else "." for p in series)
        return hashlib.sha1(bits.encode()).hexdigest()[:10]


def _rcvbuf_errors(lab) -> int:
    """The agent namespace's Udp RcvbufErrors counter (/proc/net/snmp)."""
    lines = [line.split() for line in lab.exec(lab.agent, ["cat", "/proc/net/snmp"]).stdout.splitlines() if line.startswith("Udp:")]
    if len(lines) < 2 or "RcvbufErrors" not in lines[0]:
        return 0
    return int(lines[1][lines[0].index("RcvbufErrors")])


def one_run(lab, env: dict[str, str], cutoff_s: float) -> Run:
    before = _rcvbuf_errors(lab)
    load = os.getloadavg()[0]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    # `ip netns exec` execs the command: the child's CPU is agentd's
    proc = lab.run_in_agent([sys.executable, "-m", "agentd", "check", "--json", "--no-daemon"], env=env, timeout=cutoff_s)
    wall = time.monotonic() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    drops = _rcvbuf_errors(lab) - before
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        return Run(wall, proc.returncode, None, None, (), ("no report: " + proc.stderr[-300:],), drops, cpu, load)
    checks = {c["id"]: c for c in report["checks"]}
    bad = tuple(f"{c['id']} {c['status']}" for c in report["checks"] if c["status"] in ("fail", "warn", "error") and c["id"] not in ("dns", "https", "host"))
    return Run(
        wall,
        proc.returncode,
        checks.get("media.path"),
        (checks.get("turn.udp") or {}).get("status"),
        tuple(v["code"] for v in report.get("verdicts", [])),
        bad,
        drops,
        cpu,
        load,
    )


NXDOMAIN_SERVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print("ready", flush=True)
while True:
    query, peer = s.recvfrom(512)
    if len(query) < 12:
        continue
    flags = 0x8183 | (query[2] & 0x01) << 8  # QR, RA, NXDOMAIN; RD as asked
    # the header with no answers, and the question as it came
    s.sendto(query[:2] + flags.to_bytes(2, "big") + query[4:6] + bytes(6) + query[12:], peer)
"""
"""A resolver for the lab that says NXDOMAIN to every question at once (what a home router's
resolver says for an ``.invalid`` name). Without it, lookups went to a port nothing listens
on and the ICMP "port unreachable" answers were rate-limited by the kernel (1 per second per
peer after a burst of 6, ``net.ipv4.icmp_ratelimit``): most runs waited out the 1 s resolver
timeout, and dns/https took 1.1 s of a clean run."""


@contextlib.contextmanager
def fail_fast_resolver(lab) -> Iterator[Path]:
    """/etc/netns/<agent>/resolv.conf naming an NXDOMAIN-only resolver in the server ns."""
    folder = Path("/etc/netns") / lab.agent
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "resolv.conf").write_text(f"nameserver {lab.server_ip}\noptions timeout:1 attempts:1\n")
    server = lab.popen_in(lab.server, [sys.executable, "-c", NXDOMAIN_SERVER, lab.server_ip], stdout=subprocess.PIPE, text=True)
    try:
        server.stdout.readline()  # "ready": bound
        yield folder
    finally:
        server.kill()
        server.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def installed_env(env: dict[str, str], work: Path) -> dict[str, str]:
    """Run agentd as an installed copy runs: with bytecode. pip and dpkg compile it at install
    time; a checkout under PYTHONDONTWRITEBYTECODE=1 (as on the project's machine) compiled
    agentd's ~90 modules from source in every run, 0.4 s of each clean run."""
    env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")  # kept out of the source tree
    return env


SCENARIOS = {
    "udp-blocked": "the router drops all UDP (a firewall that lets only TCP out)",
    "blackholed": "the router drops everything (no answer, no ICMP, no RST)",
}


def run_levels(
    levels: list[float], runs: int, cutoff_s: float, *, progress: bool = True, scenarios: list[str] = (), scenario_runs: int = 5
) -> tuple[dict[float, list[Run]], dict[str, list[Run]]]:
    from agentd.testing.netlab import Netlab

    results: dict[float, list[Run]] = {}
    others: dict[str, list[Run]] = {}
    with tempfile.TemporaryDirectory(prefix="agentd-bench-loss-") as tmp, Netlab.create(nat="plain") as lab, fail_fast_resolver(lab):
        work = Path(tmp)
        with lab.start_coturn(work / "turn") as turn:
            config = work / "agentd.toml"
            config.write_text(OFFLINE_GENESYS + turn.ice_toml())
            env = installed_env(agentd_env(work, config), work)
            one_run(lab, env, cutoff_s)  # not counted: writes the bytecode, as installing does
            for pct in levels:
                lab.clear_faults()
                lab.set_loss(upstream_pct=pct, downstream_pct=pct, protocol="udp")
                results[pct] = []
                for i in range(runs):
                    run = one_run(lab, env, cutoff_s)
                    results[pct].append(run)
                    if progress:
                        _progress(f"p={pct:g}%", i, run)
            for name in scenarios:
                lab.clear_faults()
                {"udp-blocked": lab.drop_udp, "blackholed": lab.drop_all}[name]()
                others[name] = []
                for i in range(scenario_runs):
                    run = one_run(lab, env, cutoff_s)
                    others[name].append(run)
                    if progress:
                        _progress(name, i, run)
    return results, others


def _progress(name: str, i: int, run: Run) -> None:
    print(
        f"  {name} run {i + 1}: {run.wall_s:.2f} s (cpu {run.cpu_s:.2f} s, load {run.load:.2f}), {run.transport}, loss {run.loss}, "
        f"CI {run.interval}, legs {run.detail('legs_tried')}, {(run.detail('loss_decision') or {}).get('stopped')}, "
        f"call {(run.detail('call') or {}).get('connected')}, media {(run.media or {}).get('duration_ms')} ms, "
        f"rcvbuf drops {run.rcvbuf_drops}, stalled {run.detail('stalled_probes')}, "
        f"relayed call on TCP {(run.detail('relay_race') or {}).get('tcp_chance_pct')}% "
        f"(TCP ready {(run.detail('relay_race') or {}).get('fallback_ready_ms')} ms), "
        f"verdicts {','.join(run.verdicts) or '-'}"
        + ("" if run.transport == "udp" else f"; media.path {(run.media or {}).get('status')}: {(run.media or {}).get('summary')}"),
        file=sys.stderr,
        flush=True,
    )


def scenario_table(others: dict[str, list[Run]]) -> str:
    out = [
        "| path | runs | media.path: status, transport | `agentd check` wall median (min-max) | media.path duration median (min-max) | verdicts (runs) |",
        "|---|---|---|---|---|---|",
    ]
    for name, runs in others.items():
        states: dict[str, int] = {}
        verdicts: dict[str, int] = {}
        for r in runs:
            key = f"{(r.media or {}).get('status')} {r.transport}"
            states[key] = states.get(key, 0) + 1
            for code in r.verdicts:
                verdicts[code] = verdicts.get(code, 0) + 1
        walls = [r.wall_s for r in runs]
        media = [(r.media or {}).get("duration_ms", 0) / 1000 for r in runs]
        out.append(
            f"| {SCENARIOS[name]} | {len(runs)} | {', '.join(f'{k} ({v})' for k, v in states.items())} | "
            f"{median_range(walls, 2)} s | {median_range(media, 2)} s | "
            f"{', '.join(f'`{k}` ({v})' for k, v in sorted(verdicts.items()))} |"
        )
    return "\n".join(out)


def table(results: dict[float, list[Run]]) -> str:
    out = [
        "| p each way | truth 1-(1-p)^2 | runs | on UDP | loss_pct median (min-max) | within 3 pts | CI covers truth | legs median (min-max) | stopped | MOS median | `agentd check` wall median (min-max) | its CPU median (min-max) | load average median (min-max) | socket-buffer drops (runs) | relayed call on TCP, % median (min-max); TCP ready ms max |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for pct, runs in results.items():
        truth = 100 * (1 - (1 - pct / 100) ** 2)
        losses = [r.loss for r in runs if r.loss is not None]
        on_udp = sum(1 for r in runs if r.transport == "udp")
        within = sum(1 for r in runs if r.loss is not None and abs(r.loss - truth) <= 3)
        covers = sum(1 for r in runs if r.interval and r.interval[0] - 1e-9 <= truth <= r.interval[1] + 1e-9)
        legs = [r.detail("legs_tried") for r in runs if r.detail("legs_tried")]
        stops: dict[str, int] = {}
        for r in runs:
            key = (r.detail("loss_decision") or {}).get("stopped") or "none"
            stops[key] = stops.get(key, 0) + 1
        mos = [r.media["metrics"]["mos"] for r in runs if r.media and "mos" in r.media.get("metrics", {})]
        walls = [r.wall_s for r in runs]
        races = [r.detail("relay_race") for r in runs if r.detail("relay_race")]
        race_text = (
            f"{median_range([x['tcp_chance_pct'] for x in races], 2)}; {max(x['fallback_ready_ms'] for x in races):.0f}" if races else "-"
        )
        out.append(
            f"| {pct:g}% | {truth:.2f} | {len(runs)} | {on_udp} | {median_range(losses, 2)} | {within} | {covers} | {median_range(legs, 0)} | "
            f"{', '.join(f'{k} {v}' for k, v in sorted(stops.items()))} | {round(statistics.median(mos), 2) if mos else '-'} | "
            f"{median_range(walls, 2)} s | {median_range([r.cpu_s for r in runs], 2)} s | {median_range([r.load for r in runs], 2)} | "
            f"{sum(r.rcvbuf_drops for r in runs)} ({sum(1 for r in runs if r.rcvbuf_drops)}) | {race_text} |"
        )
    return "\n".join(out)


def independence(results: dict[float, list[Run]]) -> str:
    lines = []
    for pct, runs in results.items():
        if pct <= 0:
            continue
        patterns = [r.pattern() for r in runs if r.pattern()]
        counts = [(r.detail("legs_lost"), r.detail("legs_tried")) for r in runs if r.detail("legs_tried")]
        lines.append(
            f"- p={pct:g}%: {len(set(patterns))} distinct loss patterns in {len(patterns)} runs; "
            f"{len(set(counts))} distinct (lost, tried) counts in {len(counts)} runs"
        )
    return "\n".join(lines)


def numgen_counts(repeats: int = 5, packets: int = 2000, pct: int = 10) -> list[int]:
    """Drops of ``packets`` UDP datagrams by a fresh ``numgen random mod 100 < pct`` rule,
    ``repeats`` times: whether the kernel's random numbers repeat from one rule to the next."""
    import re

    from agentd.testing.netlab import TABLE, Netlab

    counts = []
    with Netlab.create(nat="plain") as lab:
        sender = (
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for _ in range({packets}): s.sendto(b'x' * 50, ('{lab.server_ip}', 9))\n"
        )
        for _ in range(repeats):
            lab.clear_faults()
            lab.nft(lab.router, f'add rule inet {TABLE} faults iifname "lan" meta l4proto udp numgen random mod 100 < {pct} counter drop\n')
            lab.run_in_agent([sys.executable, "-c", sender])
            found = re.search(r"counter packets (\d+)", lab.counters())
            counts.append(int(found.group(1)) if found else -1)
    return counts


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # SIGTERM too tears the lab down (finally blocks)
    parser = argparse.ArgumentParser(description="Issue-11 benchmark: media.path transport and loss over full pre-shift runs in the lab.")
    parser.add_argument("--runs", type=int, default=20, help="full pre-shift runs per loss level (default 20)")
    parser.add_argument("--levels", default="0,2,5,10,20", help="random UDP loss each way at the router, percent (default 0,2,5,10,20)")
    parser.add_argument("--cutoff", type=float, default=30.0, help="kill a run after this many seconds (default 30)")
    parser.add_argument("--scenarios", default="udp-blocked,blackholed", help=f"other paths, comma-separated, '' for none: {', '.join(SCENARIOS)}")
    parser.add_argument("--scenario-runs", type=int, default=5, help="runs of each other path (default 5)")
    parser.add_argument("--quiet", action="store_true", help="no line per run on stderr")
    args = parser.parse_args()
    from agentd.testing.netlab import unavailable_reason

    reason = unavailable_reason()
    if reason:
        print(f"network lab unavailable ({reason}): nothing measured")
        sys.exit(1)
    levels = [float(x) for x in args.levels.split(",") if x]
    started = time.monotonic()
    load_before = load_average()
    scenarios = [x for x in args.scenarios.split(",") if x]
    unknown = [x for x in scenarios if x not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    results, others = run_levels(levels, args.runs, args.cutoff, progress=not args.quiet, scenarios=scenarios, scenario_runs=args.scenario_runs)
    load_after = load_average()
    if results:
        print(f"### media.path in full pre-shift runs, random UDP loss p each way ({args.runs} runs per level)\n")
        print(table(results))
        print()
        print(independence(results))
    if others:
        print(f"\n### Other paths ({args.scenario_runs} runs each)\n")
        print(scenario_table(others))
        print()
    counts = numgen_counts()
    print(f"- `numgen random mod 100 < 10`, 5 fresh rules, 2000 datagrams each: {counts} dropped (binomial: 200 +- 13)")
    print(f"\n({time.monotonic() - started:.0f} s; load average before {load_before}, after {load_after})")


if __name__ == "__main__":
    main()
