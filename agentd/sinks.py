"""Where reports go after the local spool."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from agentd.model import Report


@runtime_checkable
class Sink(Protocol):
    """A destination for reports. ``deliver`` returns when the destination holds the
    report, and raises :class:`agentd.errors.DeliveryError` otherwise. It may be called
    again for the same report (after a crash): sinks key on ``report.id``."""

    name: str

    async def deliver(self, report: Report, payload: bytes) -> None: ...


RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
"""HTTP answers that say "not now": the report is offered again (after a backoff)."""

SINK_STATUSES = frozenset({401, 403, 404, 405, 407, 421, 426})
"""HTTP answers about the destination, not the report (a wrong token, URL or proxy): the
report waits in the spool until the configuration is fixed."""


def refused_for_good(status: int, *, about_the_sink: frozenset[int] = SINK_STATUSES) -> bool:
    """Whether an HTTP answer refuses *the report itself* for good: any other 4xx (400,
    413 too large, 415, 422, ...). Offering it again cannot help: the spool moves it aside."""
    return 400 <= status < 500 and status not in RETRY_STATUSES and status not in about_the_sink and status != 409
