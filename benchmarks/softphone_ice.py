"""Issue-10 benchmark: what fetching the softphone's own STUN/TURN servers costs a pre-shift.

    .venv/bin/python -m benchmarks.softphone_ice            # defaults: 20 runs each
    .venv/bin/python -m benchmarks.softphone_ice --help

Against the fake Genesys Cloud on loopback (REST, and the streaming channel: WebSocket,
SASL PLAIN, bind, XEP-0215 extdisco) handing out a real coturn with TURN REST credentials.
Prints one markdown table, each figure as median / min / max over ``--runs`` runs:

- discovery cold (no cached list: users/me, a streaming channel, connect, SASL, bind, the
  two extdisco IQs, close) in a loaded process (as the daemon runs it: the agent's access
  token already held), and the median of each step;
- discovery cached (the owner-only list in the state folder);
- a pre-shift run of ``stun`` + ``turn.udp`` against those servers in that process, with
  the list cold and cached, and per pair of runs the difference: what discovery adds;
- the same in a fresh ``agentd check --no-daemon`` process per run (as an agent's own
  command: its imports, and an access token from the stored refresh token first): the
  ``stun`` row's time with the list cold and cached, and discovery's own total from the
  report (``details.discovery[0].timings_ms.total_ms``).

Targets (issue 10): cold <= 1.5 s, cached <= 0.1 s. The machine's load average is printed
before and after. Nothing but 127.0.0.1/127.0.0.2 is contacted.
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
from pathlib import Path

from agentd.testing.coturn import Coturn
from agentd.testing.fake_genesys import AGENT_USER_ID, LOGIN_CLIENT_ID, FakeGenesys, agent_refresh_token, default_scenario
from agentd.testing.fake_genesys.streaming import streaming_hub
from benchmarks._figures import load_average

SECRET = "bench-turn-rest-secret"


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.1f}" if abs(ms) < 10 else f"{ms:.0f}"


def spread(values: list[float], *, seconds: bool = True) -> str:
    """median / min / max, in ms (``values`` in seconds, or in ms with ``seconds=False``)."""
    scale = 1.0 if seconds else 0.001
    return " / ".join(_ms(v * scale) for v in (statistics.median(values), min(values), max(values))) + " ms"


def fresh_check(config: Path, env: dict[str, str]) -> dict:
    """One `agentd check` in a new process, on its own (no daemon): the report's rows by id."""
    done = subprocess.run(
        [sys.executable, "-m", "agentd", "check", "--no-daemon", "--json", "--only=stun", "--only=turn.udp", "--deadline", "20"],
        capture_output=True, text=True, timeout=90, env={**env, "AGENTD_CONFIG": str(config)},
    )
    rows = {c["id"]: c for c in json.loads(done.stdout)["checks"]}
    assert all(r["status"] == "pass" for r in rows.values()), [(r["id"], r["summary"]) for r in rows.values()]
    return rows


async def main(runs: int, process_runs: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="agentd-bench-ice-"))
    os.environ["AGENTD_STATE_DIR"] = str(folder / "state")
    os.environ["AGENTD_RUNTIME_DIR"] = str(folder / "run")
    from agentd.app import App
    from agentd_plugins.genesys.softphone import cache_path, softphone_offer
    from agentd_plugins.genesys.tokens import StoredLogin, TokenStore

    load_before = load_average()
    rows: list[tuple[str, str, str]] = []
    with Coturn.start(folder / "turn", listen_ip="127.0.0.1", second_ip="127.0.0.2", auth_secret=SECRET) as turn:
        async with FakeGenesys(default_scenario()) as fake:
            streaming_hub(fake).use_coturn(turn)
            for station in fake.state.stations.values():
                station["webRtcForceTurn"] = False  # the scenario's station forces TURN; measure the stun check too
            refresh = agent_refresh_token(fake.state, reused=True)  # every run (and process) uses the one stored login
            TokenStore().save(StoredLogin(refresh_token=refresh, client_id=LOGIN_CLIENT_ID, login_base=fake.url, user_id=AGENT_USER_ID))
            config = folder / "agentd.toml"
            config.write_text(
                f'[genesys]\napi_base_url = "{fake.url}"\nlogin_base_url = "{fake.url}"\nstreaming_base_url = "{fake.ws_url}"\n'
                f'client_id = "{LOGIN_CLIENT_ID}"\n[ice]\nca_file = "{turn.certs.ca}"\n'
            )
            app = App.load(config)
            settings = app.config.section("genesys")
            await softphone_offer(settings, refresh=True, timeout_s=5)  # warm: imports, the token, the connection pool

            cold, steps = [], {}
            for _ in range(runs):
                started = time.monotonic()
                offer = await softphone_offer(settings, refresh=True, timeout_s=5)
                cold.append(time.monotonic() - started)
                assert offer.usable and not offer.cached, offer
                for step, ms in (offer.details.get("timings_ms") or {}).items():
                    if ms is not None:
                        steps.setdefault(step, []).append(ms)
            warm = []
            for _ in range(runs):
                started = time.monotonic()
                offer = await softphone_offer(settings, refresh=False, timeout_s=5)
                warm.append(time.monotonic() - started)
                assert offer.cached
            order = ("users_me_ms", "channel_ms", "dns_ms", "tcp_ms", "upgrade_ms", "sasl_ms", "bind_ms", "extdisco_ms")
            breakdown = ", ".join(f"{k.removesuffix('_ms')} {statistics.median(steps[k]):.0f}" for k in order if k in steps)
            rows.append((f"discovery, cold (new channel), in the daemon's process, {runs} runs", spread(cold), "<= 1.5 s"))
            rows.append(("  cold, median per step (ms)", breakdown, ""))
            rows.append((f"discovery, cached list, {runs} runs", spread(warm), "<= 0.1 s"))

            pre_cold, pre_warm, added = [], [], []
            for _ in range(runs):
                cache_path().unlink(missing_ok=True)
                started = time.monotonic()
                report = await app.run_check("preshift", only=["stun", "turn.udp"], deadline_s=20)
                pre_cold.append(time.monotonic() - started)
                assert all(c.status.value == "pass" for c in report.checks), [(c.id, c.summary) for c in report.checks]
                assert report.check("stun").details["discovery"][0]["cached"] is False
                started = time.monotonic()
                report = await app.run_check("preshift", only=["stun", "turn.udp"], deadline_s=20)
                pre_warm.append(time.monotonic() - started)
                assert all(c.status.value == "pass" for c in report.checks)
                assert report.check("stun").details["discovery"][0]["cached"] is True
                added.append(pre_cold[-1] - pre_warm[-1])
            rows.append((f"pre-shift stun + turn.udp in that process, cold list, {runs} runs", spread(pre_cold), ""))
            rows.append((f"pre-shift stun + turn.udp in that process, cached list, {runs} runs", spread(pre_warm), ""))
            rows.append(("  what discovery adds to that pre-shift (cold - cached, per pair)", spread(added), "<= 1.5 s"))

            env = dict(os.environ)
            stun_cold, stun_warm, total = [], [], []
            for _ in range(process_runs):
                cache_path().unlink(missing_ok=True)
                first = await asyncio.to_thread(fresh_check, config, env)
                (found,) = first["stun"]["details"]["discovery"]
                assert found["cached"] is False and found["ok"], found
                stun_cold.append(first["stun"]["duration_ms"])
                total.append(found["timings_ms"]["total_ms"])
                second = await asyncio.to_thread(fresh_check, config, env)
                assert second["stun"]["details"]["discovery"][0]["cached"] is True
                stun_warm.append(second["stun"]["duration_ms"])
            rows.append((f"fresh `agentd check` process, discovery's own total (cold), {process_runs} runs", spread(total, seconds=False), "<= 1.5 s"))
            rows.append(("  its `stun` row, cold list (what the check waited for: discovery, the station lookup, the binding)", spread(stun_cold, seconds=False), ""))
            rows.append(("  its `stun` row, cached list (binding only)", spread(stun_warm, seconds=False), ""))
            hub = streaming_hub(fake)
            rows.append(("streaming channels left open after all runs", f"{len(hub.open_sockets())} of {hub.connections}", "0"))
    print(f"load average (1, 5, 15 min) before: {load_before}; after: {load_average()}; {os.cpu_count()} CPUs\n")
    print("| measurement | median / min / max | target |\n|---|---|---|")
    for name, value, target in rows:
        print(f"| {name} | {value} | {target} |")


if __name__ == "__main__":
    from agentd import logs

    logs.configure("warning")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each in-process measurement (default 20)")
    parser.add_argument("--process-runs", type=int, default=None, help="fresh `agentd check` processes, cold and cached each (default: --runs)")
    options = parser.parse_args()
    asyncio.run(main(max(1, options.runs), max(1, options.process_runs if options.process_runs is not None else options.runs)))
