"""Run planned checks concurrently, each under its own deadline and all under one overall.

A check that hangs ends as ``error`` "timed out after N s"; one that raises ends as
``error`` with its message; the others still complete. When the overall deadline comes,
whatever still runs is cancelled and ends as ``error`` naming that deadline. The runner
never waits on a check past the overall deadline plus a short grace for clean-up.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import structlog

from agentd.checks import Check, CheckContext, Outcome, Plan
from agentd.errors import ConfigError, ProbeError
from agentd.model import CheckResult, Status, isoformat, utcnow
from agentd.redact import redact_text

log = structlog.get_logger("agentd.runner")

CANCEL_GRACE_S = 0.5
"""How long a cancelled check may take to clean up (close sockets, release allocations)."""


@dataclass(frozen=True)
class CheckStarted:
    check_id: str
    title: str


@dataclass(frozen=True)
class CheckNote:
    check_id: str
    text: str


@dataclass(frozen=True)
class CheckFinished:
    result: CheckResult


RunnerEvent = CheckStarted | CheckNote | CheckFinished
EventCallback = Callable[[RunnerEvent], None]


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds:g}"


async def run_checks(
    checks: Sequence[Check],
    plan: Plan,
    *,
    deadline_s: float,
    on_event: EventCallback | None = None,
) -> list[CheckResult]:
    """Run ``checks`` and return one result per check, in the order given."""
    emit = on_event or (lambda event: None)
    loop = asyncio.get_running_loop()
    shared: dict[str, asyncio.Future] = {}
    results: dict[str, asyncio.Future] = {c.id: loop.create_future() for c in checks}
    started_at: dict[str, float] = {}

    def note(check_id: str, text: str) -> None:
        emit(CheckNote(check_id, text))

    async def one(check: Check) -> CheckResult:
        ctx = CheckContext(plan=plan, check_id=check.id, shared=shared, results=results, on_note=note)
        started = time.monotonic()
        started_at[check.id] = started
        stamp = isoformat(utcnow())
        emit(CheckStarted(check.id, check.title))
        try:
            async with asyncio.timeout(check.timeout_s):
                outcome = await check.run(ctx)
            if not isinstance(outcome, Outcome):
                raise TypeError(f"check returned {type(outcome).__name__}, not an Outcome")
            result = _result(check, outcome, started, stamp)
        except TimeoutError:
            result = _error(check, f"timed out after {_fmt_seconds(check.timeout_s)} s", started, stamp)
        except ProbeError as exc:
            result = CheckResult(
                id=check.id,
                title=check.title,
                status=Status.ERROR,
                summary=redact_text(str(exc)),
                duration_ms=_ms(started),
                started=stamp,
                details={"reason": exc.reason, **exc.details},
            )
        except ConfigError as exc:  # the configuration or environment (an unusable SSL_CERT_FILE): said, no traceback
            result = CheckResult(id=check.id, title=check.title, status=Status.ERROR, summary=redact_text(str(exc)),
                                 duration_ms=_ms(started), started=stamp, details={"reason": "configuration"})
        except asyncio.CancelledError:
            result = _error(
                check, f"not finished within the overall deadline of {_fmt_seconds(deadline_s)} s", started, stamp
            )
            _settle(results[check.id], result)
            emit(CheckFinished(result))
            raise
        except Exception as exc:  # a check's bug or an unexpected failure: its own row
            log.warning("check raised", check=check.id, error=repr(exc), exc_info=True)
            result = _error(check, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, started, stamp)
        _settle(results[check.id], result)
        emit(CheckFinished(result))
        return result

    tasks = {check.id: asyncio.create_task(one(check), name=f"check:{check.id}") for check in checks}
    if tasks:
        done, pending = await asyncio.wait(tasks.values(), timeout=deadline_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=CANCEL_GRACE_S)
    out: list[CheckResult] = []
    for check in checks:
        future = results[check.id]
        if future.done() and not future.cancelled():
            out.append(future.result())
        else:  # ignored its cancellation: report it and leave it behind
            started = started_at.get(check.id, time.monotonic())
            result = _error(
                check,
                f"not finished within the overall deadline of {_fmt_seconds(deadline_s)} s",
                started,
                None,
            )
            emit(CheckFinished(result))
            out.append(result)
    for future in shared.values():
        if not future.done():
            future.cancel()
    return out


def _settle(future: asyncio.Future, result: CheckResult) -> None:
    if not future.done():
        future.set_result(result)


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000.0, 1)


def _result(check: Check, outcome: Outcome, started: float, stamp: str) -> CheckResult:
    return CheckResult(
        id=check.id,
        title=check.title,
        status=Status(outcome.status),
        summary=redact_text(outcome.summary),
        duration_ms=_ms(started),
        started=stamp,
        metrics=dict(outcome.metrics),
        details=dict(outcome.details),
    )


def _error(check: Check, summary: str, started: float, stamp: str | None) -> CheckResult:
    return CheckResult(
        id=check.id,
        title=check.title,
        status=Status.ERROR,
        summary=redact_text(summary),
        duration_ms=_ms(started),
        started=stamp,
    )
