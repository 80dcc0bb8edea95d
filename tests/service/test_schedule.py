"""The pre-shift schedule with a clock the test moves: spread, weekdays, sleep and wake."""

from __future__ import annotations

import asyncio
import statistics
from collections import Counter
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from agentd.errors import ConfigError
from agentd.schedule import MAX_SLEEP_S, Schedule, Scheduler, ScheduleSettings, parse_times, spread_offset_s

ZONE = "Europe/Berlin"
TZ = ZoneInfo(ZONE)


def local(y, mo, d, h, mi, s=0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=TZ)


class ManualClock:
    """Time moves only when the scheduler sleeps (by the amount it asks) or the test jumps it.

    ``suspend(at, seconds)``: when the clock reaches ``at``, the PC sleeps and the wall
    clock jumps forward by ``seconds`` while the monotonic sleep in progress does not.
    """

    def __init__(self, start: datetime) -> None:
        self.current = start
        self.sleeps: list[float] = []
        self.suspends: list[tuple[datetime, float]] = []

    def now(self) -> datetime:
        return self.current

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        target = self.current + timedelta(seconds=seconds)
        for at, length in list(self.suspends):
            if self.current <= at < target:
                self.suspends.remove((at, length))
                target += timedelta(seconds=length)
        self.current = target
        await asyncio.sleep(0)


def settings(**kw) -> ScheduleSettings:
    base = dict(times=("07:45",), weekdays=("mon", "tue", "wed", "thu", "fri"), spread_s=600, timezone=ZONE)
    return ScheduleSettings(**{**base, **kw})


def test_spread_is_stable_per_install_and_covers_the_window():
    offsets = [spread_offset_s(f"agentd-{i:05d}", 600) for i in range(5000)]
    assert all(0 <= o <= 600 for o in offsets)
    assert spread_offset_s("agentd-00042", 600) == offsets[42]  # deterministic per install
    # thousands of PCs do not start in the same second: about 5000/601 = 8 per second
    busiest = Counter(offsets).most_common(1)[0][1]
    assert busiest <= 25, busiest
    # and the window is used evenly: each tenth holds roughly a tenth
    tenths = Counter(o * 10 // 601 for o in offsets)
    assert all(400 <= n <= 600 for n in tenths.values()), tenths
    assert 270 <= statistics.mean(offsets) <= 330
    assert spread_offset_s("agentd-1", 0) == 0


def test_slots_follow_local_time_weekdays_and_the_offset():
    schedule = Schedule.from_settings(settings(times=("07:45", "13:00")), "agentd-00042")
    off = timedelta(seconds=schedule.offset_s)
    # Fri 2026-11-20 ... Tue 2026-11-24: Saturday and Sunday have no slots
    slots = schedule.slots_between(local(2026, 11, 20, 0, 0), local(2026, 11, 24, 23, 0))
    assert slots == [
        local(2026, 11, 20, 7, 45) + off, local(2026, 11, 20, 13, 0) + off,
        local(2026, 11, 23, 7, 45) + off, local(2026, 11, 23, 13, 0) + off,
        local(2026, 11, 24, 7, 45) + off, local(2026, 11, 24, 13, 0) + off,
    ]
    # across the change to summer time the slot stays at 07:45 local
    spring = schedule.slots_between(local(2026, 3, 27, 0, 0), local(2026, 3, 31, 0, 0))
    assert [s.astimezone(TZ).strftime("%a %H:%M") for s in spring][:1] == [(local(2026, 3, 27, 7, 45) + off).strftime("%a %H:%M")]
    assert {s.utcoffset() for s in spring} == {timedelta(hours=1), timedelta(hours=2)}
    assert schedule.next_slot(local(2026, 11, 20, 14, 0)) == local(2026, 11, 23, 7, 45) + off


async def test_runs_at_its_slot_without_waiting_in_real_time():
    clock = ManualClock(local(2026, 11, 23, 7, 0))  # Monday
    schedule = Schedule.from_settings(settings(), "agentd-00042")
    scheduler = Scheduler(schedule, now=clock.now())
    runs: list[tuple[datetime, int]] = []

    async def on_due(due):
        runs.append((clock.now(), due.missed))
        if len(runs) == 2:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await scheduler.run_forever(clock, on_due)
    slot_mon = local(2026, 11, 23, 7, 45) + timedelta(seconds=schedule.offset_s)
    slot_tue = local(2026, 11, 24, 7, 45) + timedelta(seconds=schedule.offset_s)
    assert runs == [(slot_mon, 1), (slot_tue, 1)]  # on the second, once each
    assert max(clock.sleeps) <= MAX_SLEEP_S  # never one long sleep a suspend could stretch


async def test_slots_missed_while_asleep_run_once_after_wake():
    clock = ManualClock(local(2026, 11, 23, 6, 0))  # Monday
    schedule = Schedule.from_settings(settings(times=("07:45", "09:00", "11:00"), catch_up_h=12), "agentd-7")
    scheduler = Scheduler(schedule, now=clock.now())
    # the PC sleeps at 06:30 for 6 hours: 07:45, 09:00 and 11:00 pass while it sleeps
    clock.suspends.append((local(2026, 11, 23, 6, 30), 6 * 3600))
    runs = []

    async def on_due(due):
        runs.append((clock.now(), due.missed, due.slot))
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await scheduler.run_forever(clock, on_due)
    (ran_at, missed, slot), = runs
    assert missed == 3  # three slots collapsed into one run
    assert slot == local(2026, 11, 23, 11, 0) + timedelta(seconds=schedule.offset_s)
    woke = local(2026, 11, 23, 12, 30)
    assert woke <= ran_at <= woke + timedelta(seconds=MAX_SLEEP_S)  # soon after wake
    # and nothing more is due after it, until the next slot
    assert scheduler.poll(ran_at + timedelta(seconds=1)) is None


def test_a_slot_missed_too_long_ago_is_dropped():
    start = local(2026, 11, 20, 6, 0)  # Friday
    scheduler = Scheduler(Schedule.from_settings(settings(catch_up_h=12), "x"), now=start)
    # off over the weekend: Friday's slot is 3 days old on Monday 06:00, Monday's not yet due
    assert scheduler.poll(local(2026, 11, 23, 6, 0)) is None
    assert scheduler.poll(local(2026, 11, 23, 9, 0)).missed == 1


def test_a_restart_after_power_off_catches_up_once(tmp_path):
    state = tmp_path / "schedule.json"
    schedule = Schedule.from_settings(settings(times=("07:45", "09:00")), "x")
    first = Scheduler(schedule, state_file=state, now=local(2026, 11, 23, 7, 0))
    assert state.exists()
    del first  # the PC is switched off at 07:00 and on again at 10:00
    second = Scheduler(schedule, state_file=state, now=local(2026, 11, 23, 10, 0))
    due = second.poll(local(2026, 11, 23, 10, 0))
    assert due is not None and due.missed == 2
    third = Scheduler(schedule, state_file=state, now=local(2026, 11, 23, 10, 5))
    assert third.poll(local(2026, 11, 23, 10, 5)) is None  # that run was remembered


def test_bad_schedule_values_name_the_key():
    with pytest.raises(ConfigError, match=r"schedule\.times\[1\].*HH:MM"):
        parse_times(settings(times=("07:45", "7.45")))
    with pytest.raises(ConfigError, match=r"schedule\.weekdays\[0\]"):
        parse_times(settings(weekdays=("someday",)))
    with pytest.raises(ConfigError, match=r"schedule\.timezone"):
        parse_times(settings(timezone="Mars/Olympus"))
    assert Schedule.from_settings(settings(times=()), "x").next_slot(datetime.now(timezone.utc)) is None
