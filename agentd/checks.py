"""What a plugin hands the core to probe: checks, their outcome, and the context they run in."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping

import structlog

from agentd.model import CheckResult, Status

if TYPE_CHECKING:
    from agentd.config import Config

PROFILES = ("preshift", "full", "incident")
"""``preshift``: local probes only, fast. ``full``: every check. ``incident``: a conversation too."""


@dataclass(frozen=True)
class Plan:
    """What one run is asked to do; handed to ``agentd_collect_checks``."""

    profile: str
    config: Config
    conversation_id: str | None = None
    only: frozenset[str] = frozenset()
    """When not empty, run only checks with these ids."""
    plugins: Any = field(default=None, compare=False, repr=False)
    """The run's :class:`agentd.plugin.PluginManager`, for checks that ask other plugins
    through a hook (the ICE checks ask ``agentd_ice_servers``); None outside an App."""


@dataclass(frozen=True)
class Outcome:
    """What a check's ``run`` returns; the runner adds id, timing and title."""

    status: Status
    summary: str
    metrics: Mapping[str, float | int | None] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def passed(cls, summary: str, **kw: Any) -> Outcome:
        return cls(Status.PASS, summary, **kw)

    @classmethod
    def warned(cls, summary: str, **kw: Any) -> Outcome:
        return cls(Status.WARN, summary, **kw)

    @classmethod
    def failed(cls, summary: str, **kw: Any) -> Outcome:
        return cls(Status.FAIL, summary, **kw)

    @classmethod
    def skipped(cls, summary: str, **kw: Any) -> Outcome:
        return cls(Status.SKIP, summary, **kw)


CheckFunction = Callable[["CheckContext"], Awaitable[Outcome]]


@dataclass(frozen=True)
class Check:
    """A local probe: an id from DESIGN.md's list (or a plugin's own), and an async ``run``.

    ``timeout_s`` is the check's own deadline; the runner ends it there with status
    ``error`` ("timed out after N s"). The run's overall deadline can end it earlier.
    """

    id: str
    title: str
    run: CheckFunction
    timeout_s: float = 5.0
    profiles: frozenset[str] = frozenset({"preshift", "full", "incident"})
    order: int = 100
    """Display order in the report, lower first. Built-ins follow the path outwards:
    dns 10, https 20, websocket 30, stun 40, nat 45, turn.* 50-52, udp.ports 60,
    media.path 70, host 90."""


class CheckContext:
    """Handed to every check of one run.

    - ``config``: the effective configuration (``config.section(name)``).
    - ``memo(key, factory)``: run ``factory()`` once per run and share its result, so two
      checks that need the same STUN binding do not send it twice.
    - ``result_of(check_id)``: wait for another check of the same run (None if it is not
      planned). Bounded by the caller's own deadline.
    - ``note(text)``: a short progress line for the live display.
    """

    def __init__(
        self,
        *,
        plan: Plan,
        check_id: str,
        shared: dict[str, asyncio.Future],
        results: Mapping[str, asyncio.Future],
        on_note: Callable[[str, str], None] | None = None,
    ) -> None:
        self.plan = plan
        self.config = plan.config
        self.check_id = check_id
        self.log = structlog.get_logger("agentd.check").bind(check=check_id)
        self._shared = shared
        self._results = results
        self._on_note = on_note

    def section(self, name: str) -> Any:
        return self.config.section(name)

    def note(self, text: str) -> None:
        if self._on_note:
            self._on_note(self.check_id, text)

    async def memo(self, key: str, factory: Callable[[], Awaitable[Any]]) -> Any:
        future = self._shared.get(key)
        if future is None:
            future = asyncio.ensure_future(factory())
            self._shared[key] = future
        # shield: one waiting check timing out must not cancel the shared work for the others
        return await asyncio.shield(future)

    async def result_of(self, check_id: str) -> CheckResult | None:
        future = self._results.get(check_id)
        if future is None:
            return None
        return await asyncio.shield(future)
