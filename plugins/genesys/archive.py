"""``agentd archive``: keep the evidence of bad calls before Genesys purges it.

Genesys Cloud keeps fine-grained call telemetry for days only (seed 000, edge case 1).
``agentd archive --since 24h --mos-below 3.5`` finds the voice calls of the interval whose
``mediaStatsMinConversationMos`` is below the threshold (an async analytics job, read by
its cursor), runs every evidence source for each (as ``agentd diagnose`` would), and
stores the result in a SQLite file in the state directory.

- idempotent: a call already in the archive is not fetched or stored again;
- resumable: each call is committed on its own, so an interrupted run keeps what it
  finished and the next run does the rest;
- within rate limits: calls are fetched one after another, and the client waits out
  429s (``Retry-After``) like any other call.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping

import structlog

from agentd import paths
from agentd.errors import GenesysError, ServerError, UsageError
from agentd.evidence import EvidenceRequest
from agentd.model import Evidence, isoformat, utcnow

from .client import GenesysClient
from .evidence import Window
from .sources import details_query

log = structlog.get_logger("agentd.genesys.archive")

ARCHIVE_FILE = "genesys-archive.sqlite"
JOB_DEADLINE_S = 300.0
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    conversation_id TEXT PRIMARY KEY,
    conversation_start TEXT,
    min_mos REAL,
    archived_at TEXT NOT NULL,
    evidence TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started TEXT NOT NULL,
    interval TEXT NOT NULL,
    mos_below REAL NOT NULL,
    found INTEGER,
    stored INTEGER,
    already INTEGER,
    failed INTEGER,
    finished TEXT
);
"""


def parse_duration(text: str) -> timedelta:
    """``24h``, ``90m``, ``7d``, ``1h30m``, ``3600s`` (or a bare number of seconds)."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return timedelta(seconds=float(text))
    parts = _DURATION.findall(text)
    if not parts or _DURATION.sub("", text).strip():
        raise UsageError(f"--since {text!r}: use a duration such as 24h, 90m, 7d or 1h30m")
    return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))


def default_archive_path() -> Path:
    return paths.state_dir() / ARCHIVE_FILE


@dataclass(frozen=True)
class ArchiveRun:
    """What one ``agentd archive`` run did."""

    interval: str
    found: int
    stored: int
    already: int
    failed: int
    failed_ids: tuple[str, ...] = ()


class Archive:
    """The SQLite archive: one row per call, its evidence as the report's JSON items."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_archive_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # call evidence names users and their browser's log lines: owner-only, created so
        # (SQLite gives its -wal and -shm files the database file's permissions)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        self.db = sqlite3.connect(self.path, timeout=10)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def has(self, conversation_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM calls WHERE conversation_id = ?", (conversation_id,)).fetchone() is not None

    def store(self, conversation_id: str, start: str | None, min_mos: float | None, evidence: list[dict[str, Any]]) -> bool:
        """Store one call; False when it was already there (nothing is written twice)."""
        with self.db:
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO calls (conversation_id, conversation_start, min_mos, archived_at, evidence) VALUES (?, ?, ?, ?, ?)",
                (conversation_id, start, min_mos, isoformat(utcnow()), json.dumps(evidence, ensure_ascii=False)),
            )
        return cursor.rowcount == 1

    def calls(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT conversation_id, conversation_start, min_mos, archived_at, evidence FROM calls ORDER BY conversation_start").fetchall()
        return [
            {"conversationId": r[0], "conversationStart": r[1], "minMos": r[2], "archivedAt": r[3], "evidence": json.loads(r[4])}
            for r in rows
        ]

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def begin_run(self, interval: str, mos_below: float) -> int:
        with self.db:
            cursor = self.db.execute("INSERT INTO runs (started, interval, mos_below) VALUES (?, ?, ?)", (isoformat(utcnow()), interval, mos_below))
        return int(cursor.lastrowid or 0)

    def end_run(self, run_id: int, result: ArchiveRun) -> None:
        with self.db:
            self.db.execute(
                "UPDATE runs SET found = ?, stored = ?, already = ?, failed = ?, finished = ? WHERE id = ?",
                (result.found, result.stored, result.already, result.failed, isoformat(utcnow()), run_id),
            )


async def find_low_mos_calls(client: GenesysClient, window: Window, mos_below: float, *, user_id: str | None = None, queue_ids: tuple[str, ...] = ()) -> list[Mapping[str, Any]]:
    """Voice calls in ``window`` with ``mediaStatsMinConversationMos`` below ``mos_below``,
    through an async details job (POST, poll its state, read its results by cursor)."""
    body = details_query(window, user_id=user_id, queue_ids=queue_ids, mos_below=mos_below)
    body.pop("orderBy", None)
    job = await client.post("/api/v2/analytics/conversations/details/jobs", body)
    job_id = job.get("jobId") if isinstance(job, dict) else None
    if not job_id:
        raise GenesysError("the analytics job was not accepted (no jobId in the answer)", path="/api/v2/analytics/conversations/details/jobs")
    deadline = time.monotonic() + JOB_DEADLINE_S
    wait = 0.2
    while True:
        status = await client.get(f"/api/v2/analytics/conversations/details/jobs/{job_id}")
        state = status.get("state") if isinstance(status, dict) else None
        if state == "FULFILLED":
            break
        if state in ("FAILED", "CANCELLED", "EXPIRED"):
            why = status.get("errorMessage") if isinstance(status, dict) else None
            raise ServerError(f"the analytics job ended {state}{': ' + str(why) if why else ''}", path="/api/v2/analytics/conversations/details/jobs")
        if time.monotonic() + wait > deadline:
            raise ServerError(f"the analytics job did not finish within {JOB_DEADLINE_S:g} s", path="/api/v2/analytics/conversations/details/jobs")
        await asyncio.sleep(wait)
        wait = min(wait * 2, 5.0)
    found: list[Mapping[str, Any]] = []
    async for page in client.cursor_pages(f"/api/v2/analytics/conversations/details/jobs/{job_id}/results"):
        for conv in page:
            mos = conv.get("mediaStatsMinConversationMos") if isinstance(conv, Mapping) else None
            if isinstance(mos, (int, float)) and mos < mos_below and conv.get("conversationId"):
                found.append(conv)
    return found


def usable(evidence: list[Evidence]) -> bool:
    """Worth storing: the conversation or its call quality came back."""
    return any(e.status == "ok" and e.kind in ("genesys.conversation", "genesys.call_quality") for e in evidence)


async def run_archive(app: Any, client: GenesysClient, archive: Archive, *, since: timedelta, mos_below: float, limit: int | None = None, user_id: str | None = None, queue_ids: tuple[str, ...] = ()) -> ArchiveRun:
    end = utcnow()
    window = Window(end - since, end)
    run_id = archive.begin_run(window.interval, mos_below)
    calls = await find_low_mos_calls(client, window, mos_below, user_id=user_id, queue_ids=queue_ids)
    stored = already = 0
    failed: list[str] = []
    for conv in calls[: limit or None]:
        cid = str(conv["conversationId"])
        if archive.has(cid):
            already += 1
            continue
        request = EvidenceRequest(config=app.config, profile="incident", conversation_id=cid, options={"archive": True})
        evidence = await app.collect_evidence(request)
        if not usable(evidence):
            failed.append(cid)
            log.warning("call not archived: its evidence could not be read; the next run tries again", conversation_id=cid)
            continue
        items = [{"analytics": {k: conv.get(k) for k in ("conversationId", "conversationStart", "conversationEnd", "mediaStatsMinConversationMos")}}]
        items = [*items, *(e.to_dict() for e in evidence)]
        if archive.store(cid, conv.get("conversationStart"), conv.get("mediaStatsMinConversationMos"), items):
            stored += 1
        else:
            already += 1
    result = ArchiveRun(window.interval, len(calls), stored, already, len(failed), tuple(failed))
    archive.end_run(run_id, result)
    return result
