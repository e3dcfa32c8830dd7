"""initial schema: users, rooms, products, orders, app_secrets

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ms(name: str, nullable: bool = False) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("username", sa.String(32), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("is_guest", sa.Boolean(), nullable=False),
        _ms("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "rooms",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("host_id", sa.String(64), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("stream_url", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        _ms("starts_at", nullable=True),
        _ms("created_at"),
        _ms("started_at", nullable=True),
        _ms("ended_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_rooms"),
        sa.ForeignKeyConstraint(["host_id"], ["users.id"], name="fk_rooms_host_id_users"),
    )
    op.create_index("ix_rooms_status", "rooms", ["status"])
    op.create_index("ix_rooms_host_id", "rooms", ["host_id"])
    op.create_table(
        "products",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("room_id", sa.String(64), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("price_cents", sa.BigInteger(), nullable=False),
        sa.Column("stock", sa.Integer(), nullable=False),
        sa.Column("image_url", sa.Text(), nullable=True),
        _ms("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_products"),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"], name="fk_products_room_id_rooms"),
    )
    op.create_index("ix_products_room_id", "products", ["room_id"])
    _create_orders()
    op.create_table(
        "app_secrets",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_app_secrets"),
    )


def _create_orders() -> None:
    op.create_table(
        "orders",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("room_id", sa.String(64), nullable=False),
        sa.Column("product_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ref_id", sa.String(64), nullable=False),
        sa.Column("qty", sa.Integer(), nullable=False),
        sa.Column("unit_price_cents", sa.BigInteger(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        _ms("created_at"),
        _ms("updated_at"),
        _ms("expires_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_orders"),
        sa.UniqueConstraint(
            "user_id",
            "kind",
            "ref_id",
            "request_id",
            name="uq_orders_user_id_kind_ref_id_request_id",
        ),
    )
    op.create_index("ix_orders_user_id", "orders", ["user_id"])
    op.create_index("ix_orders_room_id", "orders", ["room_id"])


def downgrade() -> None:
    for index, table in [
        ("ix_orders_room_id", "orders"),
        ("ix_orders_user_id", "orders"),
        ("ix_products_room_id", "products"),
        ("ix_rooms_host_id", "rooms"),
        ("ix_rooms_status", "rooms"),
    ]:
        op.drop_index(index, table_name=table)
    for table in ("app_secrets", "orders", "products", "rooms", "users"):
        op.drop_table(table)
