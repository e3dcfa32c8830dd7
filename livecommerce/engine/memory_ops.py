"""In-process twins of the features' Lua scripts (``engine/lua/sale_*.lua``).

Each function is the same state machine as its script, over plain dicts. It runs without
an ``await``, so on one event loop it is as atomic as the script is on Redis. The engine
contract suite runs every op against both backends with the same assertions.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from livecommerce import jsonutil

LOG_MAXLEN = 100_000
#: Expired strings (idempotency records) are swept once per this many writes; reads alone
#: only drop the key they look at, and most records are never read again.
SWEEP_EVERY = 1024


@dataclass(eq=False)
class OpsState:
    """What the scripts keep in Redis hashes, strings and streams."""

    hashes: dict[str, dict[str, str]] = field(default_factory=dict)
    strings: dict[str, tuple[str, float]] = field(default_factory=dict)  # value, deadline
    logs: dict[str, deque[tuple[int, dict[str, Any]]]] = field(default_factory=dict)
    lists: dict[str, list[str]] = field(default_factory=dict)  # newest first, like LPUSH
    zsets: dict[str, tuple[dict[str, float], float]] = field(default_factory=dict)  # deadline
    registries: dict[str, set[str]] = field(default_factory=dict)  # log -> stream keys
    log_ids: int = 0
    string_writes: int = 0

    def h(self, key: str) -> dict[str, str]:
        return self.hashes.setdefault(key, {})

    def get(self, key: str) -> str | None:
        hit = self.strings.get(key)
        if hit is None or hit[1] <= time.monotonic():
            self.strings.pop(key, None)
            return None
        return hit[0]

    def set(self, key: str, value: str, ttl_ms: int) -> None:
        now = time.monotonic()
        self.strings[key] = (value, now + ttl_ms / 1000)
        self.string_writes += 1
        if self.string_writes % SWEEP_EVERY == 0:
            expired = [k for k, (_, deadline) in self.strings.items() if deadline <= now]
            for k in expired:
                del self.strings[k]

    def append(self, key: str, data: dict[str, Any]) -> None:
        log = self.logs.setdefault(key, deque(maxlen=LOG_MAXLEN))
        self.log_ids += 1
        log.append((self.log_ids, data))


Op = Callable[[OpsState, list[str], list[Any]], Any]


def sale_init(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    sale, holds, orders, _log = keys
    if s.hashes.get(sale):
        return {"installed": False}
    terms, left, status, starts_at, ends_at, limit, holds_json, *order_jsons = args
    s.h(sale).update(
        terms=terms,
        left=str(left),
        status=status,
        starts_at=str(starts_at),
        ends_at=str(ends_at),
        limit=str(limit),
    )
    s.h(holds).update({user: str(units) for user, units in jsonutil.loads(holds_json).items()})
    for raw in order_jsons:
        s.h(orders)[jsonutil.loads(raw)["id"]] = raw
    return {"installed": True}


def sale_get(s: OpsState, keys: list[str], _args: list[Any]) -> Any:
    sale = s.hashes.get(keys[0])
    if not sale:
        return None
    return {
        "terms": jsonutil.loads(sale["terms"]),
        "left": int(sale["left"]),
        "status": sale["status"],
    }


def sale_order(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    raw = s.h(keys[2]).get(str(args[0]))
    return None if raw is None else jsonutil.loads(raw)


def sale_orders(s: OpsState, keys: list[str], _args: list[Any]) -> Any:
    return [jsonutil.loads(raw) for raw in s.h(keys[2]).values()]


def sale_buy(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    sale_key, holds_key, orders_key, log_key, idem_key = keys
    now, user_id, qty, order_json, idem_ttl_ms = (
        int(args[0]),
        str(args[1]),
        int(args[2]),
        args[3],
        int(args[4]),
    )
    if qty < 1:
        return {"error": "invalid"}  # never add stock
    prior = s.get(idem_key)
    if prior is not None and prior in s.h(orders_key):
        return {"new": False, "order": jsonutil.loads(s.h(orders_key)[prior])}
    sale = s.hashes.get(sale_key)
    if not sale:
        return {"error": "not_found"}
    if now < int(sale["starts_at"]):
        return {"error": "not_started"}
    if sale["status"] == "ended" or now >= int(sale["ends_at"]):
        return {"error": "ended"}
    left = int(sale["left"])
    if left < qty:
        return {"error": "sold_out"}
    holds = s.h(holds_key)
    if int(holds.get(user_id, "0")) + qty > int(sale["limit"]):
        return {"error": "limit_exceeded"}
    left -= qty
    sale["left"] = str(left)
    status_changed = left == 0
    if status_changed:
        sale["status"] = "sold_out"
    elif sale["status"] == "scheduled":
        sale["status"] = "live"
    holds[user_id] = str(int(holds.get(user_id, "0")) + qty)
    order = jsonutil.loads(order_json)
    s.h(orders_key)[order["id"]] = order_json
    s.set(idem_key, order["id"], idem_ttl_ms)
    s.append(log_key, {"o": order_json})
    return {
        "new": True,
        "stock_changed": True,
        "status_changed": status_changed,
        "left": left,
        "order": order,
    }


def sale_buy_many(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    """sale_buy_many.lua: one sale_buy per (idempotency key; now, user, qty, order), in
    order."""
    base, ttl = keys[:4], args[0]
    return [
        sale_buy(s, [*base, idem], [*args[1 + 4 * i : 5 + 4 * i], ttl])
        for i, idem in enumerate(keys[4:])
    ]


def sale_order_step(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    sale_key, holds_key, orders_key, log_key = keys
    order_id, action, now = str(args[0]), str(args[1]), int(args[2])
    raw = s.h(orders_key).get(order_id)
    if raw is None:
        return {"error": "not_found"}
    order: dict[str, Any] = jsonutil.loads(raw)
    status = order["status"]

    def save(new_status: str, logged: bool) -> dict[str, Any]:
        order["status"], order["updated_at"] = new_status, now
        encoded = jsonutil.dumps(order)
        s.h(orders_key)[order_id] = encoded
        if logged:
            s.append(log_key, {"o": encoded})
        return order

    def give_back(new_status: str, err: str | None) -> dict[str, Any]:
        save(new_status, True)
        sale, holds = s.h(sale_key), s.h(holds_key)
        left = int(sale["left"]) + order["qty"]
        sale["left"] = str(left)
        holds[order["user_id"]] = str(int(holds.get(order["user_id"], "0")) - order["qty"])
        changed = sale["status"] == "sold_out"
        if changed:
            sale["status"] = "live"
        out = {
            "changed": True,
            "stock_changed": True,
            "status_changed": changed,
            "left": left,
            "order": order,
        }
        return out if err is None else {**out, "error": err}

    def unchanged(err: str | None) -> dict[str, Any]:
        return {"order": order} if err is None else {"order": order, "error": err}

    if action == "pay_begin":
        if status == "paid":
            return unchanged(None)
        if status == "paying":
            return unchanged("conflict")
        if status != "reserved":
            return unchanged("expired")
        if now >= order["expires_at"]:
            return give_back("expired", "expired")
        return {"order": save("paying", False)}
    if action == "pay_ok":
        if status == "paying":
            return {"changed": True, "order": save("paid", True)}
        return unchanged(None if status == "paid" else "expired")
    if action == "pay_fail":
        if status != "paying":
            return unchanged(None)
        if now < order["expires_at"]:
            return {"order": save("reserved", False)}
        return give_back("expired", None)
    if action == "expire":
        if status == "reserved" and now >= order["expires_at"]:
            return give_back("expired", None)
        return unchanged(None)
    if action == "cancel":
        if status == "reserved":
            return give_back("cancelled", None)
        return unchanged(None if status in ("cancelled", "expired") else "conflict")
    return {"error": "invalid"}


OPS: dict[str, Op] = {
    "sale_init": sale_init,
    "sale_get": sale_get,
    "sale_order": sale_order,
    "sale_orders": sale_orders,
    "sale_buy": sale_buy,
    "sale_buy_many": sale_buy_many,
    "sale_order_step": sale_order_step,
}
