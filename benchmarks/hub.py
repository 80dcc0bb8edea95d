"""Issue-12 benchmark: one `agentd hub serve` process with many simulated PCs over loopback.

    .venv/bin/python -m benchmarks.hub                 # 5 000 PCs, SQLite and PostgreSQL
    .venv/bin/python -m benchmarks.hub --pcs 1000 --no-postgres

For each database (SQLite in a temporary folder; Debian's PostgreSQL started as
``nobody`` in a temporary folder when installed):

- connections: ``--pcs`` simulated PCs (asyncio WebSocket clients in this process, each
  with its own install token) connect to ``GET /api/v1/agent``; the hub process's RSS
  before and after gives the memory per connection;
- trigger to first progress: ``--triggers`` times, ``POST /api/v1/pcs/<id>/checks`` for a
  random connected PC, which answers the request at once with a progress event; the time
  until ``GET /api/v1/runs/<id>`` shows that event (polled every 10 ms), p50 and p95;
- ingest: ``--reports`` reports posted by 50 PCs, 16 at a time, reports stored per second.

PCs are enrolled by writing their rows directly (argon2 hashes as enrollment makes them),
so the figures are the hub's, not the enrollment's. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _prepare(database: str, pcs: int) -> tuple[list[tuple[str, str]], tuple[str, str]]:
    """Enroll ``pcs`` PCs and one helpdesk user by writing their rows; returns (install id, token) pairs."""
    import secrets as pysecrets

    from agentd.hub import security
    from agentd.hub.db import make_engine, pcs as pcs_table
    from agentd.hub.migrate import upgrade
    from agentd.hub.store import Store

    engine = make_engine(database)
    await upgrade(engine)
    store = Store(engine)
    user = ("bench", "bench-password-1")
    await store.add_user(*user)
    secret = pysecrets.token_urlsafe(32)
    token_hash = security.TOKENS.hash(secret)  # one secret, one hash: each PC still has its own token id
    rows, tokens = [], []
    now = time.time()
    for i in range(pcs):
        token_id = f"{i:016x}"
        install_id = f"agentd-bench-{i:05d}"
        rows.append({"install_id": install_id, "token_id": token_id, "token_hash": token_hash, "enroll_key_id": "bench",
                     "hostname": f"bench-{i:05d}", "enrolled": now})
        tokens.append((install_id, f"{security.INSTALL_TOKEN_KIND}.{token_id}.{secret}"))
    async with engine.begin() as conn:
        for start in range(0, len(rows), 1000):
            await conn.execute(pcs_table.insert(), rows[start:start + 1000])
    await engine.dispose()
    return tokens, user


def _start_hub(database: str, root: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "AGENTD_STATE_DIR": str(root / "state"), "AGENTD_RUNTIME_DIR": str(root / "run")}
    env.pop("AGENTD_CONFIG", None)

    def more_files() -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    proc = subprocess.Popen([sys.executable, "-m", "agentd", "hub", "serve", "--listen", f"127.0.0.1:{port}", "--database", database,
                             "--log-level", "error"], env=env, stdout=subprocess.DEVNULL, stderr=open(root / "hub.stderr", "wb"),
                            preexec_fn=more_files, cwd=root)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((root / "hub.stderr").read_text()[-1000:])
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the hub did not start within 120 s")


class SimulatedPC:
    """One PC's WebSocket: answers a check request at once with a progress event."""

    def __init__(self, url: str, install_id: str, token: str) -> None:
        self.url, self.install_id, self.token = url, install_id, token
        self.ws = None
        self.task: asyncio.Task | None = None

    async def connect(self) -> None:
        import websockets

        self.ws = await websockets.connect(self.url.replace("http://", "ws://") + "/api/v1/agent", open_timeout=120,
                                           additional_headers={"Authorization": f"Bearer {self.token}"}, ping_interval=None,
                                           max_queue=4, compression=None)
        self.task = asyncio.ensure_future(self._serve())

    async def _serve(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            if message.get("type") == "check":
                await self.ws.send(json.dumps({"type": "progress", "run_id": message["run_id"], "seq": 1,
                                               "event": {"event": "started", "check_id": "bench", "title": "bench"}}))

    async def close(self) -> None:
        if self.task:
            self.task.cancel()
        if self.ws is not None:
            await self.ws.close()


async def _measure(url: str, tokens: list[tuple[str, str]], user: tuple[str, str], hub_pid: int, args: argparse.Namespace) -> dict:
    hub = psutil.Process(hub_pid)
    base_rss = hub.memory_info().rss
    sims = [SimulatedPC(url, i, t) for i, t in tokens]
    started = time.monotonic()
    batch = 100
    failed = 0
    for start in range(0, len(sims), batch):
        results = await asyncio.gather(*(s.connect() for s in sims[start:start + batch]), return_exceptions=True)
        failed += sum(1 for r in results if isinstance(r, BaseException))
    connect_s = time.monotonic() - started
    async with httpx.AsyncClient(base_url=url, auth=user, timeout=30) as client:
        for _ in range(600):  # the hub records each connection; wait until it says all are there
            health = (await client.get("/healthz")).json()
            if health["connected_pcs"] >= len(sims) - failed:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)
        rss = hub.memory_info().rss
        connected = health["connected_pcs"]
        latencies = []
        live = [s for s in sims if s.ws is not None]
        for _ in range(args.triggers):
            pc = random.choice(live)
            t0 = time.perf_counter()
            answer = await client.post(f"/api/v1/pcs/{pc.install_id}/checks", json={"profile": "preshift"})
            run_id = answer.json()["run_id"]
            while True:
                run = (await client.get(f"/api/v1/runs/{run_id}")).json()
                if run["events"]:
                    latencies.append(time.perf_counter() - t0)
                    break
                if time.perf_counter() - t0 > 30:
                    latencies.append(float("inf"))
                    break
                await asyncio.sleep(0.01)
    await asyncio.gather(*(s.close() for s in sims), return_exceptions=True)
    latencies.sort()
    return {
        "pcs": len(sims), "connected": connected, "connect_s": connect_s,
        "rss_base_mb": base_rss / 2**20, "rss_mb": rss / 2**20,
        "kb_per_conn": (rss - base_rss) / 1024 / max(1, connected),
        "p50_ms": statistics.median(latencies) * 1000, "p95_ms": latencies[int(0.95 * (len(latencies) - 1))] * 1000,
        "max_ms": latencies[-1] * 1000,
    }


async def _ingest(url: str, tokens: list[tuple[str, str]], reports: int) -> float:
    from tests.hub.conftest import make_report

    posters = tokens[:50]
    queue = [(posters[i % len(posters)], make_report(posters[i % len(posters)][0], hostname="bench")) for i in range(reports)]
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for install_id, token in posters:  # each token verified once before timing (argon2), as a live PC's would be
            await client.post("/api/v1/reports", content=b"{}", headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "x"})
        semaphore = asyncio.Semaphore(16)
        stored = 0

        async def one(item) -> None:
            nonlocal stored
            (install_id, token), report = item
            async with semaphore:
                answer = await client.post("/api/v1/reports", content=report.to_json().encode(),
                                           headers={"Authorization": f"Bearer {token}", "Idempotency-Key": report.id,
                                                    "Content-Type": "application/json"})
                stored += answer.status_code == 201

        started = time.perf_counter()
        await asyncio.gather(*(one(item) for item in queue))
        elapsed = time.perf_counter() - started
    if stored != reports:
        print(f"  (only {stored} of {reports} reports were stored)", file=sys.stderr)
    return stored / elapsed


def run_one(name: str, database: str, args: argparse.Namespace, root: Path) -> dict:
    tokens, user = asyncio.run(_prepare(database, args.pcs))
    proc, url = _start_hub(database, root)
    try:
        result = asyncio.run(_measure(url, tokens, user, proc.pid, args))
        result["ingest_per_s"] = asyncio.run(_ingest(url, tokens, args.reports))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    result["database"] = name
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pcs", type=int, default=5000, help="simulated PCs connected at once (default 5000)")
    parser.add_argument("--triggers", type=int, default=100, help="check requests timed (default 100)")
    parser.add_argument("--reports", type=int, default=500, help="reports posted for the ingest rate (default 500)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.pcs + 500:
        print(f"benchmarks.hub: the open-file limit ({hard}) is too low for {args.pcs} connections", file=sys.stderr)
        return 2
    from agentd import logs
    from agentd.testing import postgres

    logs.configure("error")
    results = []
    with tempfile.TemporaryDirectory(prefix="agentd-hub-bench-") as tmp:
        root = Path(tmp)
        (root / "sqlite").mkdir()
        results.append(run_one("SQLite (WAL, synchronous=FULL)", f"sqlite:///{root / 'sqlite' / 'hub.sqlite'}", args, root / "sqlite"))
        if not args.no_postgres and postgres.available():
            (root / "pg").mkdir()
            with postgres.running_postgres() as pg:
                results.append(run_one("PostgreSQL 15 (fsync off)", pg.url(), args, root / "pg"))
    print("| database | PCs connected | connect all | hub RSS idle → connected | per connection | trigger → first progress p50 / p95 (max) | ingest |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['database']} | {r['connected']} of {r['pcs']} | {r['connect_s']:.0f} s | {r['rss_base_mb']:.0f} → {r['rss_mb']:.0f} MB | "
              f"{r['kb_per_conn']:.0f} KiB | {r['p50_ms']:.0f} / {r['p95_ms']:.0f} ms ({r['max_ms']:.0f}) | {r['ingest_per_s']:.0f} reports/s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
