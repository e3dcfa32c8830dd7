"""SQL records of group buys: campaigns, groups and compensation coupons.

On the same ``Base`` as ``models.py`` (which imports this module, so Alembic and the
metadata see these tables). Member orders live in ``orders`` (kind ``groupbuy``, ``ref_id``
the group id); refunds in the ``payments`` ledger.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from livecommerce import jsonutil
from livecommerce.persistence.models import Base, now_ms


class GroupCampaign(Base):
    """A campaign's terms, written before the engine installs it (a rebuild reads them)."""

    __tablename__ = "group_campaigns"
    __table_args__ = (Index(None, "room_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(64))
    product_id: Mapped[str] = mapped_column(String(64))
    product_price_cents: Mapped[int] = mapped_column(BigInteger)
    group_size: Mapped[int]
    max_size: Mapped[int]
    price_cents: Mapped[int] = mapped_column(BigInteger)
    tiers_json: Mapped[str] = mapped_column(Text)  # [{"size", "price_cents"}], ascending
    group_ttl_s: Mapped[int]
    quantity: Mapped[int | None]
    starts_at: Mapped[int] = mapped_column(BigInteger)
    ends_at: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)

    def terms(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "room_id": self.room_id,
            "product_id": self.product_id,
            "product_price_cents": self.product_price_cents,
            "group_size": self.group_size,
            "max_size": self.max_size,
            "price_cents": self.price_cents,
            "tiers": jsonutil.loads(self.tiers_json),
            "group_ttl_s": self.group_ttl_s,
            "quantity": self.quantity,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
        }


class GroupBuy(Base):
    """One group as the engine last logged it (status only moves forward)."""

    __tablename__ = "group_buys"
    __table_args__ = (Index(None, "campaign_id"), Index(None, "room_id"))

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    campaign_id: Mapped[str] = mapped_column(String(64))
    room_id: Mapped[str] = mapped_column(String(64))
    leader_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # forming|open|succeeded|failed|cancelled
    members: Mapped[int]  # paid members
    price_cents: Mapped[int] = mapped_column(BigInteger)  # final price once succeeded
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    settled_at: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class GroupCoupon(Base):
    """Compensation for a member of a failed group: one per member order (unique), so a
    settlement re-run after a node died never credits twice."""

    __tablename__ = "group_coupons"
    __table_args__ = (Index(None, "user_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(String(64))
    group_id: Mapped[str] = mapped_column(String(64))
    campaign_id: Mapped[str] = mapped_column(String(64))
    room_id: Mapped[str] = mapped_column(String(64))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "order_id": self.order_id,
            "user_id": self.user_id,
            "group_id": self.group_id,
            "campaign_id": self.campaign_id,
            "room_id": self.room_id,
            "amount_cents": self.amount_cents,
            "reason": self.reason,
            "created_at": self.created_at,
        }
