"""Enrollment that cannot be taken over: an administrator's window for re-enrolling a PC
(``agentd hub pc allow-reenroll``) and the log of every enrollment and refused attempt;
a SHA-256 check of each install token, so a reconnecting fleet costs no argon2.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pcs") as batch:
        batch.add_column(sa.Column("reenroll_until", sa.Float, nullable=True))
        batch.add_column(sa.Column("token_check", sa.String(64), nullable=True))
    op.create_table(
        "enrollments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("install_id", sa.String(100), nullable=False, index=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("outcome", sa.String(40), nullable=False),
        sa.Column("client", sa.String(64), nullable=True),
        sa.Column("enroll_key_id", sa.String(32), nullable=True),
        sa.Column("note", sa.String(300), nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("enrollments")
    with op.batch_alter_table("pcs") as batch:
        batch.drop_column("reenroll_until")
        batch.drop_column("token_check")
