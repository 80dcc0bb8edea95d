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
