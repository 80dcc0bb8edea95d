"""Each PC's latest status on its own row (the fleet page reads one table, no join and no
report bodies), and the site label a PC may carry in its config (``[hub] site``).

Revision ID: 0003
Revises: 0002
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = (
    ("site_label", sa.String(100)),
    ("status_created", sa.String(40)),
    ("status_created_ts", sa.Float),
    ("status_profile", sa.String(20)),
    ("status_ready", sa.Boolean),
    ("status_verdict", sa.String(100)),
    ("status_sentence", sa.String(300)),
    ("status_failed", sa.String(500)),
    ("status_ip", sa.String(64)),
)


def _sentence(body: str) -> str | None:
    try:
        verdicts = json.loads(body).get("verdicts") or []
        summary = verdicts[0].get("summary") if verdicts and isinstance(verdicts[0], dict) else None
    except (ValueError, AttributeError):
        return None
    return summary[:300] if isinstance(summary, str) else None


def upgrade() -> None:
    with op.batch_alter_table("pcs") as batch:
        for name, kind in COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))
    op.create_index("ix_pcs_status_ready", "pcs", ["status_ready"])
    # backfill from each PC's latest report (pcs.last_report_id, kept by ingest since 0001)
    bind = op.get_bind()
    pcs = sa.table("pcs", sa.column("install_id"), sa.column("last_report_id"), *(sa.column(n) for n, _ in COLUMNS[1:]))
    reports = sa.table("reports", sa.column("id"), sa.column("created"), sa.column("created_ts"), sa.column("profile"),
                       sa.column("ready"), sa.column("top_verdict"), sa.column("failed_checks"), sa.column("public_ip"), sa.column("body"))
    query = (sa.select(pcs.c.install_id, reports.c.created, reports.c.created_ts, reports.c.profile, reports.c.ready,
                       reports.c.top_verdict, reports.c.failed_checks, reports.c.public_ip, reports.c.body)
             .select_from(pcs.join(reports, reports.c.id == pcs.c.last_report_id)))
    rows = bind.execute(query).all()
    update = (pcs.update().where(pcs.c.install_id == sa.bindparam("pc"))
              .values(status_created=sa.bindparam("c"), status_created_ts=sa.bindparam("ts"), status_profile=sa.bindparam("p"),
                      status_ready=sa.bindparam("r"), status_verdict=sa.bindparam("v"), status_sentence=sa.bindparam("s"),
                      status_failed=sa.bindparam("f"), status_ip=sa.bindparam("ip")))
    for start in range(0, len(rows), 1000):
        batch_rows = [{"pc": r.install_id, "c": r.created, "ts": r.created_ts, "p": r.profile, "r": r.ready, "v": r.top_verdict,
                       "s": _sentence(r.body), "f": r.failed_checks, "ip": r.public_ip} for r in rows[start:start + 1000]]
        if batch_rows:
            bind.execute(update, batch_rows)


def downgrade() -> None:
    op.drop_index("ix_pcs_status_ready", "pcs")
    with op.batch_alter_table("pcs") as batch:
        for name, _ in COLUMNS:
            batch.drop_column(name)
