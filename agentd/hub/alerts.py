"""Alerts that reach people: rules over the fleet, judged once a window, sent through
apprise (one library for webhooks, Slack, Teams, e-mail and more: every ``[alerts] urls``
entry is an apprise URL, a secret reference when it carries a token or password).

A rule's condition is judged every ``window_s``; an alert fires when it held in at least
``windows`` of the last ``of_last`` windows, is sent once, and not again for the same
subject within ``suppress_s``; when it stops holding, a clear is sent (``notify_clear``).
In quiet hours nothing is sent: what still holds afterwards is sent then. Every message
links to the hub page that explains it.

Sending never blocks the hub: messages go on a bounded queue that one task drains, each
receiver on its own (a receiver that is down is retried with backoff, the others still
get theirs), with apprise's blocking work in a thread.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Sequence
from urllib.parse import quote, urlencode

import structlog

log = structlog.get_logger("agentd.hub.alerts")

KINDS = ("site_outage", "site_not_ready", "pc_not_ready")


@dataclass(frozen=True)
class Rule:
    kind: str
    windows: int = 1
    of_last: int = 1
    min_pcs: int = 3
    min_share: float = 0.0


@dataclass(frozen=True)
class AlertConfig:
    urls: tuple[str, ...]
    rules: tuple[Rule, ...]
    window_s: float = 300.0
    suppress_s: float = 3600.0
    notify_clear: bool = True
    quiet_hours: tuple[int, int] | None = None
    """(start minute, end minute) of the day in UTC; may wrap past midnight."""
    retry_s: float = 5.0
    max_retry_s: float = 300.0
    send_timeout_s: float = 20.0


@dataclass(frozen=True)
class Condition:
    """One subject a rule found true in this window."""

    key: str
    title: str
    body: str
    path: str


@dataclass
class _State:
    seen: deque = field(default_factory=deque)
    firing: bool = False
    last_sent: float = float("-inf")
    last: Condition | None = None


def parse_quiet_hours(text: str | None) -> tuple[int, int] | None:
    """``"22:00-06:00"`` (UTC) -> minutes; ValueError names the problem."""
    if not text:
        return None
    try:
        start, end = (part.strip() for part in text.split("-"))
        minutes = []
        for part in (start, end):
            hours, mins = part.split(":")
            if not (0 <= int(hours) < 24 and 0 <= int(mins) < 60):
                raise ValueError
            minutes.append(int(hours) * 60 + int(mins))
    except ValueError:
        raise ValueError(f"quiet_hours must be HH:MM-HH:MM in UTC, like 22:00-06:00, not {text[:40]!r}") from None
    return minutes[0], minutes[1]


def in_quiet_hours(quiet: tuple[int, int] | None, now: float) -> bool:
    if quiet is None:
        return False
    moment = datetime.fromtimestamp(now, timezone.utc)
    minute = moment.hour * 60 + moment.minute
    start, end = quiet
    return start <= minute < end if start <= end else (minute >= start or minute < end)


def conditions(rule: Rule, site_verdicts: Sequence[Any], site_counts: Sequence[dict[str, Any]],
               not_ready: Sequence[dict[str, Any]] = ()) -> list[Condition]:
    """What a rule finds true now (site verdicts from the fleet rules, per-site counts, the
    PCs whose latest pre-shift check says not ready)."""
    found = []
    if rule.kind == "pc_not_ready":
        for pc in not_ready:
            name = pc.get("hostname") or pc["install_id"]
            why = pc.get("top_verdict") or "a check failed"
            found.append(Condition(f"pc_not_ready:{pc['install_id']}", f"{name} is not ready for its shift ({why})",
                                   f"The pre-shift check of {name} (agent {pc.get('agent_user') or '-'}) says not ready: {why}.",
                                   f"/pcs/{quote(pc['install_id'], safe='')}"))
    if rule.kind == "site_outage":
        for v in site_verdicts:
            if v.code == "network.site_outage" and len(v.install_ids) >= rule.min_pcs:
                found.append(Condition(f"site_outage:{v.scope}", f"Site outage at {v.scope}: {', '.join(v.check_ids)}",
                                       f"{v.summary}. Next: {v.next_step}.", "/?" + urlencode({"site": v.scope})))
    elif rule.kind == "site_not_ready":
        for s in site_counts:
            if s["site"] != "-" and s["not_ready"] >= rule.min_pcs and s["not_ready"] >= rule.min_share * s["pcs"]:
                found.append(Condition(f"site_not_ready:{s['site']}", f"{s['not_ready']} of {s['pcs']} PCs not ready at {s['site']}",
                                       f"{s['not_ready']} of {s['pcs']} PCs at {s['site']} are not ready.",
                                       "/?" + urlencode({"site": s["site"], "readiness": "not_ready"})))
    return found


class Alerter:
    """Judges the rules each window and queues what is to be sent (one per hub process)."""

    def __init__(self, config: AlertConfig, hub_url: str,
                 gather: Callable[[], Awaitable[tuple[Sequence[Any], Sequence[dict], Sequence[dict]]]],
                 *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.hub_url = hub_url.rstrip("/")
        self.gather = gather
        self.clock = clock
        self.states: dict[tuple[int, str], _State] = {}
        self.outboxes: list[asyncio.Queue[tuple[str, str]]] = [asyncio.Queue(maxsize=200) for _ in config.urls]
        self.sent: deque[tuple[int, str, str]] = deque(maxlen=500)  # (receiver, title, "sent"|"failed"): what happened
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._judge_loop()), *(loop.create_task(self._send_loop(i, url)) for i, url in enumerate(self.config.urls))]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    # -- judging --------------------------------------------------------------------------

    async def _judge_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.window_s)
            try:
                await self.judge()
            except Exception as exc:  # the database away for a window: judged again next time
                log.warning("alert rules not judged", error=type(exc).__name__)

    async def judge(self) -> None:
        verdicts, counts, not_ready = await self.gather()
        now = self.clock()
        quiet = in_quiet_hours(self.config.quiet_hours, now)
        for index, rule in enumerate(self.config.rules):
            true_now = {c.key: c for c in conditions(rule, verdicts, counts, not_ready)}
            keys = set(true_now) | {k for (i, k) in self.states if i == index}
            for key in keys:
                state = self.states.setdefault((index, key), _State())
                state.seen.append(key in true_now)
                while len(state.seen) > rule.of_last:
                    state.seen.popleft()
                if key in true_now:
                    state.last = true_now[key]
                holds = sum(state.seen) >= rule.windows
                if quiet:
                    continue
                if holds and not state.firing and now - state.last_sent >= self.config.suppress_s and state.last:
                    state.firing, state.last_sent = True, now
                    self._post(state.last.title, f"{state.last.body}\n{self.hub_url}{state.last.path}")
                elif not holds and state.firing:
                    state.firing = False
                    if self.config.notify_clear and state.last:
                        self._post(f"Cleared: {state.last.title}", f"No longer seen in {rule.of_last} window(s).\n{self.hub_url}{state.last.path}")
                if not state.firing and not any(state.seen) and now - state.last_sent >= self.config.suppress_s:
                    del self.states[(index, key)]  # forgotten only once its suppression is over

    def _post(self, title: str, body: str) -> None:
        log.info("alert", title=title)
        for outbox in self.outboxes:
            try:
                outbox.put_nowait((title, body))
            except asyncio.QueueFull:
                log.warning("alert dropped: the receiver's queue is full", title=title)

    # -- sending ----------------------------------------------------------------------------

    async def _send_loop(self, index: int, url: str) -> None:
        import apprise

        outbox = self.outboxes[index]
        target = apprise.Apprise()
        if not target.add(url):
            log.error("alert receiver not understood by apprise (check the URL's scheme)", receiver=index)
            return
        while True:
            title, body = await outbox.get()
            delay = self.config.retry_s
            while True:
                try:
                    ok = bool(await asyncio.wait_for(asyncio.to_thread(target.notify, body=body, title=title), self.config.send_timeout_s))
                except asyncio.TimeoutError:
                    ok = False
                self.sent.append((index, title, "sent" if ok else "failed"))
                if ok:
                    break
                log.warning("alert not delivered; retrying", receiver=index, retry_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.max_retry_s)
