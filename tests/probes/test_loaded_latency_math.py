"""The figures of latency under load, checked by hand (plugins/loaded_latency/measure.py)."""

from __future__ import annotations

import pytest

from agentd_plugins.loaded_latency.measure import (
    EMODEL_KNEE_MS,
    breaks_calls,
    grade,
    mean_abs_change,
    rpm,
    summarise,
    trimmed_mean,
)
from agentd_plugins.media.quality import e_model


@pytest.mark.parametrize(
    ("added", "letter"),
    [(0.0, "A+"), (4.9, "A+"), (5.0, "A"), (29.9, "A"), (30.0, "B"), (59.9, "B"), (60.0, "C"), (199.9, "C"), (200.0, "D"), (399.9, "D"), (400.0, "F"), (2000.0, "F")],
)
def test_grade_boundaries(added, letter):
    assert grade(added) == letter


def test_trimmed_mean_drops_the_slowest_five_percent():
    values = [10.0] * 19 + [1000.0]  # 20 values: the top 5 % is the one 1000
    assert trimmed_mean(values) == 10.0
    assert trimmed_mean([10.0, 20.0]) == 15.0  # 5 % of 2 is no value: nothing dropped
    with pytest.raises(ValueError):
        trimmed_mean([])


def test_rpm_is_sixty_thousand_over_the_round_trip_in_ms():
    assert rpm([100.0] * 20) == pytest.approx(600.0)  # 100 ms round trips: 600 per minute
    assert rpm([300.0] * 19 + [5000.0]) == pytest.approx(200.0)
    assert rpm([20.0, 20.0, 20.0]) == pytest.approx(3000.0)


def test_mean_abs_change():
    assert mean_abs_change([10.0, 20.0, 10.0, 20.0]) == 10.0
    assert mean_abs_change([5.0]) == 0.0


def test_summarise_a_bloated_line():
    idle = [20.0, 21.0, 19.0, 20.0, 20.0]
    loaded = [320.0] * 10
    figures = summarise(idle, loaded, loaded_lost=0)
    assert figures.idle_rtt_ms == 20.0
    assert figures.added_ms == 300.0 and figures.added_p90_ms == 300.0
    assert figures.grade == "D"
    assert figures.rpm == round(60000 / 320)
    assert figures.loaded_jitter_ms == 0.0 and figures.loaded_loss_pct == 0.0
    # one way: half the idle round trip plus all the added delay (an uplink queue delays one direction)
    assert figures.loaded_effective_ms == pytest.approx(10.0 + 300.0 + 10.0)
    assert figures.loaded_mos == pytest.approx(round(e_model(20.0 + 600.0, 0.0, 0.0).mos, 2))
    assert figures.breaks_calls(3.5) == "delay"  # past the knee, MOS still above 3.5


def test_summarise_counts_loss_and_jitter_under_load():
    figures = summarise([10.0] * 5, [200.0, 300.0, 200.0, 300.0], loaded_lost=4)
    assert figures.loaded_loss_pct == 50.0
    assert figures.loaded_jitter_ms == 100.0
    assert figures.added_ms == 240.0  # median of the loaded 250, less the idle 10
    assert figures.breaks_calls(3.5) == "mos"  # half lost: far below 3.5


def test_a_clean_line_breaks_nothing():
    figures = summarise([0.3] * 20, [3.0, 4.0, 2.5, 5.0], loaded_lost=0)
    assert figures.grade == "A+"
    assert figures.breaks_calls(3.5) is None


def test_breaks_calls_only_when_the_load_makes_the_difference():
    # a far edge, already past the knee when idle: the load is not the cause
    assert breaks_calls(100.0, 400.0, 4.0, 3.9, 320.0, 3.5) is None
    # little added (grade A) never counts, whatever the path
    assert breaks_calls(25.0, 290.0, 4.4, 4.3, EMODEL_KNEE_MS + 5, 3.5) is None
    # the load pushes it past the knee
    assert breaks_calls(200.0, 20.0, 4.4, 4.1, 220.0, 3.5) == "delay"
    # MOS below the limit under load, not when idle
    assert breaks_calls(200.0, 20.0, 4.4, 3.2, 220.0, 3.5) == "mos"
    # MOS already below when idle: not the load's doing by MOS; the knee decides
    assert breaks_calls(200.0, 20.0, 3.4, 3.2, 220.0, 3.5) == "delay"


def test_summarise_needs_both_phases():
    with pytest.raises(ValueError):
        summarise([], [1.0], 0)
    with pytest.raises(ValueError):
        summarise([1.0], [], 0)


# -- the rule, from a report's row (plugins/loaded_latency/rule.py) ------------------------------------


class _Config:
    def section(self, name):
        from agentd.errors import ConfigError

        raise ConfigError("not loaded", key=name)


def _rule(**kw):
    from agentd.correlation import Findings
    from agentd.model import CheckResult, Report, Status
    from agentd_plugins.loaded_latency.rule import bufferbloat_verdicts

    status = kw.pop("status", "warn")
    added, loaded_mos, effective = kw.pop("added", 280.0), kw.pop("loaded_mos", 4.2), kw.pop("effective", 300.0)
    row = CheckResult(
        id="path.load", title="Latency under load", status=Status(status), summary="...",
        metrics={"added_delay_ms": added, "added_delay_p90_ms": added + 20, "idle_rtt_ms": 20.0, "idle_mos": 4.4,
                 "loaded_mos": loaded_mos, "loaded_effective_ms": effective, "rpm": 214.0},
        details={"grade": "D", "probe": "STUN edge:3478", **kw},
    )
    report = Report(id="r", created="2026-12-07T00:00:00Z", agent=None, profile="full", checks=(row,))
    return bufferbloat_verdicts(Findings(report=report, config=_Config()))


def test_the_rule_names_bufferbloat_with_grade_figures_and_next_step():
    (verdict,) = _rule()
    assert verdict.code == "network.bufferbloat" and verdict.severity == "warning"
    assert "grade D" in verdict.summary and "280 ms" in verdict.summary and "214 RPM" in verdict.summary
    assert "SQM" in verdict.next_step and verdict.evidence == ("check:path.load",)
    (critical,) = _rule(loaded_mos=3.2)
    assert critical.severity == "critical" and "below 3.5" in critical.summary


def test_the_rule_is_silent_when_the_load_does_not_break_calls_or_was_too_short():
    assert _rule(added=20.0, effective=60.0, loaded_mos=4.4) == []
    assert _rule(ended_before_ramp=True) == []  # the caps ran out before the queue's ramp: no verdict
    assert _rule(status="skip") == []
