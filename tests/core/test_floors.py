"""The dependency floors pyproject.toml declares are the versions the floor smoke set ran on.

tests/run builds .venv-floor with uv's --resolution lowest-direct and runs the tests marked
``floor`` in it with AGENTD_FLOOR_VENV=1. There, every direct dependency must sit exactly on
its declared floor: a floor that another requirement pushes up (moto's Flask wants
Jinja2 >= 3.1.2, aiortc's pyee rules out playwright < 1.52) was never tried, so it is named
here instead of passing unseen. In the main venv (newest versions) this test has nothing
to compare and skips.
"""

from __future__ import annotations

import os
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]


def declared_floors() -> dict[str, tuple[Requirement, Version | None]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        lines += extra
    floors: dict[str, tuple[Requirement, Version | None]] = {}
    for line in lines:
        requirement = Requirement(line)
        if requirement.name == project["name"] or (requirement.marker and not requirement.marker.evaluate()):
            continue
        lows = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==", "~=")]
        floors[requirement.name] = (requirement, max(lows) if lows else None)
    return floors


def test_every_direct_dependency_declares_a_floor():
    missing = [str(req) for req, low in declared_floors().values() if low is None]
    assert not missing, f"no floor (>=) declared for {missing}: lowest-direct would install their first release ever"


@pytest.mark.floor
def test_the_floor_venv_holds_each_dependency_on_its_floor():
    if os.environ.get("AGENTD_FLOOR_VENV") != "1":
        pytest.skip("not in tests/run's .venv-floor (AGENTD_FLOOR_VENV=1)")
    off = []
    for name, (requirement, low) in declared_floors().items():
        installed = Version(metadata.version(name))
        if low is not None and installed != low:
            off.append(f"{requirement}: {installed} installed")
    assert not off, "raise these floors to what lowest-direct installs (something else requires more): " + "; ".join(off)
