"""The first schema: enrollment keys, PCs, reports, users, sessions, runs and their events.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "enroll_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("key_hash", sa.String(200), nullable=False),
        sa.Column("note", sa.String(200), nullable=False, server_default=""),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("revoked", sa.Float, nullable=True),
        sa.Column("uses", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "pcs",
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
    )
    op.create_table(
        "reports",
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
    op.create_table(
        "users",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
    )
    op.create_table(
        "sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("user_name", sa.String(100), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("expires", sa.Float, nullable=False),
    )
    op.create_table(
        "runs",
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
    op.create_table(
        "run_events",
        sa.Column("run_id", sa.String(40), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("event", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("run_events", "runs", "sessions", "users", "reports", "pcs", "enroll_keys"):
        op.drop_table(table)
