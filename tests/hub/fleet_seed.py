"""A large fleet written straight through the hub's store tables, for the fleet page's
tests and benchmark: thousands of enrolled PCs, each with a real ``agentd.report/1`` body
as its latest report, spread over sites, some not ready, some stale. Deterministic for a
given seed. Nothing leaves the database: the addresses are from 198.18.0.0/15 (RFC 2544,
benchmarking) and are only written, never contacted."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from agentd.model import AgentInfo, CheckResult, Report, Severity, Status, Verdict, isoformat

VERDICTS = (
    ("network.firewall_udp_blocked", "turn.udp", "UDP to the media edge is blocked while TCP/TLS work: calls relay over TCP"),
    ("config.turn_auth_failed", "turn.tcp", "TURN answered 401: the configured credentials are wrong"),
    ("network.isp_congestion", "media.path", "loss rises with RTT above 150 ms on the agent's path: the ISP is congested"),
    ("host.resource_exhaustion", "host", "the PC is short of memory: audio drops while the network is clean"),
)


@dataclass(frozen=True)
class SeededFleet:
    install_ids: tuple[str, ...]
    not_ready: frozenset[str]
    stale: frozenset[str]
    sites: tuple[str, ...]


def _report(install_id: str, hostname: str, user: str, created: float, *, failing: tuple[str, str, str] | None, profile: str) -> Report:
    from datetime import datetime, timezone

    checks = [CheckResult(id="dns", status=Status.PASS, summary="resolved in 4 ms", metrics={"rtt_ms": 4.0}),
              CheckResult(id="https", status=Status.PASS, summary="api reachable in 80 ms", metrics={"rtt_ms": 80.0})]
    verdicts: tuple[Verdict, ...] = ()
    if failing:
        code, check_id, sentence = failing
        checks.append(CheckResult(id=check_id, status=Status.FAIL, summary=sentence[:60]))
        verdicts = (Verdict(code, Severity.CRITICAL, 0.9, sentence, evidence=(f"check:{check_id}",)),)
    else:
        checks.append(CheckResult(id="turn.udp", status=Status.PASS, summary="relay allocated in 30 ms", metrics={"rtt_ms": 30.0}))
    stamp = isoformat(datetime.fromtimestamp(created, timezone.utc))
    report_id = f"{datetime.fromtimestamp(created, timezone.utc):%Y%m%dT%H%M%SZ}-{install_id[-8:]}"
    return Report(id=report_id, created=stamp, profile=profile,
                  agent=AgentInfo(hostname=hostname, install_id=install_id, version="0.1.0", platform="Linux", python="3.11", user=user),
                  checks=tuple(checks), verdicts=verdicts)


async def seed_fleet(store: Any, pcs: int, *, sites: int = 20, not_ready_share: float = 0.07, stale_share: float = 0.05,
                     seed: int = 23, now: float | None = None) -> SeededFleet:
    """Write ``pcs`` PCs and one latest report each; returns what was written."""
    from agentd.hub.db import pcs as pcs_table, reports as reports_table
    from agentd.hub.store import status_values, summarize

    rng = random.Random(seed)
    now = time.time() if now is None else now
    pc_rows: list[dict[str, Any]] = []
    report_rows: list[dict[str, Any]] = []
    ids, not_ready, stale = [], set(), set()
    for i in range(pcs):
        site = i % sites
        install_id = f"agentd-seed-{i:06d}"
        hostname = f"desk-s{site:02d}-{i:05d}"
        user = f"agent.{i:05d}"
        address = f"198.18.{site}.{(i // sites) % 250 + 1}"
        roll = rng.random()
        failing = VERDICTS[i % len(VERDICTS)] if roll < not_ready_share else None
        old = not failing and roll < not_ready_share + stale_share
        created = now - (8 * 86400 + rng.random() * 3600 if old else rng.random() * 6 * 3600)
        report = _report(install_id, hostname, user, created, failing=failing, profile="preshift" if i % 5 else "full")
        row = summarize(report)
        report_rows.append({"id": report.id, "install_id": install_id, "created": report.created, "received": created,
                            "body": report.to_json(), "public_ip": address, **row})
        pc_rows.append({"install_id": install_id, "token_id": f"seed{i:012x}", "token_hash": "-", "enroll_key_id": "seed",
                        "hostname": hostname, "agent_user": user, "enrolled": now - 30 * 86400, "last_seen": created + 60,
                        "public_ip": address, "last_report_id": report.id,
                        "last_preshift_id": report.id if report.profile == "preshift" else None,
                        **status_values(row, report, row["created_ts"], address)})
        ids.append(install_id)
        if failing:
            not_ready.add(install_id)
        elif old:
            stale.add(install_id)
    async with store.engine.begin() as conn:
        for start in range(0, pcs, 1000):
            await conn.execute(pcs_table.insert(), pc_rows[start:start + 1000])
            await conn.execute(reports_table.insert(), report_rows[start:start + 1000])
    return SeededFleet(tuple(ids), frozenset(not_ready), frozenset(stale), tuple(f"198.18.{s}.0/24" for s in range(sites)))
