"""The local spool: every report is on disk before any sink sees it, and stays until all have it.

Layout of the spool folder (``<state dir>/spool`` by default)::

    <report id>.json            the report, exactly the bytes sinks receive
    <report id>.ack.<sink>      empty marker: that sink acknowledged the report
    <report id>.refused.<sink>  that sink refused the report for good (the reason inside):
                                it is not asked again
    refused/<report id>.json    a report some sink refused for good, once every other sink
    refused/<report id>.why.json  has it: kept for `agentd reports` (list, show, resend),
                                with why (bounded like the spool's count)
    .tmp-*                      a write in progress (a crash leaves it; it is swept)
    dropped.json                how many reports the size bound dropped, and the last ids
    .lock                       held (agentd.osdeps.filelock) by the process that is delivering

Why this survives a kill at any moment:
- a report is written to a temporary file, fsync'd, renamed, and the folder fsync'd: it
  is either wholly there or not there at all (then no one was told it was saved);
- an acknowledgement is a file created (and the folder fsync'd) only after the sink
  returned; killed before that, the report is sent again, and sinks key on the report
  id (HTTP ``Idempotency-Key``, an S3 object name, a file name), so it is stored once;
- a report leaves the spool only when every configured sink has its marker; its json
  goes first, markers after, so a crash between leaves only markers, which are swept.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import structlog

from agentd.errors import DeliveryError
from agentd.fileio import TMP_PREFIX, fsync_dir, pid_alive, write_atomic
from agentd.osdeps import filelock

log = structlog.get_logger("agentd.spool")

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
DROPPED_FILE = "dropped.json"
LOCK_FILE = ".lock"
REFUSED_DIR = "refused"


def safe_name(value: str, what: str) -> str:
    """Report ids and sink names become file names: refuse anything that could escape."""
    if not _SAFE.match(value) or ".." in value:
        raise DeliveryError(f"{what} {value!r} cannot be used as a file name", retryable=False)
    return value


@dataclass(frozen=True)
class SpoolEntry:
    report_id: str
    path: Path
    size: int
    acked: frozenset[str]
    refused: frozenset[str] = frozenset()
    """Sinks that refused this report for good: not asked again."""

    def read(self) -> bytes:
        return self.path.read_bytes()


@dataclass(frozen=True)
class RefusedEntry:
    """A report moved aside because a sink refused it for good."""

    report_id: str
    path: Path
    size: int
    reasons: dict[str, str]
    """Sink name -> what it answered."""
    at: str | None = None
    """When it was moved aside (ISO 8601, UTC)."""

    def read(self) -> bytes:
        return self.path.read_bytes()


@dataclass(frozen=True)
class SpoolStats:
    pending: int
    bytes: int
    dropped: int
    last_dropped: tuple[str, ...]


class Spool:
    """A folder of reports waiting for their sinks, bounded in count and bytes."""

    def __init__(self, folder: Path, *, max_bytes: int = 50 * 1024 * 1024, max_reports: int = 1000) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.max_reports = max_reports
        self.folder.mkdir(parents=True, exist_ok=True)
        self._sweep()

    # -- reading ---------------------------------------------------------------------------

    def _report_files(self) -> list[Path]:
        return sorted(p for p in self.folder.glob("*.json") if not p.name.startswith(".") and p.name != DROPPED_FILE)

    def entries(self) -> list[SpoolEntry]:
        """Pending reports, oldest first (report ids sort by time)."""
        found = []
        for path in self._report_files():
            report_id = path.name[: -len(".json")]
            try:
                size = path.stat().st_size
            except FileNotFoundError:  # delivered by another process meanwhile
                continue
            found.append(SpoolEntry(report_id, path, size, self.acked(report_id), self._markers(report_id, "refused")))
        return found

    def get(self, report_id: str) -> SpoolEntry | None:
        path = self.folder / f"{safe_name(report_id, 'report id')}.json"
        if not path.exists():
            return None
        return SpoolEntry(report_id, path, path.stat().st_size, self.acked(report_id), self._markers(report_id, "refused"))

    def acked(self, report_id: str) -> frozenset[str]:
        return self._markers(report_id, "ack")

    def _markers(self, report_id: str, kind: str) -> frozenset[str]:
        prefix = f"{report_id}.{kind}."
        return frozenset(p.name[len(prefix):] for p in self.folder.glob(f"{glob_escape(prefix)}*"))

    def refusals(self, report_id: str) -> dict[str, str]:
        """Sink name -> why it refused the report for good."""
        found = {}
        for sink in sorted(self._markers(report_id, "refused")):
            try:
                found[sink] = (self.folder / f"{report_id}.refused.{sink}").read_text(encoding="utf-8", errors="replace").strip()
            except OSError:
                continue
        return found

    def refused_entries(self) -> list[RefusedEntry]:
        """Reports moved aside because a sink refused them for good, oldest first."""
        folder = self.folder / REFUSED_DIR
        if not folder.is_dir():
            return []
        found = []
        for path in sorted(folder.glob("*.json")):
            if path.name.endswith(".why.json") or path.name.startswith("."):
                continue
            report_id = path.name[: -len(".json")]
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            why = _read_json(folder / f"{report_id}.why.json")
            reasons = why.get("refused") if isinstance(why.get("refused"), dict) else {}
            found.append(RefusedEntry(report_id, path, size, {str(k): str(v) for k, v in reasons.items()}, why.get("at")))
        return found

    def get_refused(self, report_id: str) -> RefusedEntry | None:
        safe_name(report_id, "report id")
        return next((e for e in self.refused_entries() if e.report_id == report_id), None)

    def stats(self) -> SpoolStats:
        entries = self.entries()
        dropped = self._read_dropped()
        return SpoolStats(len(entries), sum(e.size for e in entries), int(dropped.get("count", 0)), tuple(dropped.get("last", ())))

    # -- writing ---------------------------------------------------------------------------

    def put(self, report_id: str, payload: bytes) -> SpoolEntry:
        """Store a report durably (making room by dropping the oldest if the bound needs it)."""
        safe_name(report_id, "report id")
        if len(payload) > self.max_bytes:
            self._count_dropped([report_id])
            raise DeliveryError(
                f"report {report_id} ({len(payload)} bytes) is larger than the whole spool ({self.max_bytes} bytes); dropped",
                retryable=False,
            )
        existing = [e for e in self.entries() if e.report_id != report_id]
        total = sum(e.size for e in existing)
        victims = []
        while existing and (len(existing) + 1 > self.max_reports or total + len(payload) > self.max_bytes):
            oldest = existing.pop(0)
            total -= oldest.size
            victims.append(oldest.report_id)
        for victim in victims:
            self.remove(victim)
        if victims:
            self._count_dropped(victims)
            log.warning("spool full: dropped the oldest reports", dropped=victims, max_reports=self.max_reports, max_bytes=self.max_bytes)
        path = self.folder / f"{report_id}.json"
        write_atomic(path, payload, durable=True)
        return SpoolEntry(report_id, path, len(payload), self.acked(report_id))

    def ack(self, report_id: str, sink: str) -> None:
        """Record that ``sink`` holds the report (durable before this returns)."""
        marker = self.folder / f"{safe_name(report_id, 'report id')}.ack.{safe_name(sink, 'sink name')}"
        # An empty file: only its name must be durable, which the folder's fsync makes it.
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT, 0o600))
        fsync_dir(self.folder)

    def remove(self, report_id: str) -> None:
        """The report leaves the spool: json first (then it is no longer pending), markers after."""
        safe_name(report_id, "report id")
        with contextlib.suppress(FileNotFoundError):
            (self.folder / f"{report_id}.json").unlink()
        for kind in ("ack", "refused"):
            for marker in self.folder.glob(f"{glob_escape(report_id)}.{kind}.*"):
                with contextlib.suppress(FileNotFoundError):
                    marker.unlink()
        # No fsync: if a crash undoes the removal, the report is offered again, and every
        # sink keys on its id; one fsync less per delivered report.

    def reset_acks(self, report_id: str, keep: frozenset[str] = frozenset()) -> None:
        """Forget what the sinks not in ``keep`` said of the report (their acks and refusals)."""
        for kind in ("ack", "refused"):
            for marker in self.folder.glob(f"{glob_escape(report_id)}.{kind}.*"):
                if marker.name.split(f".{kind}.", 1)[1] not in keep:
                    marker.unlink(missing_ok=True)

    def refuse(self, report_id: str, sink: str, reason: str) -> None:
        """Record that ``sink`` refused the report for good (durable before this returns):
        it is not offered to that sink again."""
        marker = self.folder / f"{safe_name(report_id, 'report id')}.refused.{safe_name(sink, 'sink name')}"
        write_atomic(marker, reason.encode("utf-8"), durable=True)

    def set_aside(self, report_id: str, reasons: dict[str, str], at: str) -> Path:
        """Move a refused report out of the pending ones, into ``refused/`` with why;
        beyond ``max_reports`` refused ones, the oldest go. Returns where it now lies."""
        safe_name(report_id, "report id")
        folder = self.folder / REFUSED_DIR
        folder.mkdir(exist_ok=True)
        # why first, the report after: a crash between leaves it pending (set aside again next time)
        write_atomic(folder / f"{report_id}.why.json", json.dumps({"refused": reasons, "at": at}).encode(), durable=True)
        target = folder / f"{report_id}.json"
        (self.folder / f"{report_id}.json").replace(target)
        fsync_dir(folder)
        self.remove(report_id)
        for old in self.refused_entries()[: -self.max_reports]:
            self.drop_refused(old.report_id)
        return target

    def drop_refused(self, report_id: str) -> None:
        folder = self.folder / REFUSED_DIR
        for name in (f"{report_id}.json", f"{report_id}.why.json"):
            (folder / name).unlink(missing_ok=True)

    # -- crash recovery and the lock ---------------------------------------------------------

    def _sweep(self) -> None:
        """Remove what a killed process left half done: temporary files, orphan markers."""
        pending = {p.name[: -len(".json")] for p in self._report_files()}
        for path in self.folder.iterdir():
            name = path.name
            if name.startswith(TMP_PREFIX):
                pid = name.rsplit(".", 1)[-1]
                if not (pid.isdigit() and pid_alive(int(pid))):
                    path.unlink(missing_ok=True)
            elif ".ack." in name and name.split(".ack.", 1)[0] not in pending:
                path.unlink(missing_ok=True)
            elif ".refused." in name and name.split(".refused.", 1)[0] not in pending:
                path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def locked(self, wait_s: float = 10.0) -> Iterator[bool]:
        """Hold the delivery lock (one deliverer at a time); yields False if another
        process kept it for ``wait_s``. The kernel drops it when a holder is killed."""
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    held = filelock.try_lock(fd)
                except OSError:
                    held = None
                if held:
                    break
                if held is None or time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.05)
            try:
                yield True
            finally:
                filelock.unlock(fd)
        finally:
            os.close(fd)

    # -- the drop counter --------------------------------------------------------------------

    def _read_dropped(self) -> dict:
        return _read_json(self.folder / DROPPED_FILE)

    def _count_dropped(self, report_ids: list[str]) -> None:
        data = self._read_dropped()
        data["count"] = int(data.get("count", 0)) + len(report_ids)
        data["last"] = (list(data.get("last", [])) + report_ids)[-20:]
        write_atomic(self.folder / DROPPED_FILE, json.dumps(data).encode(), durable=True)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)
