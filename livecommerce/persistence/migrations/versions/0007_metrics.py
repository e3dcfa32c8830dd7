"""Staff dashboard rollups

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "metrics_minutes",
        sa.Column("room_id", sa.String(64), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("period_s", sa.Integer(), nullable=False),
        sa.Column("online", sa.Integer(), nullable=False),
        sa.Column("peak_online", sa.Integer(), nullable=False),
        sa.Column("comments", sa.BigInteger(), nullable=False),
        sa.Column("likes", sa.BigInteger(), nullable=False),
        sa.Column("orders", sa.BigInteger(), nullable=False),
        sa.Column("gmv_cents", sa.BigInteger(), nullable=False),
        sa.Column("buyers", sa.Integer(), nullable=False),
        sa.Column("products_json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("room_id", "at", name="pk_metrics_minutes"),
    )
    op.create_index("ix_metrics_minutes_at", "metrics_minutes", ["at"])


def downgrade() -> None:
    op.drop_index("ix_metrics_minutes_at", table_name="metrics_minutes")
    op.drop_table("metrics_minutes")
