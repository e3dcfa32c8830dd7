"""bullet comments, moderation audit, room like totals

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rooms") as batch:
        batch.add_column(sa.Column("likes", sa.BigInteger(), nullable=False, server_default="0"))
    op.create_table(
        "comments",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("room_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("user_name", sa.Text(), nullable=False),
        sa.Column("user_role", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("deleted_at", sa.BigInteger(), nullable=True),
        sa.Column("deleted_by", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_comments"),
    )
    op.create_index("ix_comments_room_id_created_at", "comments", ["room_id", "created_at"])
    op.create_index("ix_comments_user_id", "comments", ["user_id"])
    op.create_table(
        "moderation_actions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("room_id", sa.String(64), nullable=False),
        sa.Column("actor_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target_user_id", sa.String(64), nullable=True),
        sa.Column("target_comment_id", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_moderation_actions"),
    )
    op.create_index(
        "ix_moderation_actions_room_id_created_at",
        "moderation_actions",
        ["room_id", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_moderation_actions_room_id_created_at", table_name="moderation_actions")
    op.drop_table("moderation_actions")
    op.drop_index("ix_comments_user_id", table_name="comments")
    op.drop_index("ix_comments_room_id_created_at", table_name="comments")
    op.drop_table("comments")
    with op.batch_alter_table("rooms") as batch:
        batch.drop_column("likes")
