"""Sub-commands that plugins add to the ``agentd`` command line."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Awaitable, Callable

if TYPE_CHECKING:
    from agentd.app import App


@dataclass(frozen=True)
class Command:
    """``agentd <name> ...``.

    ``run`` gets the parsed arguments and the :class:`agentd.app.App` (configuration and
    plugins loaded) and returns the exit code, directly or as an awaitable. Exit codes
    follow the CLI contract: 0 good, 1 the thing checked is not good, 2 usage or
    configuration error.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, "App"], "int | Awaitable[int]"]
    description: str | None = None
