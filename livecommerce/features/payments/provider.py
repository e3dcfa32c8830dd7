"""The PaymentProvider interface and the sandbox provider.

A real gateway (Alipay, WeChat Pay, Stripe) cannot exist on this machine, so the sandbox
stands in behind the same interface: it keeps a real ledger in SQL (one row per charge or
refund, idempotent by key) and can be told to decline, so every failure path is exercised.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from livecommerce.persistence.commerce import Payments


@dataclass(frozen=True, slots=True)
class PaymentResult:
    ok: bool
    payment_id: str
    reason: str | None = None


class PaymentProvider(Protocol):
    async def charge(
        self, *, order_id: str, user_id: str, user_name: str, amount_cents: int
    ) -> PaymentResult:
        """Charge once per ``order_id``: a retry returns the first outcome."""
        ...

    async def refund(
        self, *, order_id: str, user_id: str, amount_cents: int, reason: str
    ) -> PaymentResult:
        """Refund once per (``order_id``, ``reason``)."""
        ...

    async def charged(self, order_id: str) -> bool:
        """Whether a charge for ``order_id`` succeeded (to settle a payment whose node died
        between charging and recording it)."""
        ...


class SandboxProvider:
    def __init__(
        self,
        ledger: Payments,
        decline_prefix: str = "",
        latency_ms: int = 0,
        refund_latency_ms: int = 0,
    ) -> None:
        self.ledger = ledger
        self.decline_prefix = decline_prefix
        self.latency_ms = latency_ms
        self.refund_latency_ms = refund_latency_ms

    async def charge(
        self, *, order_id: str, user_id: str, user_name: str, amount_cents: int
    ) -> PaymentResult:
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        declined = bool(self.decline_prefix) and user_name.startswith(self.decline_prefix)
        row = await self.ledger.record(
            f"charge:{order_id}",
            order_id=order_id,
            user_id=user_id,
            kind="charge",
            amount_cents=amount_cents,
            status="declined" if declined else "succeeded",
            reason="card declined (sandbox)" if declined else None,
        )
        return PaymentResult(row.status == "succeeded", row.id, row.reason)

    async def refund(
        self, *, order_id: str, user_id: str, amount_cents: int, reason: str
    ) -> PaymentResult:
        if self.refund_latency_ms:
            await asyncio.sleep(self.refund_latency_ms / 1000)
        row = await self.ledger.record(
            f"refund:{order_id}:{reason}",
            order_id=order_id,
            user_id=user_id,
            kind="refund",
            amount_cents=amount_cents,
            status="succeeded",
            reason=reason,
        )
        return PaymentResult(True, row.id, reason)

    async def charged(self, order_id: str) -> bool:
        row = await self.ledger.by_key(f"charge:{order_id}")
        return row is not None and row.status == "succeeded"
