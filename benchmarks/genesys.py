"""Issue-4 benchmark: the Genesys Cloud client and evidence against the fake Genesys Cloud.

    .venv/bin/python -m benchmarks.genesys              # defaults: 5 diagnose runs, 40 archived calls
    .venv/bin/python -m benchmarks.genesys --help

Prints one markdown table:

- ``agentd diagnose ID --json`` as a process against the fake (every source): wall time
  (median, max of ``--runs``), API requests per run, peak RSS of the process;
- the same with a 429 storm (3 answers with Retry-After 1 s on the conversation) and a
  5xx burst (2 answers 503 on the station): wall time, so the cost of waiting shows;
- the client in-process: sequential and 20-concurrent GETs per second;
- ``agentd archive --since 24h`` over ``--calls`` calls below MOS 3.5: the first run (wall
  time, calls per second) and the second (idempotent: nothing fetched again).

The fake listens on 127.0.0.1 only; nothing else is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from agentd.config import Secret
from agentd.testing.fake_genesys import CC_CLIENT_ID, CC_CLIENT_SECRET, DROPPED_CALL_ID, FakeGenesys, add_call, default_scenario
from agentd_plugins.genesys.client import GenesysClient
from agentd_plugins.genesys.settings import GenesysSettings


def run_agentd(args: list[str], env: dict[str, str]) -> tuple[float, int, int, str]:
    """(wall s, exit code, peak RSS MiB, stdout) of one agentd process."""
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "agentd", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    out = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return time.monotonic() - started, process.returncode, usage.ru_maxrss // 1024, out


async def in_thread(args: list[str], env: dict[str, str]):
    return await asyncio.to_thread(run_agentd, args, env)


async def main(runs: int, calls: int) -> None:
    rows: list[tuple[str, str]] = []
    state = default_scenario()
    now = datetime.now(timezone.utc)
    for index in range(calls - 2):  # the scenario already has two calls below 3.5
        add_call(state, f"bench000-0000-4000-8000-{index:012d}", now - timedelta(minutes=20 + index * 5), talk_s=60, mos=3.0)
    async with FakeGenesys(state) as fake:
        folder = Path(tempfile.mkdtemp(prefix="agentd-bench-genesys-"))
        config = folder / "agentd.toml"
        config.write_text(fake.config_toml(extra='integration_ids = ["1e2f3a4b-0000-4000-8000-00000000a002"]\n'))
        env = {**os.environ, "AGENTD_CONFIG": str(config), "AGENTD_STATE_DIR": str(folder / "state"), "AGENTD_RUNTIME_DIR": str(folder / "run")}

        times, rss, per_run = [], [], []
        for _ in range(runs):
            before = len(state.requests)
            wall, code, peak, _ = await in_thread(["diagnose", DROPPED_CALL_ID, "--json"], env)
            assert code == 0, code
            times.append(wall)
            rss.append(peak)
            per_run.append(len(state.requests) - before)
        rows.append(("diagnose --json (process), median / max", f"{statistics.median(times):.2f} s / {max(times):.2f} s"))
        rows.append(("diagnose: API requests per run (incl. token)", f"{statistics.median(per_run):.0f}"))
        rows.append(("diagnose: peak RSS of the process", f"{max(rss)} MiB"))

        state.inject("^/api/v2/conversations/", status=429, times=3, retry_after="1")
        state.inject("^/api/v2/users/.*/station$", status=503, times=2)
        wall, code, _, out = await in_thread(["diagnose", DROPPED_CALL_ID, "--json"], env)
        ok = sum(1 for e in json.loads(out)["evidence"] if e["status"] == "ok")
        rows.append(("diagnose with 3x429 (Retry-After 1 s) + 2x503", f"{wall:.2f} s, exit {code}, {ok} ok items"))

        settings = GenesysSettings(api_base_url=fake.url, login_base_url=fake.url, client_id=CC_CLIENT_ID, client_secret=Secret(CC_CLIENT_SECRET))
        async with GenesysClient(settings) as client:
            path = f"/api/v2/conversations/{DROPPED_CALL_ID}"
            await client.get(path)
            n = 300
            started = time.monotonic()
            for _ in range(n):
                await client.get(path)
            sequential = n / (time.monotonic() - started)
            started = time.monotonic()
            for _ in range(n // 20):
                await asyncio.gather(*(client.get(path) for _ in range(20)))
            concurrent = n / (time.monotonic() - started)
        rows.append(("client GET, sequential", f"{sequential:.0f} req/s"))
        rows.append(("client GET, 20 concurrent", f"{concurrent:.0f} req/s"))

        before = len(state.requests)
        wall, code, peak, out = await in_thread(["archive", "--since", "24h", "--json"], env)
        result = json.loads(out)
        rows.append((f"archive, first run ({result['found']} calls below 3.5)", f"{wall:.2f} s, {result['stored']} stored, {result['stored'] / wall:.1f} calls/s, {len(state.requests) - before} requests, {peak} MiB"))
        before = len(state.requests)
        wall, code, _, out = await in_thread(["archive", "--since", "24h", "--json"], env)
        result = json.loads(out)
        rows.append(("archive, second run (idempotent)", f"{wall:.2f} s, {result['stored']} stored, {result['already']} already, {len(state.requests) - before} requests"))

    print("| measurement | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    from agentd import logs

    logs.configure("warning")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="diagnose runs (default 5)")
    parser.add_argument("--calls", type=int, default=40, help="calls below MOS 3.5 for the archive (default 40, at least 2)")
    options = parser.parse_args()
    asyncio.run(main(options.runs, max(2, options.calls)))
