"""SQL records of the staff dashboard: per-period rollups of a room's live numbers.

On the same ``Base`` as ``models.py`` (which imports this module, so Alembic and the
metadata see the table). One row per room per period (a minute by default), written by the
one node that won the period's election; counts are what happened during the period.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from livecommerce import jsonutil
from livecommerce.persistence.models import Base


class MetricsMinute(Base):
    __tablename__ = "metrics_minutes"
    __table_args__ = (Index(None, "at"),)

    room_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # period start, epoch ms
    period_s: Mapped[int]
    online: Mapped[int]
    peak_online: Mapped[int]
    comments: Mapped[int] = mapped_column(BigInteger)
    likes: Mapped[int] = mapped_column(BigInteger)
    orders: Mapped[int] = mapped_column(BigInteger)
    gmv_cents: Mapped[int] = mapped_column(BigInteger)
    buyers: Mapped[int]  # distinct buyers in the room so far (not per period)
    products_json: Mapped[str] = mapped_column(Text)  # {product_id: units paid in the period}

    def to_public(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "period_s": self.period_s,
            "online": self.online,
            "peak_online": self.peak_online,
            "comments": self.comments,
            "likes": self.likes,
            "orders": self.orders,
            "gmv_cents": self.gmv_cents,
            "buyers": self.buyers,
            "products": jsonutil.loads(self.products_json),
        }
