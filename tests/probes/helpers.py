"""Helpers of the probe tests: run the real checks in-process or through the CLI, and read the report."""

from __future__ import annotations

import json
from pathlib import Path

from agentd.app import App
from agentd.model import Report
from agentd.testing.invariants import assert_every_bad_check_explained
from tests.conftest import OFFLINE_GENESYS

MEDIA_CHECKS = ("stun", "nat", "turn.udp", "turn.tcp", "turn.tls", "udp.ports")


def config_text(ice_toml: str = "", extra: str = "") -> str:
    return OFFLINE_GENESYS + "\n" + ice_toml + "\n" + extra


async def run_checks(config_file: Path, *only: str, profile: str = "preshift", unexplained_ok: tuple[str, ...] = ()) -> dict:
    """Run the given checks of ``profile`` in this process; {check id: CheckResult}, plus the report.

    Every run also holds the invariant: a check that did not pass is in a verdict naming a
    cause (``unexplained_ok``: checks no rule can explain in that scenario)."""
    app = App.load(config_file)
    report: Report = await app.run_check(profile, only=only or MEDIA_CHECKS)
    assert_every_bad_check_explained(report, unexplained_ok=unexplained_ok)
    found = {c.id: c for c in report.checks}
    found["_report"] = report
    return found


def report_of(stdout: str) -> dict:
    return json.loads(stdout)


def checks_of(report: dict) -> dict:
    return {c["id"]: c for c in report["checks"]}
