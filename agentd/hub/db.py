"""The hub's database: SQLAlchemy 2 Core tables on an async engine.

SQLite (aiosqlite, WAL) for a pilot, PostgreSQL (asyncpg) for a fleet. The schema is
created and changed only by Alembic migrations (``agentd/hub/migrations``); the tables
here are what the code reads and writes, kept in step with the newest migration (a test
compares them).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agentd import paths
from agentd.errors import UsageError

metadata = sa.MetaData()

enroll_keys = sa.Table(
    "enroll_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("key_hash", sa.String(200), nullable=False),
    sa.Column("note", sa.String(200), nullable=False, server_default=""),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("revoked", sa.Float, nullable=True),
    sa.Column("uses", sa.Integer, nullable=False, server_default="0"),
)

pcs = sa.Table(
    "pcs",
    metadata,
    sa.Column("install_id", sa.String(100), primary_key=True),
    sa.Column("token_id", sa.String(32), nullable=False, unique=True),
    sa.Column("token_hash", sa.String(200), nullable=False),
    sa.Column("enroll_key_id", sa.String(32), nullable=False),
    sa.Column("hostname", sa.String(255), nullable=False, server_default=""),
    sa.Column("agent_user", sa.String(255), nullable=True),
    sa.Column("enrolled", sa.Float, nullable=False),
    sa.Column("revoked", sa.Float, nullable=True),
    sa.Column("last_seen", sa.Float, nullable=True),
    sa.Column("public_ip", sa.String(64), nullable=True),
    sa.Column("connected_node", sa.String(64), nullable=True),
    sa.Column("last_preshift_id", sa.String(100), nullable=True),
    sa.Column("last_report_id", sa.String(100), nullable=True),
    sa.Column("reenroll_until", sa.Float, nullable=True),  # an administrator allowed re-enrollment until then
    sa.Column("token_check", sa.String(64), nullable=True),  # security.token_check of the secret (NULL: enrolled before it existed)
    # 0003: the site label from the PC's config ([hub] site), and its latest report's status
    # (the one it made last: last_report_id), kept at ingest so the fleet page reads one table
    sa.Column("site_label", sa.String(100), nullable=True),
    sa.Column("status_created", sa.String(40), nullable=True),
    sa.Column("status_created_ts", sa.Float, nullable=True),
    sa.Column("status_profile", sa.String(20), nullable=True),
    sa.Column("status_ready", sa.Boolean, nullable=True, index=True),
    sa.Column("status_verdict", sa.String(100), nullable=True),
    sa.Column("status_sentence", sa.String(300), nullable=True),
    sa.Column("status_failed", sa.String(500), nullable=True),
    sa.Column("status_ip", sa.String(64), nullable=True),
)

enrollments = sa.Table(
    "enrollments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("install_id", sa.String(100), nullable=False, index=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("outcome", sa.String(40), nullable=False),  # enrolled | re-enrolled | refused | allowed
    sa.Column("client", sa.String(64), nullable=True),
    sa.Column("enroll_key_id", sa.String(32), nullable=True),
    sa.Column("note", sa.String(300), nullable=False, server_default=""),
)

reports = sa.Table(
    "reports",
    metadata,
    sa.Column("id", sa.String(100), primary_key=True),
    sa.Column("install_id", sa.String(100), nullable=False, index=True),
    sa.Column("created", sa.String(40), nullable=False),
    sa.Column("created_ts", sa.Float, nullable=False, index=True),
    sa.Column("received", sa.Float, nullable=False),
    sa.Column("profile", sa.String(20), nullable=False),
    sa.Column("ready", sa.Boolean, nullable=False),
    sa.Column("top_verdict", sa.String(100), nullable=True),
    sa.Column("conversation_id", sa.String(100), nullable=True, index=True),
    sa.Column("hostname", sa.String(255), nullable=False, server_default=""),
    sa.Column("agent_user", sa.String(255), nullable=True),
    sa.Column("public_ip", sa.String(64), nullable=True),
    sa.Column("failed_checks", sa.String(500), nullable=False, server_default=""),
    sa.Column("passed_checks", sa.String(500), nullable=False, server_default=""),
    sa.Column("loss_pct", sa.Float, nullable=True),
    sa.Column("rtt_ms", sa.Float, nullable=True),
    sa.Column("mos", sa.Float, nullable=True),
    sa.Column("body", sa.Text, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("user_name", sa.String(100), nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("expires", sa.Float, nullable=False),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("install_id", sa.String(100), nullable=False, index=True),
    sa.Column("profile", sa.String(20), nullable=False),
    sa.Column("requested_by", sa.String(100), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
    sa.Column("report_id", sa.String(100), nullable=True),
    sa.Column("error", sa.String(500), nullable=True),
)

run_events = sa.Table(
    "run_events",
    metadata,
    sa.Column("run_id", sa.String(40), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("event", sa.Text, nullable=False),
)


DATABASE_ENV = "AGENTD_HUB_DATABASE"


def default_url() -> str:
    folder = paths.state_dir() / "hub"
    return f"sqlite:///{folder / 'hub.sqlite'}"


CREDENTIAL = "hub-database-url"


def credential(name: str) -> Path | None:
    """A systemd credential (``LoadCredential=``) of this name, when one was given."""
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    path = Path(folder) / name if folder else None
    return path if path is not None and path.is_file() else None


def resolve_url(url: str | None) -> str:
    """``--database``, else ``$AGENTD_HUB_DATABASE``, else the systemd credential
    ``hub-database-url`` (a URL with a password stays out of the unit), else SQLite in
    the hub's state folder."""
    if url or os.environ.get(DATABASE_ENV):
        return url or os.environ[DATABASE_ENV]
    found = credential(CREDENTIAL)
    if found is not None:
        text = found.read_text(encoding="utf-8").strip()
        if text:
            from agentd.redact import register_secret

            register_secret(text)
            return text
    return default_url()


def async_url(url: str) -> str:
    """The driver each backend uses: aiosqlite or asyncpg."""
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///"):]
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        return url
    raise UsageError(f"unsupported hub database {redact_url(url)!r}: use sqlite:///PATH or postgresql://USER@HOST/DB")


def redact_url(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def is_postgres(url: str) -> bool:
    return async_url(url).startswith("postgresql")


def make_engine(url: str, **kw: Any) -> AsyncEngine:
    full = async_url(url)
    if full.startswith("sqlite"):
        path = Path(full.split(":///", 1)[1])
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(full, connect_args={"timeout": 30}, **kw)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:  # WAL: readers never wait for the writer; FULL: an acknowledged report survives a power cut
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    # pre-ping: after a PostgreSQL restart the pool's old connections are dead; each is
    # found so on checkout (one round trip) and replaced, instead of failing a request
    return create_async_engine(full, pool_size=10, max_overflow=20, pool_pre_ping=True, **kw)
