"""Issue-23 benchmark: the fleet page and ``GET /api/v1/pcs`` of one `agentd hub serve`
process with a large fleet (written through the store: tests/hub/fleet_seed.py).

    .venv/bin/python -m benchmarks.hub_fleet            # 5 000 PCs, 20 requests each
    .venv/bin/python -m benchmarks.hub_fleet --pcs 2000 --requests 10

The server-side time is the page's own ``Server-Timing`` header (from the request's
arrival in the handler to the rendered page); the wall time is the whole HTTP round trip
on loopback. The target (issue 23): the first page under 300 ms on the server and at most
200 KB. Figures are medians with their range; the machine's load average is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._figures import load_average, median_range  # noqa: E402

TARGET_MS = 300
"""Issue 23: the first page under 300 ms on the server."""


async def _prepare(database: str, pcs: int) -> tuple[str, str]:
    from agentd.hub.db import make_engine
    from agentd.hub.migrate import upgrade
    from agentd.hub.store import Store
    from tests.hub.fleet_seed import seed_fleet

    engine = make_engine(database)
    await upgrade(engine)
    store = Store(engine)
    user = ("bench", "bench-password-1")
    await store.add_user(*user)
    await seed_fleet(store, pcs)
    await engine.dispose()
    return user


def _serve(database: str, root: Path) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"AGENTD_STATE_DIR": str(root / "state"), "AGENTD_RUNTIME_DIR": str(root / "run"), "XDG_CONFIG_HOME": str(root / "cfg"),
           "PATH": "/usr/bin:/bin", "HOME": str(root)}
    proc = subprocess.Popen([sys.executable, "-m", "agentd", "hub", "serve", "--listen", f"127.0.0.1:{port}", "--database", database,
                             "--log-level", "error"], env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("benchmarks.hub_fleet: the hub did not start within 120 s")


def _measure(url: str, user: tuple[str, str], requests: int) -> list[dict]:
    cases = [("fleet page 1 (not ready first)", "/", {}), ("fleet, sorted by last seen", "/", {"sort": "last_seen", "dir": "desc"}),
             ("fleet, text + status + site", "/", {"q": "desk-s03", "readiness": "not_ready", "site": "198.18.3.0/24"}),
             ("fleet page 40", "/", {"page": 40}), ("GET /api/v1/pcs (100 a page)", "/api/v1/pcs", {})]
    out = []
    with httpx.Client(base_url=url, timeout=60) as client:
        assert client.post("/login", data={"name": user[0], "password": user[1]}).status_code == 303
        for name, path, params in cases:
            server, wall, size = [], [], 0
            for _ in range(requests):
                began = time.perf_counter()
                answer = client.get(path, params=params)
                wall.append((time.perf_counter() - began) * 1000)
                answer.raise_for_status()
                size = len(answer.content)
                timing = re.search(r"app;dur=([0-9.]+)", answer.headers.get("server-timing", ""))
                if timing:
                    server.append(float(timing.group(1)))
            out.append({"case": name, "server": server, "wall": wall, "bytes": size})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pcs", type=int, default=5000, help="PCs in the fleet (default 5000)")
    parser.add_argument("--requests", type=int, default=20, help="requests per case (default 20)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="agentd-hub-fleet-") as tmp:
        root = Path(tmp)
        database = f"sqlite:///{root / 'hub.sqlite'}"
        user = asyncio.run(_prepare(database, args.pcs))
        proc, url = _serve(database, root)
        try:
            _measure(url, user, 2)  # warm: the first request of a process imports the templates
            results = _measure(url, user, args.requests)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"{args.pcs} PCs on SQLite, {args.requests} requests per case; load average {load_average()}")
    print(f"| case | server (Server-Timing) median (min-max) | under {TARGET_MS} ms | round trip median (min-max) | size |")
    print("|---|---|---|---|---|")
    for r in results:
        server = median_range(r["server"], 0) + " ms" if r["server"] else "-"
        under = f"{sum(t < TARGET_MS for t in r['server'])} of {len(r['server'])}" if r["server"] else "-"
        wall = median_range(r["wall"], 0) + " ms"
        print(f"| {r['case']} | {server} | {under} | {wall} | {r['bytes'] / 1024:.0f} KiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
