"""SQLAlchemy models: the durable records (users, rooms, products, orders, secrets).

Live state (stock counters, presence, comments) lives in the engine; these tables hold
what must survive a restart. There are deliberately no ``relationship()``s: lazy loading
does not work on an async session, so repositories load what they need explicitly.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Fixed constraint names, so the hand-written migration and the models agree on every
#: database (PostgreSQL would otherwise invent its own names for them).
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ROOM_STATUSES = ("scheduled", "live", "ended")


def new_id(prefix: str) -> str:
    """An opaque id such as ``u_1f3a...``: the prefix tells a reader what it names."""
    return f"{prefix}_{secrets.token_hex(8)}"


def now_ms() -> int:
    return int(time.time() * 1000)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Guests have no username; NULLs never collide in a UNIQUE column.
    username: Mapped[str | None] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(Text)
    is_guest: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)

    def to_public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "role": self.role}


class Room(Base):
    __tablename__ = "rooms"
    __table_args__ = (Index(None, "status"), Index(None, "host_id"))

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host_id: Mapped[str] = mapped_column(String(64), ForeignKey("users.id"))
    title: Mapped[str] = mapped_column(Text)
    stream_url: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="scheduled")
    starts_at: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)
    started_at: Mapped[int | None] = mapped_column(BigInteger)
    ended_at: Mapped[int | None] = mapped_column(BigInteger)
    #: Like taps, added in batches by every node (the engine holds the live total).
    likes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    def to_public(self, host_name: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "host": {"id": self.host_id, "name": host_name},
            "stream_url": self.stream_url,
            "starts_at": self.starts_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "created_at": self.created_at,
        }


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (Index(None, "room_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(64), ForeignKey("rooms.id"))
    title: Mapped[str] = mapped_column(Text)
    price_cents: Mapped[int] = mapped_column(BigInteger)
    stock: Mapped[int]
    image_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "room_id": self.room_id,
            "title": self.title,
            "price_cents": self.price_cents,
            "stock": self.stock,
            "image_url": self.image_url,
        }


class Order(Base):
    """The durable copy of an order the engine decided on (reservations, group joins).

    No foreign keys: the engine is the source of truth and writes these asynchronously;
    a record must never be lost because a referenced row is momentarily absent.
    """

    __tablename__ = "orders"
    __table_args__ = (
        Index(None, "user_id"),
        Index(None, "room_id"),
        # A retried request (same user, same sale/group, same request_id) maps to one row.
        UniqueConstraint("user_id", "kind", "ref_id", "request_id"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64))
    room_id: Mapped[str] = mapped_column(String(64))
    product_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    ref_id: Mapped[str] = mapped_column(String(64))
    qty: Mapped[int]
    unit_price_cents: Mapped[int] = mapped_column(BigInteger)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    request_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)
    updated_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)
    expires_at: Mapped[int | None] = mapped_column(BigInteger)

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "room_id": self.room_id,
            "product_id": self.product_id,
            "kind": self.kind,
            "ref_id": self.ref_id,
            "qty": self.qty,
            "unit_price_cents": self.unit_price_cents,
            "amount_cents": self.amount_cents,
            "status": self.status,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "expires_at": self.expires_at,
        }


class AppSecret(Base):
    """Values every node must agree on (e.g. the JWT key when none is configured)."""

    __tablename__ = "app_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class FlashSale(Base):
    """A flash sale's terms. Live stock and holds are the engine's; this row is what a
    restart (or a flushed Redis) rebuilds them from, with the orders."""

    __tablename__ = "flash_sales"
    __table_args__ = (Index(None, "room_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(64))
    product_id: Mapped[str] = mapped_column(String(64))
    price_cents: Mapped[int] = mapped_column(BigInteger)
    quantity: Mapped[int]
    per_user_limit: Mapped[int]
    starts_at: Mapped[int] = mapped_column(BigInteger)
    ends_at: Mapped[int] = mapped_column(BigInteger)
    hold_s: Mapped[int]
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)

    def terms(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "room_id": self.room_id,
            "product_id": self.product_id,
            "price_cents": self.price_cents,
            "quantity": self.quantity,
            "per_user_limit": self.per_user_limit,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "hold_s": self.hold_s,
        }


class Payment(Base):
    """The sandbox payment provider's ledger: one row per charge or refund attempt.

    ``idempotency_key`` is unique, so a retried charge or refund is recorded once."""

    __tablename__ = "payments"
    __table_args__ = (Index(None, "order_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(160), unique=True)
    order_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # charge | refund
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))  # succeeded | declined
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "order_id": self.order_id,
            "user_id": self.user_id,
            "kind": self.kind,
            "amount_cents": self.amount_cents,
            "status": self.status,
            "reason": self.reason,
            "created_at": self.created_at,
        }


class Comment(Base):
    """A bullet comment as sent (moderation audit, replay beyond the engine's history).
    Written in batches from the engine's comment log, never on the sender's path."""

    __tablename__ = "comments"
    __table_args__ = (Index(None, "room_id", "created_at"), Index(None, "user_id"))

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(64))
    user_name: Mapped[str] = mapped_column(Text)
    user_role: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger)
    deleted_by: Mapped[str | None] = mapped_column(String(64))

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "room_id": self.room_id,
            "user": {"id": self.user_id, "name": self.user_name, "role": self.user_role},
            "text": self.text,
            "at": self.created_at,
            "deleted_at": self.deleted_at,
            "deleted_by": self.deleted_by,
        }


class ModerationAction(Base):
    """Audit trail: who did what to whom in which room, when and why."""

    __tablename__ = "moderation_actions"
    __table_args__ = (Index(None, "room_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(64))
    actor_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    target_user_id: Mapped[str | None] = mapped_column(String(64))
    target_comment_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)  # JSON: duration, words, interval
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "room_id": self.room_id,
            "actor_id": self.actor_id,
            "action": self.action,
            "target_user_id": self.target_user_id,
            "target_comment_id": self.target_comment_id,
            "detail": self.detail,
            "reason": self.reason,
            "created_at": self.created_at,
        }


class Draw(Base):
    """A lucky draw. ``seed_hex`` stays secret until the draw is drawn; ``commitment``
    (its SHA-256) is public from the start, so the result can be checked by anyone."""

    __tablename__ = "draws"
    __table_args__ = (Index(None, "room_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(64))
    prize: Mapped[str] = mapped_column(Text)
    winners: Mapped[int]
    entry_type: Mapped[str] = mapped_column(String(16))  # comment | anyone
    keyword: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)
    ends_at: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | drawn
    seed_hex: Mapped[str] = mapped_column(String(64))
    commitment: Mapped[str] = mapped_column(String(64))
    entrants_json: Mapped[str | None] = mapped_column(Text)  # ids in the order used
    winners_json: Mapped[str | None] = mapped_column(Text)  # [{"id", "name"}]
    entrants_count: Mapped[int] = mapped_column(default=0)
    drawn_at: Mapped[int | None] = mapped_column(BigInteger)


class PkBattle(Base):
    """A settled PK: written once, by the step that ended the fight."""

    __tablename__ = "pk_battles"
    __table_args__ = (Index(None, "room_a"), Index(None, "room_b"))

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    room_a: Mapped[str] = mapped_column(String(64))
    room_b: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[int] = mapped_column(BigInteger)
    ended_at: Mapped[int] = mapped_column(BigInteger)
    score_a: Mapped[int] = mapped_column(BigInteger)
    score_b: Mapped[int] = mapped_column(BigInteger)
    winner_room_id: Mapped[str | None] = mapped_column(String(64))
    final_json: Mapped[str] = mapped_column(Text)  # the pk as announced at the end
    settled_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)


# Group-buy tables live in their own module on this Base; importing it here lets Alembic
# and Base.metadata see them.
from livecommerce.persistence import groupbuy_models as _groupbuy_models  # noqa: E402, F401
from livecommerce.persistence import metrics_models as _metrics_models  # noqa: E402, F401
