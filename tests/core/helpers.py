"""Small in-process plugins for core tests."""

from __future__ import annotations

import asyncio

from agentd import hookimpl
from agentd.checks import Check, Outcome


class ChecksPlugin:
    """Contributes the given checks to every run."""

    def __init__(self, *checks: Check) -> None:
        self.checks = checks

    @hookimpl
    def agentd_collect_checks(self, plan):
        return list(self.checks)


async def passing(ctx):
    return Outcome.passed("all good", metrics={"rtt_ms": 1.5})


async def hanging(ctx):
    await asyncio.sleep(3600)
    return Outcome.passed("never")


async def raising(ctx):
    raise RuntimeError("the probe broke")
