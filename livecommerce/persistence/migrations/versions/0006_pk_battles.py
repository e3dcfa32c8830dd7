"""PK battles

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pk_battles",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("room_a", sa.String(64), nullable=False),
        sa.Column("room_b", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("ended_at", sa.BigInteger(), nullable=False),
        sa.Column("score_a", sa.BigInteger(), nullable=False),
        sa.Column("score_b", sa.BigInteger(), nullable=False),
        sa.Column("winner_room_id", sa.String(64), nullable=True),
        sa.Column("final_json", sa.Text(), nullable=False),
        sa.Column("settled_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_pk_battles"),
    )
    op.create_index("ix_pk_battles_room_a", "pk_battles", ["room_a"])
    op.create_index("ix_pk_battles_room_b", "pk_battles", ["room_b"])


def downgrade() -> None:
    op.drop_index("ix_pk_battles_room_b", table_name="pk_battles")
    op.drop_index("ix_pk_battles_room_a", table_name="pk_battles")
    op.drop_table("pk_battles")
