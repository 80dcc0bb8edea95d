"""The ``file`` sink: a folder of JSON reports on this machine (the local store).

On by default, with no set-up: ``<state dir>/reports``. ``[sinks.file] enabled = false``
turns it off. Writing is atomic and keyed on the report id, so delivering the same
report twice leaves one file.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from agentd import hookimpl, paths
from agentd.config import Config, ConfigSection
from agentd.errors import DeliveryError
from agentd.model import Report
from agentd.fileio import write_atomic
from agentd.spool import safe_name


@dataclass(frozen=True)
class FileSinkSettings:
    """``[sinks.file]``."""

    enabled: bool = field(default=True, metadata={"help": "write every delivered report to the folder"})
    path: Path | None = field(default=None, metadata={"help": "the folder (default: <state dir>/reports)"})
    max_reports: int = field(default=500, metadata={"help": "keep at most this many reports; the oldest go first", "min": 1})


class FileSink:
    def __init__(self, folder: Path, max_reports: int = 500, name: str = "file") -> None:
        self.name = name
        self.folder = folder
        self.max_reports = max_reports

    async def deliver(self, report: Report, payload: bytes) -> None:
        await asyncio.to_thread(self._write, report.id, payload)

    def _write(self, report_id: str, payload: bytes) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomic(self.folder / f"{safe_name(report_id, 'report id')}.json", payload, durable=True)
        except OSError as exc:
            raise DeliveryError(f"cannot write to {self.folder}: {exc.strerror or exc}") from None
        for old in self.stored()[: -self.max_reports]:
            with contextlib.suppress(OSError):
                old.unlink()

    def stored(self) -> list[Path]:
        """The reports kept here, oldest first (ids sort by time)."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.glob("*.json") if not p.name.startswith("."))


@hookimpl
def agentd_config_sections():
    return [ConfigSection("sinks.file", FileSinkSettings, "the local folder of delivered reports (on by default)")]


@hookimpl
def agentd_collect_sinks(config: Config):
    settings: FileSinkSettings = config.section("sinks.file")
    if not settings.enabled:
        return []
    folder = settings.path.expanduser() if settings.path else paths.state_dir() / "reports"
    return [FileSink(folder, settings.max_reports)]
