"""A seat whose charge never reports back (its node died mid-charge) is settled by the
watchdog timer from the provider's record: charged -> paid, else the seat is released;
a charge that lands after its seat was released is refunded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from livecommerce.features.groupbuy import service as service_module
from livecommerce.features.groupbuy import settlement
from tests.conftest import ack_error
from tests.features.groupbuy.conftest import Shop, eventually, rid


@pytest.fixture(autouse=True)
def short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settlement, "PAYING_GRACE_MS", 200)
    monkeypatch.setattr(service_module, "PAYING_GRACE_MS", 200)


@pytest.mark.both_databases
async def test_a_charge_that_never_returns_frees_the_seat_and_is_refunded_later(
    shop: Shop,
) -> None:
    campaign = await shop.campaign(group_size=3, quantity=5)
    gid = (await shop.open("leader", campaign["id"]))["group"]["id"]
    provider = shop.server.node.groupbuys.provider
    charge, gate = provider.charge, asyncio.Event()

    async def stuck(**kwargs: Any) -> Any:
        await gate.wait()
        return await charge(**kwargs)

    provider.charge = stuck  # type: ignore[method-assign]
    client = await shop.member("slowpoke")
    joining = asyncio.create_task(
        client.call("groupbuy:join", {"group_id": gid, "request_id": rid()})
    )
    released = await client.wait_for("order:update", lambda d: d["order"]["status"] == "declined")
    order_id = released["order"]["id"]
    group = await shop.server.node.groupbuys.group(gid)
    assert group["pending"] == 0 and group["needed"] == 2  # the seat is free again
    gate.set()
    assert ack_error(await joining) == "expired"
    assert await shop.ledger(order_id) == [
        ("charge", "succeeded", 1000, None),
        ("refund", "succeeded", 1000, "late_payment"),
    ]
    state = await shop.server.node.groupbuys.campaign(campaign["id"])
    assert state["left"] == 4  # only the leader's unit is held


@pytest.mark.both_databases
async def test_a_charged_seat_whose_payer_vanished_becomes_paid(shop: Shop) -> None:
    campaign = await shop.campaign(group_size=2)
    gid = (await shop.open("leader", campaign["id"]))["group"]["id"]
    groups = shop.server.node.groupbuys
    step, gate, held = groups.settlement.step, asyncio.Event(), []

    async def payer_stalls(terms: Any, order_id: str, action: str) -> Any:
        if action == "pay_ok" and not held:  # the payer's own step, after its charge
            held.append(order_id)
            await gate.wait()
        return await step(terms, order_id, action)

    groups.settlement.step = payer_stalls  # type: ignore[method-assign]
    client = await shop.member("vanishing")
    joining = asyncio.create_task(
        client.call("groupbuy:join", {"group_id": gid, "request_id": rid()})
    )

    async def succeeded() -> bool:
        return (await groups.group(gid))["status"] == "succeeded"

    await eventually(succeeded)  # the watchdog found the charge and paid the seat
    gate.set()
    answer = await joining
    assert answer["ok"] and answer["order"]["status"] == "confirmed"
    assert await shop.ledger(held[0]) == [("charge", "succeeded", 1000, None)]
