"""The local timeline: what happened on this PC, kept in SQLite in the state directory.

Two tables: ``host_samples`` (the host plugin's sample every few seconds: CPU, memory,
swap, browsers, interface, Wi-Fi, VPN) and ``events`` (``{at, kind, data}``: kinds such
as ``check.report``, ``ws.drop``, ``ws.reconnect``, ``call.start``, ``call.end``,
``mute``). Correlation reads it through ``findings.timeline`` (plugins/FINDINGS.md,
"The local timeline"): ``host_samples(start, end)`` and ``events(start, end, kinds)``.

The daemon owns the writer (``daemon.timeline``); ``agentd diagnose`` in-process opens
the same file read-only (:func:`open_existing`). Retention: rows older than
``retention_days`` are deleted, samples older than a day are thinned to one a minute,
and the file is kept under ``max_bytes`` by deleting the oldest samples first; all at
most once per ``PRUNE_EVERY_S`` so writes stay cheap.

Retention ages rows by time the timeline witnessed, not by the wall clock alone: a
wall clock that jumps 15 days ahead (a bad RTC, a user's typo) must not delete two
weeks of history in one prune. The "retention clock" (table ``meta``) advances by the
steady clock while the daemon runs, and across a restart by the wall-clock gap, but by
at most :data:`MAX_UNWITNESSED_S` (a day) per start. A real long power-off then ages
the data gradually (a day per start, plus the time running); the size bound still holds.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import structlog

from agentd import paths
from agentd.clocks import span, steady
from agentd.model import isoformat, parse_time

log = structlog.get_logger("agentd.timeline")

FILENAME = "timeline.sqlite3"
DEFAULT_RETENTION_DAYS = 14.0
DEFAULT_MAX_BYTES = 64 * 2**20
PRUNE_EVERY_S = 600.0
FULL_RESOLUTION_S = 86400.0
"""Samples of the last day are kept as taken (incidents are mostly diagnosed the same day)..."""
THINNED_STEP_S = 60.0
"""...older ones one per minute: 14 days at 5 s would be ~160 MB, thinned ~25 MB."""
MAX_UNWITNESSED_S = 86400.0
"""The most the retention clock moves at one start for time the timeline did not see pass."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS host_samples (at REAL NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS host_samples_at ON host_samples (at);
CREATE TABLE IF NOT EXISTS events (at REAL NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

TimeLike = datetime | str | float | int


def default_path() -> Path:
    return paths.state_dir() / FILENAME


def _epoch(value: TimeLike | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        value = parse_time(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


def _compact(data: Mapping[str, Any]) -> str:
    return json.dumps(data, default=str, separators=(",", ":"))


def _iso(epoch: float) -> str:
    return isoformat(datetime.fromtimestamp(epoch, timezone.utc))


class Timeline:
    """One SQLite file; a writer (the daemon) or a read-only reader (diagnose)."""

    def __init__(
        self,
        path: Path,
        *,
        readonly: bool = False,
        retention_days: float = DEFAULT_RETENTION_DAYS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.retention_days = retention_days
        self.max_bytes = max_bytes
        self._last_prune: float | None = None  # steady clock
        self._retention_now: float | None = None  # the retention clock (epoch seconds) ...
        self._retention_steady = 0.0  # ... at this steady moment
        if readonly:
            # mode=ro: never creates or changes the file, even while the daemon writes to it
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            # auto_vacuum first: it only takes on a file that has no table yet
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._db.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        self._db.execute("PRAGMA busy_timeout=2000")
        if not readonly:
            self._prune_quietly()  # at start too: a daemon restarted often would otherwise never prune

    # -- writing ------------------------------------------------------------------------

    def add_sample(self, sample: Mapping[str, Any], at: TimeLike | None = None) -> None:
        """Store one host sample (``HostSample.to_dict()``)."""
        stamp = _epoch(at) or time.time()
        data = {k: v for k, v in sample.items() if k != "at"}
        self._db.execute("INSERT INTO host_samples (at, data) VALUES (?, ?)", (stamp, _compact(data)))
        self._maybe_prune()

    def record(self, kind: str, data: Mapping[str, Any] | None = None, at: TimeLike | None = None) -> None:
        """Store one event (``ws.drop``, ``check.report``, ``mute``, ...)."""
        stamp = _epoch(at) or time.time()
        self._db.execute(
            "INSERT INTO events (at, kind, data) VALUES (?, ?, ?)", (stamp, kind, _compact(dict(data or {})))
        )
        self._maybe_prune()

    def _maybe_prune(self) -> None:
        if self._last_prune is None or steady() - self._last_prune >= PRUNE_EVERY_S:
            self._prune_quietly()

    def _prune_quietly(self) -> None:
        """Prune; a failure (a full disk) is logged and tried again at the next interval."""
        try:
            self.prune()
        except sqlite3.Error as exc:
            self._last_prune = steady()
            log.warning("timeline not pruned", file=str(self.path), error=str(exc))

    def retention_now(self) -> float:
        """The moment retention ages rows against: witnessed time, not a jumpy wall clock."""
        if self._retention_now is None:
            self._retention_now, self._retention_steady = self._start_retention_clock(), steady()
        moment = steady()
        self._retention_now += max(0.0, moment - self._retention_steady)
        self._retention_steady = moment
        return self._retention_now

    def _start_retention_clock(self) -> float:
        wall = time.time()
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'retention_clock'").fetchone()
            saved = json.loads(row[0]) if row else None
            trusted, saved_wall = float(saved["now"]), float(saved["wall"])
        except (sqlite3.Error, ValueError, KeyError, TypeError):
            return wall  # a new file, or one from an older agentd: the wall clock is all there is
        gap = wall - saved_wall
        if gap > MAX_UNWITNESSED_S:
            log.warning("the wall clock is far ahead of what the timeline saw; ageing its rows by at most a day for now",
                        ahead=span(gap), file=str(self.path))
        return trusted + min(max(0.0, gap), MAX_UNWITNESSED_S)

    def _save_retention_clock(self, now: float) -> None:
        value = json.dumps({"now": now, "wall": time.time()})
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('retention_clock', ?)", (value,))

    def prune(self, now: float | None = None) -> int:
        """Apply retention and the size bound; returns the rows deleted. ``now`` (tests):
        the moment to age rows against, instead of the retention clock."""
        now = now if now is not None else self.retention_now()
        self._last_prune = steady()
        self._save_retention_clock(now)
        cutoff = now - self.retention_days * 86400
        deleted = 0
        for table in ("host_samples", "events"):
            deleted += self._db.execute(f"DELETE FROM {table} WHERE at < ?", (cutoff,)).rowcount
        old = now - FULL_RESOLUTION_S
        deleted += self._db.execute(
            "DELETE FROM host_samples WHERE at < ?1 AND rowid NOT IN "
            "(SELECT min(rowid) FROM host_samples WHERE at < ?1 GROUP BY CAST(at / ?2 AS INTEGER))",
            (old, THINNED_STEP_S),
        ).rowcount
        # Size bound: drop the oldest tenth of the samples (the bulk of the data) until it fits.
        for _ in range(20):
            if self.size_bytes() <= self.max_bytes:
                break
            count = self._db.execute("SELECT count(*) FROM host_samples").fetchone()[0]
            if count == 0:
                deleted += self._db.execute(
                    "DELETE FROM events WHERE rowid IN (SELECT rowid FROM events ORDER BY at LIMIT ?)",
                    (max(1, self._count("events") // 10),),
                ).rowcount
            else:
                deleted += self._db.execute(
                    "DELETE FROM host_samples WHERE rowid IN (SELECT rowid FROM host_samples ORDER BY at LIMIT ?)",
                    (max(1, count // 10),),
                ).rowcount
        if deleted:
            # give the freed pages back to the file system (the bound is on the disk, too)
            # executescript steps the pragma to its end (execute frees one page only)
            self._db.executescript("PRAGMA incremental_vacuum;")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            log.info("timeline pruned", rows=deleted)
        return deleted

    def size_bytes(self) -> int:
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        size = self._db.execute("PRAGMA page_size").fetchone()[0]
        return (pages - free) * size

    def _count(self, table: str) -> int:
        return self._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    # -- reading (the FINDINGS.md interface) --------------------------------------------

    def host_samples(self, start: TimeLike | None = None, end: TimeLike | None = None) -> list[dict[str, Any]]:
        """Host samples with ``start <= at <= end``, oldest first; each a dict with ``at`` (ISO)."""
        rows = self._query("host_samples", "at, data", start, end)
        return [{"at": _iso(at), **json.loads(data)} for at, data in rows]

    def events(
        self, start: TimeLike | None = None, end: TimeLike | None = None, kinds: Iterable[str] | None = None
    ) -> list[dict[str, Any]]:
        """Events with ``start <= at <= end`` (of ``kinds`` when given), oldest first: ``{at, kind, data}``."""
        rows = self._query("events", "at, kind, data", start, end, kinds=list(kinds) if kinds else None)
        return [{"at": _iso(at), "kind": kind, "data": json.loads(data)} for at, kind, data in rows]

    def _query(self, table: str, columns: str, start: TimeLike | None, end: TimeLike | None, *, kinds: list[str] | None = None) -> list[tuple]:
        where, args = [], []
        if start is not None:
            where.append("at >= ?")
            args.append(_epoch(start))
        if end is not None:
            where.append("at <= ?")
            args.append(_epoch(end))
        if kinds:
            where.append(f"kind IN ({', '.join('?' * len(kinds))})")
            args.extend(kinds)
        sql = f"SELECT {columns} FROM {table}" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY at"
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:  # a file from an older agentd, or being replaced
            log.warning("timeline not readable", file=str(self.path), error=str(exc))
            return []

    def stats(self) -> dict[str, Any]:
        last = self._db.execute("SELECT max(at) FROM host_samples").fetchone()[0]
        return {
            "path": str(self.path),
            "samples": self._count("host_samples"),
            "events": self._count("events"),
            "size_bytes": self.size_bytes(),
            "last_sample": _iso(last) if last else None,
        }

    def close(self) -> None:
        try:
            if not self.readonly:
                self._save_retention_clock(self.retention_now())
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        self._db.close()


SYSTEM_PATH = Path("/var/lib/agentd") / FILENAME
"""The packaged service's timeline (systemd ``StateDirectory=agentd``)."""


def open_existing(path: Path | None = None) -> Timeline | None:
    """The daemon's timeline read-only, for an in-process ``agentd diagnose``; None when there is none.

    A user's own state folder first, then the system service's (readable by the group agentd)."""
    if path is None:
        path = default_path()
        if not path.is_file() and not (os.environ.get("AGENTD_STATE_DIR") or os.environ.get("STATE_DIRECTORY")):
            path = SYSTEM_PATH
    if not path.is_file():
        return None
    try:
        return Timeline(path, readonly=True)
    except sqlite3.Error as exc:
        log.warning("timeline not opened", file=str(path), error=str(exc))
        return None
