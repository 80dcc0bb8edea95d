"""Correlation runs through the real App: config validation, plugin manager, sorting."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from agentd.app import App
from agentd.model import Report, Verdict
from agentd.testing.invariants import assert_every_bad_check_explained
from agentd_plugins.rules import host, media, platform, segments, signaling, thresholds

RULE_PLUGINS = {
    "rules-thresholds": thresholds,
    "rules-media": media,
    "rules-signaling": signaling,
    "rules-host": host,
    "rules-platform": platform,
    "rules-segments": segments,
}

Correlate = Callable[..., list[Verdict]]


@pytest.fixture
def correlate(agentd_env) -> Correlate:
    """``correlate(report, timeline=None, config="")`` -> the verdicts the rules give.

    Every scenario also holds the invariant: each check that ended fail/warn/error is in a
    verdict's evidence, one that names a cause unless its id is in ``unexplained_ok``."""

    def run(report: Report, timeline: Any = None, config: str = "", unexplained_ok: tuple[str, ...] = ()) -> list[Verdict]:
        path = agentd_env.write_config(config)
        app = App.load(path, register=RULE_PLUGINS, load_entry_points=False)
        app.timeline = timeline
        before = len(app.plugins.failures)
        correlated = app.correlate(report)
        assert app.plugins.failures[before:] == [], "a rule raised"
        assert_every_bad_check_explained(correlated, unexplained_ok=unexplained_ok)
        return list(correlated.verdicts)

    return run
