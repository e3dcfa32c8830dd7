"""A restart of the in-process engine loses live groups and their timers: the next node
fails them from SQL on start-up, refunding and compensating each member exactly once."""

from __future__ import annotations

import pytest

from tests.conftest import start_app
from tests.features.groupbuy.conftest import (
    COUPON,
    ApiFactory,
    ClientFactory,
    eventually,
    make_shop,
    rid,
)


@pytest.mark.both_databases
async def test_groups_lost_in_a_restart_fail_and_refund_once(
    db_url: str, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    settings = {"min_ttl_s": 1, "coupon_cents": COUPON}
    first = await start_app(db_url, groupbuy=settings)
    shop = await make_shop(first, api_factory(first.url), client_factory)
    campaign = await shop.campaign(quantity=10)
    opened = await shop.open("leader", campaign["id"])
    joined = await shop.join("member", opened["group"]["id"])
    orders = {opened["order"]["id"], joined["order"]["id"]}
    succeeded = await shop.campaign(group_size=2)  # a settled group stays as it is
    done = await shop.open("solo", succeeded["id"])
    kept = await shop.join("pal", done["group"]["id"])
    assert kept["group"]["status"] == "succeeded"
    for client in [shop.host_client, *shop.members.values()]:
        await client.close()  # a server closes only when its sockets are gone
    await first.server.close()

    for _ in range(2):  # and a second restart repeats nothing
        node = await start_app(db_url, groupbuy=settings)
        try:
            ledger, records = node.node.payments.ledger, node.node.groupbuys.records

            async def failed(records=records) -> bool:  # type: ignore[no-untyped-def]
                group = await records.group(opened["group"]["id"])
                return group is not None and group.status == "failed"

            await eventually(failed)
            for oid in orders:
                rows = [(p.kind, p.amount_cents, p.reason) for p in await ledger.for_order(oid)]
                assert rows == [("charge", 1000, None), ("refund", 1000, "group_failed")]
                order = await node.node.orders.get(oid)
                assert order is not None and order.status == "refunded"
            coupons = await node.node.groupbuys.coupons.for_group(opened["group"]["id"])
            assert sorted(c.order_id for c in coupons) == sorted(orders)
            untouched = await node.node.orders.get(kept["order"]["id"])
            assert untouched is not None and untouched.status == "confirmed"
        finally:
            await node.server.close()

    last = await start_app(db_url, groupbuy=settings)
    try:  # the campaign goes on: reinstalled in the engine, with every unit back
        token, _ = await api_factory(last.url).guest("newcomer")
        client = await client_factory(last.url, token)
        payload = {"campaign_id": campaign["id"], "request_id": rid()}
        reopened = await client.ok("groupbuy:open", payload)
        assert reopened["group"]["status"] == "open"
        state = await last.node.groupbuys.campaign(campaign["id"])
        assert state["left"] == 9 and [g["id"] for g in state["groups"]] == [
            reopened["group"]["id"]
        ]
        await client.close()
    finally:
        await last.server.close()
