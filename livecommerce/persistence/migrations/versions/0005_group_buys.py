"""group buys: campaigns, groups and compensation coupons

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "group_campaigns",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("room_id", sa.String(64), nullable=False),
        sa.Column("product_id", sa.String(64), nullable=False),
        sa.Column("product_price_cents", sa.BigInteger(), nullable=False),
        sa.Column("group_size", sa.Integer(), nullable=False),
        sa.Column("max_size", sa.Integer(), nullable=False),
        sa.Column("price_cents", sa.BigInteger(), nullable=False),
        sa.Column("tiers_json", sa.Text(), nullable=False),
        sa.Column("group_ttl_s", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=True),
        sa.Column("starts_at", sa.BigInteger(), nullable=False),
        sa.Column("ends_at", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_group_campaigns"),
    )
    op.create_index("ix_group_campaigns_room_id", "group_campaigns", ["room_id"])
    op.create_table(
        "group_buys",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("campaign_id", sa.String(64), nullable=False),
        sa.Column("room_id", sa.String(64), nullable=False),
        sa.Column("leader_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.Column("price_cents", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("settled_at", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_group_buys"),
    )
    op.create_index("ix_group_buys_campaign_id", "group_buys", ["campaign_id"])
    op.create_index("ix_group_buys_room_id", "group_buys", ["room_id"])
    op.create_table(
        "group_coupons",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("group_id", sa.String(64), nullable=False),
        sa.Column("campaign_id", sa.String(64), nullable=False),
        sa.Column("room_id", sa.String(64), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_group_coupons"),
        sa.UniqueConstraint("order_id", name="uq_group_coupons_order_id"),
    )
    op.create_index("ix_group_coupons_user_id", "group_coupons", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_group_coupons_user_id", table_name="group_coupons")
    op.drop_table("group_coupons")
    op.drop_index("ix_group_buys_room_id", table_name="group_buys")
    op.drop_index("ix_group_buys_campaign_id", table_name="group_buys")
    op.drop_table("group_buys")
    op.drop_index("ix_group_campaigns_room_id", table_name="group_campaigns")
    op.drop_table("group_campaigns")
