"""Server-side evidence: what a source is, and what it is asked for."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, Protocol, Sequence, runtime_checkable

from agentd.model import Evidence

if TYPE_CHECKING:
    from agentd.config import Config


@dataclass(frozen=True)
class EvidenceRequest:
    """What one run wants evidence about; handed to ``agentd_collect_evidence``.

    ``conversation_id`` is set in incident mode. ``window`` bounds the time of interest
    when known. ``options`` carries command-line extras (``diagnostics_file``, ...).
    """

    config: Config
    profile: str
    conversation_id: str | None = None
    window: tuple[datetime, datetime] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    _shared: dict[str, asyncio.Future] = field(default_factory=dict, repr=False, compare=False)

    async def memo(self, key: str, factory: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``factory()`` once per request and share its result between sources
        (for example: the conversation that several sources start from)."""
        future = self._shared.get(key)
        if future is None:
            future = asyncio.ensure_future(factory())
            self._shared[key] = future
        return await asyncio.shield(future)


@runtime_checkable
class EvidenceSource(Protocol):
    """One source of evidence. ``collect`` runs under ``timeout_s``; a source that fails
    becomes an ``error`` evidence item, and the other sources still run."""

    name: str
    timeout_s: float

    async def collect(self, request: EvidenceRequest) -> Sequence[Evidence]: ...
