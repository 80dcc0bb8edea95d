"""The check runner: per-check deadlines, failures kept to their own row, the overall deadline."""

from __future__ import annotations

import asyncio
import time

from agentd.checks import Check, Outcome, Plan
from agentd.config import CORE_SECTION, build
from agentd.errors import ProbeError
from agentd.model import Status
from agentd.runner import CheckFinished, CheckStarted, run_checks

from .helpers import hanging, passing, raising


def _plan(profile: str = "preshift") -> Plan:
    return Plan(profile=profile, config=build({}, [CORE_SECTION], path=None))


async def test_hanging_and_raising_checks_do_not_stop_the_others():
    checks = [
        Check("slow.ok", "a check that takes a moment", _sleeps_then_passes(0.2), timeout_s=5),
        Check("hangs", "never returns", hanging, timeout_s=0.5),
        Check("raises", "raises", raising, timeout_s=5),
        Check("ok", "passes", passing, timeout_s=5),
    ]
    started = time.monotonic()
    results = await run_checks(checks, _plan(), deadline_s=60)
    elapsed = time.monotonic() - started

    by_id = {r.id: r for r in results}
    assert [r.id for r in results] == ["slow.ok", "hangs", "raises", "ok"]
    assert by_id["hangs"].status is Status.ERROR
    assert by_id["hangs"].summary == "timed out after 0.5 s"
    assert by_id["raises"].status is Status.ERROR
    assert "the probe broke" in by_id["raises"].summary
    assert by_id["ok"].status is Status.PASS and by_id["ok"].metrics == {"rtt_ms": 1.5}
    assert by_id["slow.ok"].status is Status.PASS
    # its own 0.5 s, not the run's 60 s (the bound is loose: a loaded machine took 4 s once)
    assert elapsed < 20.0, "the hanging check must cost its own deadline, not the run's"


async def test_overall_deadline_holds_even_when_per_check_deadlines_are_longer():
    checks = [
        Check("hangs.a", "hangs", hanging, timeout_s=60),
        Check("hangs.b", "hangs", hanging, timeout_s=60),
        Check("ok", "passes", passing, timeout_s=60),
    ]
    started = time.monotonic()
    results = await run_checks(checks, _plan(), deadline_s=0.6)
    elapsed = time.monotonic() - started
    assert elapsed < 0.6 + 0.5 + 0.3  # deadline + cancel grace + slack
    by_id = {r.id: r for r in results}
    assert by_id["ok"].status is Status.PASS
    for cid in ("hangs.a", "hangs.b"):
        assert by_id[cid].status is Status.ERROR
        assert "overall deadline of 0.6 s" in by_id[cid].summary


async def test_a_check_that_ignores_cancellation_is_left_behind_not_waited_for():
    async def stubborn(ctx):
        until = time.monotonic() + 2.0  # misbehaves on purpose, but boundedly
        while time.monotonic() < until:
            try:
                await asyncio.sleep(0.2)
            except asyncio.CancelledError:
                continue
        return Outcome.passed("late")

    started = time.monotonic()
    results = await run_checks([Check("stubborn", "ignores cancel", stubborn, timeout_s=60)], _plan(), deadline_s=0.3)
    assert time.monotonic() - started < 1.5
    assert results[0].status is Status.ERROR
    assert "overall deadline" in results[0].summary


async def test_probe_error_keeps_its_reason_and_details():
    async def refused(ctx):
        raise ProbeError("turn.example:3478 refused the connection", reason="refused", details={"server": "turn.example"})

    (result,) = await run_checks([Check("x", "x", refused)], _plan(), deadline_s=5)
    assert result.status is Status.ERROR
    assert result.summary == "turn.example:3478 refused the connection"
    assert result.details == {"reason": "refused", "server": "turn.example"}


async def test_a_check_returning_the_wrong_type_is_an_error_row():
    async def wrong(ctx):
        return {"status": "pass"}

    (result,) = await run_checks([Check("wrong", "wrong", wrong)], _plan(), deadline_s=5)
    assert result.status is Status.ERROR
    assert "not an Outcome" in result.summary


async def test_memo_runs_shared_work_once_and_result_of_waits_for_another_check():
    calls = []

    async def binding():
        calls.append(1)
        await asyncio.sleep(0.05)
        return "198.51.100.7:40000"

    async def first(ctx):
        return Outcome.passed(await ctx.memo("stun:binding", binding))

    async def second(ctx):
        mapped = await ctx.memo("stun:binding", binding)
        other = await ctx.result_of("first")
        return Outcome.passed(f"{mapped} / first said {other.summary}")

    results = await run_checks([Check("first", "f", first), Check("second", "s", second)], _plan(), deadline_s=5)
    assert calls == [1]
    assert results[1].summary == "198.51.100.7:40000 / first said 198.51.100.7:40000"


async def test_events_report_every_start_and_finish():
    events = []
    await run_checks(
        [Check("ok", "passes", passing), Check("raises", "raises", raising)], _plan(), deadline_s=5, on_event=events.append
    )
    started = {e.check_id for e in events if isinstance(e, CheckStarted)}
    finished = {e.result.id: e.result.status for e in events if isinstance(e, CheckFinished)}
    assert started == {"ok", "raises"}
    assert finished == {"ok": Status.PASS, "raises": Status.ERROR}


def _sleeps_then_passes(seconds: float):
    async def run(ctx):
        await asyncio.sleep(seconds)
        return Outcome.passed(f"slept {seconds}")

    return run
