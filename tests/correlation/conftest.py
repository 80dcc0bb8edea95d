"""Correlation runs through the real App: config validation, plugin manager, sorting."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from agentd.app import App
from agentd.model import Report, Verdict
from agentd_plugins.rules import host, media, platform, signaling, thresholds

RULE_PLUGINS = {
    "rules-thresholds": thresholds,
    "rules-media": media,
    "rules-signaling": signaling,
    "rules-host": host,
    "rules-platform": platform,
}

Correlate = Callable[..., list[Verdict]]


@pytest.fixture
def correlate(agentd_env) -> Correlate:
    """``correlate(report, timeline=None, config="")`` -> the verdicts the rules give."""

    def run(report: Report, timeline: Any = None, config: str = "") -> list[Verdict]:
        path = agentd_env.write_config(config)
        app = App.load(path, register=RULE_PLUGINS, load_entry_points=False)
        app.timeline = timeline
        before = len(app.plugins.failures)
        verdicts = list(app.correlate(report).verdicts)
        assert app.plugins.failures[before:] == [], "a rule raised"
        return verdicts

    return run
