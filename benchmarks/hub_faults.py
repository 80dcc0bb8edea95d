"""Issues 23 and 24 benchmark: the hub under a reconnect storm, a password flood and a
PostgreSQL restart. Everything on 127.0.0.x; every loop bounded.

    .venv/bin/python -m benchmarks.hub_faults                      # all three
    .venv/bin/python -m benchmarks.hub_faults storm --pcs 5000 --runs 3
    .venv/bin/python -m benchmarks.hub_faults logins --runs 20
    .venv/bin/python -m benchmarks.hub_faults listen --runs 20

1. ``storm``: ``--pcs`` PCs (rows written directly, each with its own install token, so
   each costs the hub one argon2 verification) are lightweight WebSocket clients in a
   separate process that reconnect like the daemon's hub link (``backoff_s``: from
   ``reconnect_min_s`` 1 s doubling to 60 s, jitter on the upper half; open timeout
   10 s; a 503's ``Retry-After`` honoured within that bound: ``reconnect_delay_s``). Once all are connected the hub (SQLite) gets SIGTERM and a new process starts
   on the same port. Measured: ``/healthz`` latency while the PCs come back (polled
   every 50 ms from the benchmark's process: p50, p99, max); how many PCs are back and
   when; "within the backoff's bound": the PC's first attempt after the hub answered
   again succeeded (it waited only its own backoff, never a second round); PCs back
   within 60 s (the backoff's cap) of the hub answering; 503s the hub answered.
2. ``logins``: 200 parallel wrong HTTP Basic passwords for one account from ten
   addresses (127.0.0.2-11) at one hub while ``/healthz`` is polled: answers by status,
   ``/healthz`` p50 / p99 / max.
3. ``listen``: two hub processes on Debian's PostgreSQL, a simulated PC on the first;
   PostgreSQL restarted (``pg_ctl stop -m fast``, start); at once a check is requested
   on the second process: time from PostgreSQL accepting connections again to the PC's
   first progress event shown by the API.

Targets: ``/healthz`` p99 under 200 ms in the storm and the flood; every PC back within
its backoff's bound; the flood answers 401 or 429, never 500; the trigger after a
restart reaches the PC within 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._figures import load_average, median_range  # noqa: E402

MIN_S, MAX_S, OPEN_S = 1.0, 60.0, 10.0  # the daemon's [hub] defaults


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _more_files() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _start_hub(database: str, root: Path, port: int, name: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "AGENTD_STATE_DIR": str(root / "state"), "AGENTD_RUNTIME_DIR": str(root / "run")}
    env.pop("AGENTD_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "agentd", "hub", "serve", "--listen", f"127.0.0.1:{port}", "--database", database,
                             "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL, stderr=open(root / f"{name}.stderr", "wb"),
                            preexec_fn=_more_files, cwd=root)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((root / f"{name}.stderr").read_text()[-1000:])
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError("the hub did not start within 120 s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))] if ordered else float("nan")


async def _poll_health(url: str, stop: asyncio.Event, into: list[float], every_s: float = 0.05) -> None:
    """``/healthz`` latencies (ms) of the answers that came (a hub that is down is not timed)."""
    async with httpx.AsyncClient(timeout=10) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                answer = await client.get(f"{url}/healthz")
                if answer.status_code == 200:
                    into.append((time.perf_counter() - t0) * 1000)
            except httpx.HTTPError:
                pass
            await asyncio.sleep(every_s)


# -- 1. the reconnect storm -------------------------------------------------------------------


async def _client_main(url: str, tokens_file: str) -> None:
    """The storm's PCs (a process of their own): reconnect like the daemon; on stdin's
    end, print each PC's connections and attempts as JSON."""
    import websockets

    from agentd_plugins.hub import reconnect_delay_s, retry_after_of

    tokens = json.loads(Path(tokens_file).read_text())
    stop = asyncio.Event()
    records: dict[str, dict] = {install_id: {"connected": [], "attempts": []} for install_id, _ in tokens}
    ws_url = url.replace("http://", "ws://") + "/api/v1/agent"

    async def pc(install_id: str, token: str) -> None:
        rec = records[install_id]
        attempt = 0
        while not stop.is_set():
            started = time.time()
            ok = False
            why = ""
            retry_after = None
            try:
                async with websockets.connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=OPEN_S,
                                              ping_interval=None, max_queue=4, compression=None) as ws:
                    ok = True
                    attempt = 0
                    rec["connected"].append(time.time())
                    rec["attempts"].append((started, True, ""))
                    async for _ in ws:
                        pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                why = f"{type(exc).__name__}: {str(exc)[:60]}"
                retry_after = retry_after_of(exc)
            if not ok:
                rec["attempts"].append((started, False, why))
            attempt += 1
            try:
                await asyncio.wait_for(stop.wait(), reconnect_delay_s(attempt, MIN_S, MAX_S, retry_after))
            except asyncio.TimeoutError:
                pass

    async def report() -> None:
        while not stop.is_set():
            print(json.dumps({"connected_now": sum(1 for r in records.values() if r["connected"])}), flush=True)
            await asyncio.sleep(1.0)

    tasks = [asyncio.ensure_future(pc(i, t)) for i, t in tokens]
    reporter = asyncio.ensure_future(report())
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the driver closes stdin
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, reporter, return_exceptions=True)
    print(json.dumps({"records": records}), flush=True)


async def _prepare(database: str, pcs: int) -> tuple[list[tuple[str, str]], tuple[str, str]]:
    """``pcs`` enrolled PCs and a user, rows written as enrollment writes them (argon2
    hash and SHA-256 check of each token; one secret, each PC its own token id)."""
    import secrets as pysecrets

    from agentd.hub import security
    from agentd.hub.db import make_engine, pcs as pcs_table
    from agentd.hub.migrate import upgrade
    from agentd.hub.store import Store

    engine = make_engine(database)
    await upgrade(engine)
    user = ("bench", "bench-password-1")
    await Store(engine).add_user(*user)
    secret = pysecrets.token_urlsafe(32)
    token_hash, check = security.TOKENS.hash(secret), security.token_check(secret)
    rows, tokens = [], []
    for i in range(pcs):
        token_id, install_id = f"{i:016x}", f"agentd-bench-{i:05d}"
        rows.append({"install_id": install_id, "token_id": token_id, "token_hash": token_hash, "token_check": check,
                     "enroll_key_id": "bench", "hostname": f"bench-{i:05d}", "enrolled": time.time()})
        tokens.append((install_id, f"{security.INSTALL_TOKEN_KIND}.{token_id}.{secret}"))
    async with engine.begin() as conn:
        for start in range(0, len(rows), 1000):
            await conn.execute(pcs_table.insert(), rows[start:start + 1000])
    await engine.dispose()
    return tokens, user


def storm_once(pcs: int, root: Path) -> dict:
    database = f"sqlite:///{root / 'hub.sqlite'}"
    tokens, _ = asyncio.run(_prepare(database, pcs))
    (root / "tokens.json").write_text(json.dumps(tokens))
    port = _free_port()
    hub, url = _start_hub(database, root, port, "hub-a")
    client = subprocess.Popen([sys.executable, "-m", "benchmarks.hub_faults", "storm-client", "--url", url, "--tokens", str(root / "tokens.json")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=_more_files, cwd=REPO)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 900:  # everyone connected to the first process
            try:
                if httpx.get(f"{url}/healthz", timeout=30).json()["connected_pcs"] >= pcs:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        cold_s = time.monotonic() - t0
        load = load_average()
        t_down = time.time()
        _stop(hub)  # SIGTERM: the hub closes every socket (1012) and exits
        latencies: list[float] = []

        async def restart_and_watch() -> tuple[float, float]:
            stop = asyncio.Event()
            poller = asyncio.ensure_future(_poll_health(url, stop, latencies))
            nonlocal hub
            hub, _ = await asyncio.to_thread(_start_hub, database, root, port, "hub-b")
            t_up = time.time()
            async with httpx.AsyncClient(timeout=30) as c:
                deadline = time.monotonic() + 600
                while time.monotonic() < deadline:
                    try:
                        if (await c.get(f"{url}/healthz")).json()["connected_pcs"] >= pcs:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.2)
            t_all = time.time()
            await asyncio.sleep(2.0)
            stop.set()
            await poller
            return t_up, t_all

        t_up, t_all = asyncio.run(restart_and_watch())
        out, _ = client.communicate(input="", timeout=120)
    finally:
        if client.poll() is None:
            client.kill()
        _stop(hub)
    records = json.loads(out.strip().splitlines()[-1])["records"]
    back, first_try_ok, after_up, refused_503 = 0, 0, [], 0
    failures: dict[str, int] = {}
    for rec in records.values():
        again = [t for t in rec["connected"] if t > t_down]
        if again:
            back += 1
            after_up.append(max(0.0, again[0] - t_up))
        # the first attempt that met the hub up: one that succeeded (it may have started
        # a moment before /healthz answered) or one that started after
        tries = [(t, ok, why) for t, ok, why in rec["attempts"] if t > t_down and (ok or t >= t_up)]
        refused_503 += sum(1 for _, ok, why in tries if not ok and "503" in why)
        if tries and tries[0][1]:
            first_try_ok += 1
        elif tries:
            failures[tries[0][2]] = failures.get(tries[0][2], 0) + 1
    return {"pcs": pcs, "cold_s": cold_s, "down_s": t_up - t_down, "back": back, "first_try_ok": first_try_ok,
            "within_bound": sum(1 for s in after_up if s <= MAX_S), "refused_503": refused_503,
            "back_p50_s": _pct(after_up, 0.5), "back_max_s": max(after_up) if after_up else float("nan"), "all_back_s": t_all - t_up,
            "health_p50": _pct(latencies, 0.5), "health_p99": _pct(latencies, 0.99), "health_max": max(latencies) if latencies else float("nan"),
            "health_n": len(latencies), "load": load, "failures": failures}


def storm(args: argparse.Namespace) -> bool:
    results = []
    for n in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="agentd-storm-") as tmp:
            r = storm_once(args.pcs, Path(tmp))
        results.append(r)
        print(f"  storm run {n + 1}: {json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()})}", file=sys.stderr)
    print(f"\nReconnect storm: {args.pcs} PCs, hub (SQLite) restarted, {args.runs} run(s)\n")
    print("| run | first connect of all | hub down | PCs back | back on their first try after the hub was up | back within 60 s (the backoff's bound) of the hub up | 503s answered | back after the hub was up: p50 / last | /healthz p50 / p99 / max (samples) | load before |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n, r in enumerate(results, 1):
        print(f"| {n} | {r['cold_s']:.0f} s | {r['down_s']:.1f} s | {r['back']} of {r['pcs']} | {r['first_try_ok']} of {r['pcs']} | "
              f"{r['within_bound']} of {r['pcs']} | {r['refused_503']} | "
              f"{r['back_p50_s']:.1f} / {r['back_max_s']:.1f} s | {r['health_p50']:.0f} / {r['health_p99']:.0f} / {r['health_max']:.0f} ms ({r['health_n']}) | {r['load']} |")
    if len(results) > 1:
        print(f"| median (min-max) | {median_range([r['cold_s'] for r in results], 0)} s | {median_range([r['down_s'] for r in results])} s | | | | | "
              f"last {median_range([r['back_max_s'] for r in results])} s | p99 {median_range([r['health_p99'] for r in results], 0)} ms | |")
    return all(r["back"] == r["pcs"] and r["within_bound"] == r["pcs"] and r["health_p99"] < 200 for r in results)


# -- 2. the password flood ----------------------------------------------------------------------


def logins(args: argparse.Namespace) -> bool:
    rows = []
    with tempfile.TemporaryDirectory(prefix="agentd-logins-") as tmp:
        root = Path(tmp)
        database = f"sqlite:///{root / 'hub.sqlite'}"

        async def user() -> None:
            from agentd.hub.db import make_engine
            from agentd.hub.migrate import upgrade
            from agentd.hub.store import Store

            engine = make_engine(database)
            await upgrade(engine)
            await Store(engine).add_user("helpdesk", "right-password-1")
            await engine.dispose()

        asyncio.run(user())
        for n in range(args.runs):
            hub, url = _start_hub(database, root, _free_port(), f"hub-{n}")  # a fresh process: empty buckets
            try:
                rows.append(asyncio.run(_flood(url)))
            finally:
                _stop(hub)
            rows[-1]["traceback"] = "Traceback" in (root / f"hub-{n}.stderr").read_text(errors="replace")
            print(f"  flood run {n + 1}: {rows[-1]}", file=sys.stderr)
    print(f"\n200 parallel wrong HTTP Basic passwords from 10 addresses, {args.runs} run(s)\n")
    print("| runs | 401 | 429 | 500 or other | /healthz during the flood: p50 / p99 / max, median (min-max) over runs | flood answered in | traceback in the hub's log |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {len(rows)} | {median_range([r['401'] for r in rows], 0)} | {median_range([r['429'] for r in rows], 0)} | "
          f"{sum(r['other'] for r in rows)} in all | {median_range([r['p50'] for r in rows], 0)} / {median_range([r['p99'] for r in rows], 0)} / "
          f"{median_range([r['max'] for r in rows], 0)} ms | {median_range([r['took_s'] for r in rows], 2)} s | {sum(r['traceback'] for r in rows)} of {len(rows)} |")
    print(f"\n/healthz p99 under 200 ms in {sum(r['p99'] < 200 for r in rows)} of {len(rows)} runs; load average at the end {load_average()}")
    return all(r["other"] == 0 and not r["traceback"] for r in rows)


async def _flood(url: str) -> dict:
    latencies: list[float] = []
    stop = asyncio.Event()
    poller = asyncio.ensure_future(_poll_health(url, stop, latencies, every_s=0.02))
    await asyncio.sleep(0.5)
    clients = [httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=f"127.0.0.{n + 2}"), timeout=120) for n in range(10)]
    started = time.perf_counter()
    try:
        answers = await asyncio.gather(*[clients[i % 10].get(f"{url}/api/v1/pcs", auth=("helpdesk", f"wrong-{i}")) for i in range(200)],
                                       return_exceptions=True)
    finally:
        took = time.perf_counter() - started
        for c in clients:
            await c.aclose()
    await asyncio.sleep(0.5)
    stop.set()
    await poller
    codes = [a.status_code if isinstance(a, httpx.Response) else -1 for a in answers]
    return {"401": codes.count(401), "429": codes.count(429), "other": sum(c not in (401, 429) for c in codes), "took_s": took,
            "p50": _pct(latencies, 0.5), "p99": _pct(latencies, 0.99), "max": max(latencies), "n": len(latencies)}


# -- 3. PostgreSQL restarted under two hub processes ------------------------------------------------


def listen(args: argparse.Namespace) -> bool:
    from agentd.testing import postgres

    if not postgres.available():
        print("benchmarks.hub_faults listen: Debian's postgresql is not installed", file=sys.stderr)
        return False
    results: list[float] = []
    with tempfile.TemporaryDirectory(prefix="agentd-listen-") as tmp, postgres.running_postgres() as pg:
        root = Path(tmp)
        database = pg.url()
        tokens, user = asyncio.run(_prepare(database, 1))
        first, first_url = _start_hub(database, root, _free_port(), "hub-1")
        second, second_url = _start_hub(database, root, _free_port(), "hub-2")
        try:
            results = asyncio.run(_listen_runs(pg, first_url, second_url, tokens[0], user, args.runs))
        finally:
            _stop(first)
            _stop(second)
        reopened = (root / "hub-1.stderr").read_text(errors="replace").count("LISTEN connection to PostgreSQL reopened")
    done = [r for r in results if r is not None]
    print(f"\nPostgreSQL restarted under two hub processes, a check asked on the second at once, {args.runs} run(s)\n")
    print("| runs | reached the PC | PostgreSQL up → first progress, median (min-max) | within 2 s | LISTEN reopened (log lines) |")
    print("|---|---|---|---|---|")
    print(f"| {len(results)} | {len(done)} | {median_range(done, 2)} s | {sum(r <= 2.0 for r in done)} of {len(results)} | {reopened} |")
    return len(done) == len(results) and all(r <= 2.0 for r in done)


async def _listen_runs(pg, first_url: str, second_url: str, pc: tuple[str, str], user: tuple[str, str], runs: int) -> list[float | None]:
    from benchmarks.hub import SimulatedPC

    sim = SimulatedPC(first_url, *pc)
    await sim.connect()
    results: list[float | None] = []
    async with httpx.AsyncClient(base_url=second_url, auth=user, timeout=30) as client:
        for _ in range(runs):
            await asyncio.to_thread(pg.restart)
            up = time.perf_counter()
            answer = await client.post(f"/api/v1/pcs/{sim.install_id}/checks", json={"profile": "preshift"})
            if answer.status_code != 202:
                results.append(None)
                continue
            run_id = answer.json()["run_id"]
            took = None
            while time.perf_counter() - up < 40:
                run = (await client.get(f"/api/v1/runs/{run_id}")).json()
                if run["events"]:
                    took = time.perf_counter() - up
                    break
                if run["state"] == "failed":
                    break
                await asyncio.sleep(0.02)
            results.append(took)
            print(f"  restart: first progress after {took} s", file=sys.stderr)
            await asyncio.sleep(1.0)
    await sim.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", nargs="*", default=["storm", "logins", "listen"], help="storm, logins, listen (default: all three)")
    parser.add_argument("--pcs", type=int, default=5000, help="PCs in the reconnect storm (default 5000)")
    parser.add_argument("--runs", type=int, default=None, help="runs of each part (default: storm 1, logins 20, listen 20)")
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--tokens", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _more_files()
    if args.part == ["storm-client"]:
        asyncio.run(_client_main(args.url, args.tokens))
        return 0
    from agentd import logs

    logs.configure("error")
    ok = True
    for part in args.part:
        if part not in ("storm", "logins", "listen"):
            parser.error(f"unknown part {part!r}: choose storm, logins or listen")
        part_args = argparse.Namespace(**vars(args))
        part_args.runs = args.runs or (1 if part == "storm" else 20)
        ok = {"storm": storm, "logins": logins, "listen": listen}[part](part_args) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
