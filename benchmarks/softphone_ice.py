"""Issue-10 benchmark: what fetching the softphone's own STUN/TURN servers costs a pre-shift.

    .venv/bin/python -m benchmarks.softphone_ice            # defaults: 10 runs each
    .venv/bin/python -m benchmarks.softphone_ice --help

Against the fake Genesys Cloud on loopback (REST, and the streaming channel: WebSocket,
SASL PLAIN, bind, XEP-0215 extdisco) handing out a real coturn with TURN REST credentials.
Prints one markdown table:

- discovery cold (no cached list: users/me, a streaming channel, connect, SASL, bind, the
  two extdisco IQs, close), in a loaded process: median and max of ``--runs``, and the
  median of each step;
- discovery cached (the owner-only list in the state folder): median and max;
- a pre-shift run of ``stun`` + ``turn.udp`` against those servers, cold and cached: the
  difference is what discovery adds to a pre-shift.

Targets (issue 10): cold <= 1.5 s, cached <= 0.1 s. Nothing but 127.0.0.1/127.0.0.2 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from agentd.testing.coturn import Coturn
from agentd.testing.fake_genesys import AGENT_USER_ID, LOGIN_CLIENT_ID, FakeGenesys, TokenGrant, default_scenario
from agentd.testing.fake_genesys.streaming import streaming_hub

SECRET = "bench-turn-rest-secret"


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def _median(values: list[float]) -> str:
    return _ms(statistics.median(values))


async def main(runs: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="agentd-bench-ice-"))
    os.environ["AGENTD_STATE_DIR"] = str(folder / "state")
    os.environ["AGENTD_RUNTIME_DIR"] = str(folder / "run")
    from agentd.app import App
    from agentd_plugins.genesys.softphone import cache_path, softphone_offer
    from agentd_plugins.genesys.tokens import StoredLogin, TokenStore

    rows: list[tuple[str, str, str]] = []
    with Coturn.start(folder / "turn", listen_ip="127.0.0.1", second_ip="127.0.0.2", auth_secret=SECRET) as turn:
        async with FakeGenesys(default_scenario()) as fake:
            streaming_hub(fake).use_coturn(turn)
            for station in fake.state.stations.values():
                station["webRtcForceTurn"] = False  # the scenario's station forces TURN; measure the stun check too
            fake.state.rotate_refresh_tokens = False
            login = fake.state.clients[LOGIN_CLIENT_ID]
            grant = TokenGrant(LOGIN_CLIENT_ID, AGENT_USER_ID, login.scopes, login.permissions, time.time() + 86400, "authorization_code")
            refresh = fake.state.issue_refresh_token(grant)
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
            rows.append(("discovery, cold (new channel), median / max", f"{_median(cold)} / {_ms(max(cold))}", "<= 1.5 s"))
            rows.append(("  cold, median per step (ms)", breakdown, ""))
            rows.append(("discovery, cached list, median / max", f"{_median(warm)} / {_ms(max(warm))}", "<= 0.1 s"))

            pre_cold, pre_warm = [], []
            for _ in range(max(3, runs // 2)):
                cache_path().unlink(missing_ok=True)
                started = time.monotonic()
                report = await app.run_check("preshift", only=["stun", "turn.udp"], deadline_s=20)
                pre_cold.append(time.monotonic() - started)
                assert all(c.status.value == "pass" for c in report.checks), [(c.id, c.summary) for c in report.checks]
                started = time.monotonic()
                report = await app.run_check("preshift", only=["stun", "turn.udp"], deadline_s=20)
                pre_warm.append(time.monotonic() - started)
                assert all(c.status.value == "pass" for c in report.checks)
            rows.append(("pre-shift stun + turn.udp, cold list, median", _median(pre_cold), ""))
            rows.append(("pre-shift stun + turn.udp, cached list, median", _median(pre_warm), ""))
            added = (statistics.median(pre_cold) - statistics.median(pre_warm)) * 1000
            rows.append(("  what discovery adds to a pre-shift (difference of medians)", f"{added:.0f} ms", ""))
            hub = streaming_hub(fake)
            rows.append(("streaming channels left open after all runs", f"{len(hub.open_sockets())} of {hub.connections}", "0"))
    print("| measurement | result | target |\n|---|---|---|")
    for name, value, target in rows:
        print(f"| {name} | {value} | {target} |")


if __name__ == "__main__":
    from agentd import logs

    logs.configure("warning")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="runs of each measurement (default 10)")
    options = parser.parse_args()
    asyncio.run(main(max(1, options.runs)))
