"""Engine keys of a campaign and the public shapes of campaigns and groups.

Pure functions: what a client sees is computed here from the engine's records and the
campaign's terms, in one place for acks, broadcasts and the join snapshot.
"""

from __future__ import annotations

from typing import Any

from livecommerce.engine import keys

#: The durable log group-buy steps append to (orders and groups on their way to SQL).
GROUP_LOG = "groupbuy"


def group_keys(room_id: str, campaign_id: str) -> list[str]:
    """KEYS of every group op: campaign hash, groups hash, open index, orders hash, log."""
    base = keys.room_key(room_id, "gb", campaign_id)
    log = keys.room_key(room_id, "log", GROUP_LOG)
    return [base, f"{base}:groups", f"{base}:open", f"{base}:orders", log]


def group_locator(group_id: str) -> str:
    """group id -> "<room_id> <campaign_id>", so any node finds a group's room slot."""
    return f"{keys.PREFIX}{{group:{group_id}}}:loc"


def campaigns_key(room_id: str) -> str:
    """Set of the room's campaign ids (the join snapshot lists the active ones)."""
    return keys.room_key(room_id, "groupbuys")


def share_url(room_id: str, group_id: str) -> str:
    return f"/rooms/{room_id}?group={group_id}"


def tier_list(terms: dict[str, Any]) -> list[tuple[int, int]]:
    """(size, price) from the base tier up, ascending."""
    base = [(int(terms["group_size"]), int(terms["price_cents"]))]
    return base + [(int(t["size"]), int(t["price_cents"])) for t in terms["tiers"]]


def price_for(terms: dict[str, Any], members: int) -> int:
    """The price of the largest tier ``members`` reach (the base price below group_size)."""
    price = int(terms["price_cents"])
    for size, tier_price in tier_list(terms):
        if members >= size:
            price = tier_price
    return price


def campaign_public(terms: dict[str, Any], counters: dict[str, Any], now: int) -> dict[str, Any]:
    status = counters["status"]
    if now >= terms["ends_at"]:
        status = "ended"
    left = counters["left"]
    return {
        **terms,
        "left": None if left < 0 else left,
        "status": status,
        "groups_open": counters["open"],
        "groups_succeeded": counters["succeeded"],
        "groups_failed": counters["failed"],
    }


def group_public(group: dict[str, Any], terms: dict[str, Any]) -> dict[str, Any]:
    paid = [m for m in group["members"] if m["status"] != "paying"]
    size, count = int(terms["group_size"]), len(paid)
    if group["status"] == "succeeded":
        price = int(group["price_cents"])
    else:
        price = price_for(terms, count)
    upcoming = [(s, p) for s, p in tier_list(terms) if s > count]
    status = "open" if group["status"] == "forming" else group["status"]
    return {
        "id": group["id"],
        "campaign_id": group["campaign_id"],
        "room_id": group["room_id"],
        "leader": group["leader"],
        "members": [{"id": m["id"], "name": m["name"]} for m in paid],
        "pending": len(group["members"]) - count,
        "size": size,
        "max_size": int(terms["max_size"]),
        "needed": max(size - count, 0),
        "status": status,
        "price_cents": price,
        "next_tier": (
            {"size": upcoming[0][0], "price_cents": upcoming[0][1]} if upcoming else None
        ),
        "created_at": group["created_at"],
        "expires_at": group["expires_at"],
        "settled_at": group.get("settled_at"),
        "share_url": share_url(group["room_id"], group["id"]),
    }
