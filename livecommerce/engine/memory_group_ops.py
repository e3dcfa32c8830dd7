"""In-process twins of the group-buy scripts (``engine/lua/group_*.lua`` + ``_group.lua``).

Same contract as ``memory_ops.py``: each op is the script's state machine over plain dicts,
without an ``await``, so it is as atomic on one event loop as the script is on Redis.
Groups and orders are kept as JSON strings, as in Redis; tests/engine/test_group_ops.py
runs every op on both backends with one set of assertions.
"""

from __future__ import annotations

from typing import Any

from livecommerce import jsonutil
from livecommerce.engine.memory_ops import Op, OpsState

Json = dict[str, Any]


class _Campaign:
    """One op's view of a campaign's keys (what ``_group.lua`` names C, G, OPEN, O, LOG)."""

    def __init__(self, s: OpsState, keys: list[str]) -> None:
        self.s = s
        self.key, self.groups_key, self.open_key, self.orders_key, self.log = keys[:5]

    @property
    def c(self) -> dict[str, str]:
        return self.s.h(self.key)

    @property
    def groups(self) -> dict[str, str]:
        return self.s.h(self.groups_key)

    @property
    def open(self) -> dict[str, str]:
        return self.s.h(self.open_key)

    @property
    def orders(self) -> dict[str, str]:
        return self.s.h(self.orders_key)

    def summary(self) -> Json:
        c = self.c
        return {
            "left": int(c["left"]),
            "status": c["status"],
            "succeeded": int(c["succeeded"]),
            "failed": int(c["failed"]),
            "open": len(self.open),
        }

    def save_group(self, group: Json, now: int) -> Json:
        group["updated_at"] = now
        encoded = jsonutil.dumps(group)
        self.groups[group["id"]] = encoded
        self.s.append(self.log, {"g": encoded})
        if group["status"] == "open":
            self.open[group["id"]] = f"{len(group['members'])} {group['expires_at']}"
        else:
            self.open.pop(group["id"], None)
        return jsonutil.loads(encoded)  # type: ignore[no-any-return]

    def save_order(self, order: Json, status: str, now: int) -> Json:
        order["status"], order["updated_at"] = status, now
        encoded = jsonutil.dumps(order)
        self.orders[order["id"]] = encoded
        self.s.append(self.log, {"o": encoded})
        return jsonutil.loads(encoded)  # type: ignore[no-any-return]

    def give_back(self, n: int) -> bool:
        left = int(self.c["left"])
        if left < 0 or n == 0:
            return False
        self.c["left"] = str(left + n)
        if self.c["status"] == "sold_out":
            self.c["status"] = "live"
            return True
        return False

    def tier_price(self, members: int) -> int:
        price = int(self.c["price"])
        for size, tier_price in jsonutil.loads(self.c["tiers"]):
            if members >= size:
                price = tier_price
        return price

    def settle(self, group: Json, now: int, outcome: str) -> tuple[list[Json], bool]:
        base, final = int(self.c["price"]), self.tier_price(len(group["members"]))
        orders, reopened = [], False
        for member in group["members"]:
            order = jsonutil.loads(self.orders[member["order_id"]])
            if outcome == "succeeded":
                order["unit_price_cents"] = final
                order["amount_cents"] = final * order["qty"]
                order["refund_cents"] = (base - final) * order["qty"]
                orders.append(self.save_order(order, "confirmed", now))
            else:
                order["refund_cents"] = order["amount_cents"]
                orders.append(self.save_order(order, "refunding", now))
        group["status"], group["settled_at"] = outcome, now
        if outcome == "succeeded":
            group["price_cents"] = final
        else:
            reopened = self.give_back(len(group["members"]))
        self.c[outcome] = str(int(self.c[outcome]) + 1)
        return orders, reopened

    def member_orders(self, group: Json) -> list[Json]:
        return [jsonutil.loads(self.orders[m["order_id"]]) for m in group["members"]]


def _paid(group: Json) -> int:
    return sum(1 for m in group["members"] if m["status"] == "paid")


def group_init(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    camp = _Campaign(s, keys)
    if s.hashes.get(camp.key):
        return {"installed": False}
    terms, size, max_size, price, tiers, ends_at, left = (str(a) for a in args)
    camp.c.update(
        terms=terms,
        size=size,
        max=max_size,
        price=price,
        tiers=tiers,
        ends_at=ends_at,
        left=left,
        status="sold_out" if int(left) == 0 else "live",
        succeeded="0",
        failed="0",
    )
    return {"installed": True}


def group_campaign(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    camp = _Campaign(s, keys)
    if not s.hashes.get(camp.key):
        return None
    groups = [jsonutil.loads(camp.groups[gid]) for gid in camp.open] if args[0] == "1" else []
    return {"terms": jsonutil.loads(camp.c["terms"]), "campaign": camp.summary(), "groups": groups}


def group_read(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    camp = _Campaign(s, keys)
    raw = camp.groups.get(str(args[0]))
    return None if raw is None else {"group": jsonutil.loads(raw), "campaign": camp.summary()}


def group_order(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    raw = s.h(keys[3]).get(str(args[0]))
    return None if raw is None else jsonutil.loads(raw)


class _Seat:
    """``group_seat.lua``'s checks for one caller."""

    def __init__(self, camp: _Campaign, user: str, now: int) -> None:
        self.camp, self.user, self.now = camp, user, now
        self.size, self.max = int(camp.c["size"]), int(camp.c["max"])

    def refusal(self, group: Json) -> str | None:
        if group["status"] == "forming":
            return "not_found"
        if any(m["id"] == self.user for m in group["members"]):
            return "already_joined"
        if group["status"] == "failed" or self.now >= group["expires_at"]:
            return "expired"
        if group["status"] != "open" or len(group["members"]) >= self.max:
            return "group_full"
        return None

    def best_open_group(self) -> Json | None:
        found = []
        for gid, value in self.camp.open.items():
            seats, expires = (int(part) for part in value.split())
            if seats < self.max and expires > self.now:
                found.append((max(self.size - seats, 0), expires, gid))
        for _, _, gid in sorted(found):
            group: Json = jsonutil.loads(self.camp.groups[gid])
            if self.refusal(group) is None:
                return group
        return None


def group_seat(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    camp, idem = _Campaign(s, keys), keys[5]
    now, user, name, mode, group_id = int(args[0]), *(str(a) for a in args[1:5])
    order_json, group_json, idem_ttl_ms = str(args[5]), str(args[6]), int(args[7])
    prior = s.get(idem)
    if prior is not None and prior in camp.orders:
        order = jsonutil.loads(camp.orders[prior])
        group = camp.groups.get(order["ref_id"])
        return {
            "new": False,
            "order": order,
            "group": None if group is None else jsonutil.loads(group),
            "campaign": camp.summary(),
        }
    if not s.hashes.get(camp.key):
        return {"error": "not_found"}
    seat = _Seat(camp, user, now)
    chosen: Json | None = None
    if mode == "join":
        raw = camp.groups.get(group_id)
        if raw is None:
            return {"error": "not_found"}
        chosen = jsonutil.loads(raw)
        why = seat.refusal(chosen)
        if why is not None:
            return {"error": why}
    elif mode == "auto":
        chosen = seat.best_open_group()
    elif mode != "open":
        return {"error": "invalid"}
    opened = chosen is None
    if chosen is None:
        if now >= int(camp.c["ends_at"]):
            return {"error": "ended"}
        chosen = {**jsonutil.loads(group_json), "members": []}
    left = int(camp.c["left"])
    if left == 0:
        return {"error": "sold_out"}
    if left > 0:
        camp.c["left"] = str(left - 1)
        if left == 1:
            camp.c["status"] = "sold_out"
    order = jsonutil.loads(order_json)
    order["ref_id"], order["expires_at"] = chosen["id"], chosen["expires_at"]
    chosen["members"].append(
        {"id": user, "name": name, "order_id": order["id"], "status": "paying"}
    )
    saved_group = camp.save_group(chosen, now)
    saved_order = camp.save_order(order, "paying", now)
    s.set(idem, order["id"], idem_ttl_ms)
    return {
        "new": True,
        "opened": opened,
        "status_changed": left == 1,
        "order": saved_order,
        "group": saved_group,
        "campaign": camp.summary(),
    }


def group_step(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    camp = _Campaign(s, keys)
    order_id, action, now = str(args[0]), str(args[1]), int(args[2])
    raw = camp.orders.get(order_id)
    if raw is None:
        return {"error": "not_found"}
    order: Json = jsonutil.loads(raw)
    status = order["status"]

    def unchanged(code: str | None) -> Json:
        return {"order": jsonutil.loads(raw)} if code is None else {"order": order, "error": code}

    if action == "refunded":
        if status != "refunding":
            return unchanged(None)
        return {"changed": True, "order": camp.save_order(order, "refunded", now)}
    if action not in ("pay_ok", "pay_fail"):
        return {"error": "invalid"}
    if status == "declined" and action == "pay_ok":
        return unchanged("expired")
    if status != "paying":
        return unchanged(None)
    group_raw = camp.groups.get(order["ref_id"])
    if group_raw is None:
        return unchanged("conflict")
    group: Json = jsonutil.loads(group_raw)
    seat = next(i for i, m in enumerate(group["members"]) if m["order_id"] == order_id)
    if action == "pay_ok":
        return _pay_ok(camp, group, seat, order, now)
    return _pay_fail(camp, group, seat, order, now)


def _step_reply(camp: _Campaign, order: Json, group: Json, **flags: Any) -> Json:
    reply: Json = {"changed": True, "opened": False, "settled": None, "status_changed": False}
    reply.update(flags)
    reply.setdefault("orders", [])
    return {**reply, "order": order, "group": group, "campaign": camp.summary()}


def _pay_ok(camp: _Campaign, group: Json, seat: int, order: Json, now: int) -> Json:
    group["members"][seat]["status"] = "paid"
    saved_order = camp.save_order(order, "paid", now)
    opened = group["status"] == "forming"
    if opened:
        group["status"] = "open"
    orders: list[Json] = []
    settled = None
    if _paid(group) == int(camp.c["max"]):
        orders, _ = camp.settle(group, now, "succeeded")
        settled = "succeeded"
        saved_order = next(o for o in orders if o["id"] == order["id"])  # confirmed now
    saved_group = camp.save_group(group, now)
    return _step_reply(
        camp, saved_order, saved_group, opened=opened, settled=settled, orders=orders
    )


def _pay_fail(camp: _Campaign, group: Json, seat: int, order: Json, now: int) -> Json:
    saved_order = camp.save_order(order, "declined", now)
    reopened = camp.give_back(1)
    if group["status"] == "forming":  # the leader: the group never opened
        group["members"][seat]["status"] = "declined"
        group["status"] = "cancelled"
        saved_group = camp.save_group(group, now)
        del camp.groups[group["id"]]
    else:
        del group["members"][seat]
        saved_group = camp.save_group(group, now)
    return _step_reply(camp, saved_order, saved_group, status_changed=reopened)


def group_settle(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    camp = _Campaign(s, keys)
    raw = camp.groups.get(str(args[0]))
    if raw is None:
        return {"error": "not_found"}
    group: Json = jsonutil.loads(raw)
    now = int(args[1])

    def reply(orders: list[Json], **extra: Any) -> Json:
        return {**extra, "group": group, "orders": orders, "campaign": camp.summary()}

    if group["status"] in ("succeeded", "failed"):
        return reply(camp.member_orders(group))
    if now < group["expires_at"]:
        return reply([], early=True)
    paying = [m["order_id"] for m in group["members"] if m["status"] == "paying"]
    if paying:
        return reply([], paying=paying)
    outcome = "succeeded" if len(group["members"]) >= int(camp.c["size"]) else "failed"
    orders, reopened = camp.settle(group, now, outcome)
    group = camp.save_group(group, now)
    return reply(orders, changed=True, status_changed=reopened)


GROUP_OPS: dict[str, Op] = {
    "group_init": group_init,
    "group_campaign": group_campaign,
    "group_read": group_read,
    "group_order": group_order,
    "group_seat": group_seat,
    "group_step": group_step,
    "group_settle": group_settle,
}
