"""Issue-5 benchmark: WebSocket probing, mute and the notifications monitor, all on loopback.

    .venv/bin/python -m benchmarks.signaling            # defaults: 20 rounds each
    .venv/bin/python -m benchmarks.signaling --rounds 50

Prints one markdown table:

- ``probe_target`` against a healthy websockets server on 127.0.0.1: opening time and
  protocol ping round trip (median, p95 over the rounds' pings);
- ``ws-probe``'s loop (``run_probe``) pinging as fast as it can for 2 s: pings per second
  and CPU time per ping;
- ``agentd mute toggle`` in-process against the fake Genesys Cloud: time from the start to
  the confirming notification (median, max);
- the notifications monitor: time from ``v2.system.socket_closing`` to connected,
  resubscribed and re-read again (median, max); call events applied per second, and the
  memory its event log holds after 20,000 events (it keeps the last 1,000).

Every server is started here, on 127.0.0.1; nothing else is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import tracemalloc

from websockets.asyncio.server import serve

from agentd import logs
from agentd.config import Secret
from agentd.testing.fake_genesys import AGENT_USER_ID, LOGIN_CLIENT_ID, FakeGenesys, TokenGrant, default_scenario
from agentd.testing.fake_genesys.notifications import add_live_call, hub_of
from agentd_plugins.genesys.client import GenesysClient
from agentd_plugins.genesys.settings import GenesysSettings
from agentd_plugins.mute import change_mute
from agentd_plugins.notifications.calls import AgentCall
from agentd_plugins.notifications.monitor import MonitorSettings, NotificationsMonitor
from agentd_plugins.websocket.probe import ProbePlan, probe_target, summarize_rtts
from agentd_plugins.websocket.wsprobe import run_probe


async def echo(connection) -> None:
    async for message in connection:
        await connection.send(message)


def agent_client(fake: FakeGenesys) -> GenesysClient:
    fake.state.rotate_refresh_tokens = False
    client = fake.state.clients[LOGIN_CLIENT_ID]
    grant = TokenGrant(LOGIN_CLIENT_ID, AGENT_USER_ID, client.scopes, client.permissions, time.time() + 86400, "authorization_code")
    token = fake.state.issue_refresh_token(grant)
    settings = GenesysSettings(api_base_url=fake.url, login_base_url=fake.url, client_id=LOGIN_CLIENT_ID, auth="login", refresh_token=Secret(token), user_id=AGENT_USER_ID)
    return GenesysClient(settings)


def ms(values: list[float]) -> str:
    stats = summarize_rtts(values)
    return f"median {stats['median']:.2f} ms, p95 {stats['p95']:.2f} ms, max {stats['max']:.2f} ms"


async def main(rounds: int) -> None:
    rows: list[tuple[str, str]] = []
    async with serve(echo, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        opens, rtts = [], []
        for _ in range(rounds):
            row = await probe_target(url, ProbePlan(ping_count=5, ping_interval_s=0.0))
            opens.append(row["connect_ms"])
            rtts.extend(row["ping_rtts_ms"])
        rows.append((f"websocket check, one target: opening ({rounds} runs)", ms(opens)))
        rows.append((f"websocket check: protocol ping round trip ({len(rtts)} pings)", ms(rtts)))
        cpu0 = time.process_time()
        summary = await run_probe(url, duration_s=2.0, interval_s=0.0, out=lambda line: None)
        cpu = time.process_time() - cpu0
        rows.append(("ws-probe loop, no pause, 2 s", f"{summary.pings_sent / 2.0:.0f} pings/s, {cpu / max(1, summary.pings_sent) * 1e6:.0f} µs CPU per ping (incl. the server in this process)"))

    async with FakeGenesys(default_scenario()) as fake:
        hub = hub_of(fake)
        add_live_call(fake.state)
        async with agent_client(fake) as client:
            times = []
            for _ in range(rounds):
                result = await change_mute(client, "toggle", conversation_id=None, timeout_s=10)
                assert result.confirmed_by == "notification", result
                times.append(result.elapsed_ms)
            rows.append((f"mute toggle, confirmed by the notification ({rounds} runs)", ms(times)))

            monitor = NotificationsMonitor(client, settings=MonitorSettings(backoff_initial_s=0.01, backoff_min_s=0.05, renew_before_expiry_s=0))
            task = asyncio.create_task(monitor.run())
            assert await monitor.wait_for(lambda m: m.connected.is_set(), 10)
            reconnects = []
            for n in range(1, rounds + 1):
                started = time.monotonic()
                await hub.socket_closing(close_after_s=0.0)
                assert await monitor.wait_for(lambda m, n=n: m.reconnects == n and m.connected.is_set() and m.resyncs == n + 1, 10)
                reconnects.append((time.monotonic() - started) * 1000)
            rows.append((f"monitor: socket_closing -> reconnected, resubscribed, re-read ({rounds} runs)", ms(reconnects)))
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        offline = NotificationsMonitor(client)
        tracemalloc.start()
        started = time.perf_counter()
        count = 20_000
        for i in range(count):
            offline.apply(AgentCall(f"c{i % 50}", "p", "connected", bool((i // 50) % 2)), "event")
        elapsed = time.perf_counter() - started
        current, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rows.append(("monitor: call events applied (mute flips on 50 calls)", f"{count / elapsed:,.0f} events/s; event log {len(offline.events)} entries, {current / 1024:.0f} KiB traced"))

    print("| measurement | result |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="runs of each measurement (default 20)")
    args = parser.parse_args()
    logs.configure("warning")  # as the daemon runs: info lines are not rendered
    asyncio.run(main(args.rounds))
