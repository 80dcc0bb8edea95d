"""Pre-shift checks on a schedule: local times and weekdays, spread out per PC.

``[schedule]`` names wall-clock times ("07:45") and weekdays. Each installation adds
its own fixed offset in ``[0, spread_s]`` seconds, derived from its install id, so that
thousands of PCs given the same time do not all probe the edge in the same second, and
one PC always runs at the same moment (predictable for its agent).

Sleep and wake: a suspended PC's monotonic clock stands still, so the scheduler never
sleeps longer than ``MAX_SLEEP_S`` at once and re-reads the wall clock each time it
wakes. Every slot that passed since it last looked is collapsed into one run: a PC
that slept through three slots runs once after wake, not three times. Slots older
than ``catch_up_h`` are dropped (a check of a PC nobody has used for a week is noise).

Clock steps: the last slot handled (``last_seen``) is never trusted when it lies in the
future. A wall clock stepped back (NTP after a sleep, a daemon restarted after running
ahead) re-plans from now: the next slot runs on time instead of after the size of the
step. A step forward runs the slots it passed as one missed run, as after a sleep. The
steps noticed are kept for ``agentd status``.

The clock is injected (:class:`Clock`), so the tests move time without waiting.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Awaitable, Callable, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from agentd.clocks import ClockStep, StepWatch, steady
from agentd.errors import ConfigError
from agentd.fileio import write_atomic

log = structlog.get_logger("agentd.schedule")

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_SLEEP_S = 60.0
"""Longest single sleep: bounds how late a run starts after the PC wakes."""


@dataclass(frozen=True)
class ScheduleSettings:
    """``[schedule]``: when the daemon runs pre-shift checks by itself."""

    times: tuple[str, ...] = field(
        default=(), metadata={"help": 'local times of day "HH:MM" (24 h); empty: no scheduled checks'}
    )
    weekdays: tuple[str, ...] = field(
        default=("mon", "tue", "wed", "thu", "fri"), metadata={"help": "days to run on: mon tue wed thu fri sat sun"}
    )
    spread_s: int = field(
        default=600,
        metadata={"help": "each PC starts up to this many seconds after the time (fixed per install)", "min": 0, "max": 6 * 3600},
    )
    profile: Literal["preshift", "full"] = field(default="preshift", metadata={"help": "the profile of scheduled checks"})
    catch_up_h: float = field(
        default=12.0,
        metadata={"help": "a slot missed while the PC slept or was off runs once after wake if at most this old", "min": 0, "max": 24 * 7},
    )
    timezone: str | None = field(default=None, metadata={"help": "IANA time zone of the times (default: the PC's)"})


def parse_times(settings: ScheduleSettings, *, file: str | None = None) -> tuple[time, ...]:
    """Validate and parse ``times``/``weekdays``/``timezone`` (raises ConfigError naming the key)."""
    parsed: list[time] = []
    for i, text in enumerate(settings.times):
        try:
            hour, minute = text.split(":")
            if len(minute) != 2:
                raise ValueError
            parsed.append(time(int(hour), int(minute)))
        except ValueError:
            raise ConfigError(f'{text!r} is not a time of day "HH:MM"', file=file, key=f"schedule.times[{i}]") from None
    for i, day in enumerate(settings.weekdays):
        if day.lower()[:3] not in WEEKDAYS:
            raise ConfigError(f"{day!r} is not a weekday ({' '.join(WEEKDAYS)})", file=file, key=f"schedule.weekdays[{i}]")
    if settings.timezone:
        try:
            ZoneInfo(settings.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"unknown time zone {settings.timezone!r}", file=file, key="schedule.timezone") from None
    return tuple(sorted(set(parsed)))


def spread_offset_s(install_id: str, spread_s: int) -> int:
    """This installation's fixed offset in ``[0, spread_s]``: uniform over installs, stable per install."""
    if spread_s <= 0:
        return 0
    digest = hashlib.sha256(f"agentd-schedule:{install_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (spread_s + 1)


@dataclass(frozen=True)
class Schedule:
    """The slots of one configuration for one installation (pure; no clock)."""

    times: tuple[time, ...]
    weekdays: frozenset[int]
    offset_s: int
    zone: tzinfo | None
    profile: str = "preshift"
    catch_up: timedelta = timedelta(hours=12)

    @classmethod
    def from_settings(cls, settings: ScheduleSettings, install_id: str, *, file: str | None = None) -> Schedule:
        times = parse_times(settings, file=file)
        days = frozenset(WEEKDAYS.index(d.lower()[:3]) for d in settings.weekdays)
        zone = ZoneInfo(settings.timezone) if settings.timezone else None
        return cls(
            times=times,
            weekdays=days,
            offset_s=spread_offset_s(install_id, settings.spread_s),
            zone=zone,
            profile=settings.profile,
            catch_up=timedelta(hours=settings.catch_up_h),
        )

    @property
    def active(self) -> bool:
        return bool(self.times and self.weekdays)

    def _local(self, day: date, at: time) -> datetime:
        naive = datetime.combine(day, at)
        # no zone: the PC's own local time (naive.astimezone() reads the system zone)
        moment = naive.replace(tzinfo=self.zone) if self.zone else naive.astimezone()
        return moment + timedelta(seconds=self.offset_s)

    def slots_between(self, start: datetime, end: datetime) -> list[datetime]:
        """Slot moments (offset applied) with ``start < slot <= end``, oldest first."""
        if not self.active or end <= start:
            return []
        found: list[datetime] = []
        # the offset can push a slot past midnight: start one day early
        day = (start - timedelta(seconds=self.offset_s)).astimezone(self.zone).date() - timedelta(days=1)
        last = end.astimezone(self.zone).date()
        while day <= last:
            if day.weekday() in self.weekdays:
                for at in self.times:
                    slot = self._local(day, at)
                    if start < slot <= end:
                        found.append(slot)
            day += timedelta(days=1)
        return sorted(found)

    def next_slot(self, after: datetime) -> datetime | None:
        """The first slot strictly after ``after`` (None when nothing is scheduled)."""
        if not self.active:
            return None
        for weeks in (1, 2):  # one week holds every weekday; two covers the offset's overflow
            found = self.slots_between(after, after + timedelta(weeks=weeks))
            if found:
                return found[0]
        return None


class Clock(Protocol):
    """What the scheduler needs from time; tests pass a clock they move by hand."""

    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def steady(self) -> float:
        """A clock that never jumps: with ``now`` it shows wall-clock steps."""
        return steady()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True)
class DueRun:
    """One run to start now, standing for every slot it covers."""

    slot: datetime
    """The latest slot covered."""
    missed: int
    """How many slots it covers (more than one: the PC slept or was off through some)."""
    profile: str


class Scheduler:
    """Decides when a scheduled check is due; remembers the last slot handled on disk.

    ``poll(now)`` is the whole rule, free of waiting: every slot in ``(last, now]`` within
    the catch-up window collapses into one :class:`DueRun`. ``run_forever`` drives it
    with a :class:`Clock`.
    """

    def __init__(self, schedule: Schedule, *, state_file: Path | None = None, now: datetime | None = None) -> None:
        self.schedule = schedule
        self.state_file = state_file
        self.watch = StepWatch()
        now = now or datetime.now(timezone.utc)
        loaded = self._load()
        self.last_seen: datetime = loaded or now
        if loaded is not None and loaded > now:
            # saved by a run whose clock was ahead (or this one was set back since):
            # trusting it would hold every slot back by the size of the step
            self.watch.note(ClockStep(now, (now - loaded).total_seconds()))
            log.warning("last scheduled slot is in the future: the clock was stepped back; re-planning from now",
                        last_seen=loaded.isoformat(), now=now.isoformat())
            self.last_seen = now
            loaded = None
        if loaded is None:
            self._save()  # a restart after a power-off then still catches up its missed slot
        self.wake = asyncio.Event()
        self.runs = 0

    @property
    def clock_steps(self) -> list[ClockStep]:
        """Wall-clock steps noticed since start, oldest first."""
        return list(self.watch.steps)

    def replace(self, schedule: Schedule) -> None:
        """A reloaded configuration: new slots from now on, no catch-up of the old ones."""
        self.schedule = schedule
        self.wake.set()

    def poll(self, now: datetime) -> DueRun | None:
        if now < self.last_seen:
            # the wall clock went back: re-plan from now (never wait for the old "now" to return)
            back = (self.last_seen - now).total_seconds()
            self.last_seen = now
            if back >= 1.0:
                log.warning("the clock was stepped back; scheduled checks re-planned from now", by_s=round(back, 1))
                self._save()
            return None
        slots = self.schedule.slots_between(self.last_seen, now)
        self.last_seen = now
        recent = [s for s in slots if now - s <= self.schedule.catch_up]
        if len(recent) < len(slots):
            log.info("scheduled checks skipped: missed too long ago", slots=len(slots) - len(recent))
        if not recent:
            return None
        self._save()  # only when a run is due: no disk write per poll on an idle PC
        return DueRun(slot=recent[-1], missed=len(recent), profile=self.schedule.profile)

    def seconds_until_next(self, now: datetime) -> float:
        nxt = self.schedule.next_slot(now)
        if nxt is None:
            return MAX_SLEEP_S
        return max(0.0, min(MAX_SLEEP_S, (nxt - now).total_seconds()))

    async def run_forever(self, clock: Clock, on_due: Callable[[DueRun], Awaitable[None]]) -> None:
        steady_of = getattr(clock, "steady", None)  # a hand-moved test clock has none: no step detection
        while True:
            now = clock.now()
            if steady_of is not None:
                step = self.watch.observe(now.timestamp(), steady_of())
                if step is not None:
                    log.warning("wall clock step", moved_s=round(step.by_s, 1), at=step.at.isoformat())
            due = self.poll(now)
            if due is not None:
                if due.missed > 1:
                    log.info("scheduled check: slots were missed (PC asleep or off); running once", missed=due.missed)
                self.runs += 1
                try:
                    await on_due(due)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a failed run must not end the schedule
                    log.error("scheduled check failed", error=f"{type(exc).__name__}: {exc}")
                continue  # a long run may have passed the next slot: poll again at once
            self.wake.clear()
            sleep = asyncio.ensure_future(clock.sleep(self.seconds_until_next(clock.now())))
            woken = asyncio.ensure_future(self.wake.wait())
            try:
                await asyncio.wait({sleep, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleep.cancel()
                woken.cancel()

    # -- the last slot handled survives restarts (a PC switched off, not only asleep) ---------

    def _load(self) -> datetime | None:
        if self.state_file is None:
            return None
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
            moment = datetime.fromisoformat(data["last_seen"])
            return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _save(self) -> None:
        if self.state_file is None:
            return
        try:
            write_atomic(self.state_file, json.dumps({"last_seen": self.last_seen.isoformat()}))
        except OSError as exc:
            log.warning("schedule state not saved", file=str(self.state_file), error=exc.strerror)
