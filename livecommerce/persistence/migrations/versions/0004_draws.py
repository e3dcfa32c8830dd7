"""lucky draws

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "draws",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("room_id", sa.String(64), nullable=False),
        sa.Column("prize", sa.Text(), nullable=False),
        sa.Column("winners", sa.Integer(), nullable=False),
        sa.Column("entry_type", sa.String(16), nullable=False),
        sa.Column("keyword", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("ends_at", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("seed_hex", sa.String(64), nullable=False),
        sa.Column("commitment", sa.String(64), nullable=False),
        sa.Column("entrants_json", sa.Text(), nullable=True),
        sa.Column("winners_json", sa.Text(), nullable=True),
        sa.Column("entrants_count", sa.Integer(), nullable=False),
        sa.Column("drawn_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_draws"),
    )
    op.create_index("ix_draws_room_id", "draws", ["room_id"])


def downgrade() -> None:
    op.drop_index("ix_draws_room_id", table_name="draws")
    op.drop_table("draws")
