"""In-process twins of the draw scripts (``engine/lua/draw_*.lua``): same state machines,
no ``await`` inside, checked against Redis by tests/engine/test_draw_ops.py."""

from __future__ import annotations

import math
from typing import Any

from livecommerce.engine.memory_ops import Op, OpsState


def draw_open(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    current, state = keys
    draw_id, ends_at, ttl_ms = str(args[0]), str(args[1]), int(args[2])
    found = s.get(current)
    if found is not None:
        return {"error": "busy", "draw_id": found}
    s.set(current, draw_id, ttl_ms)
    s.hashes[state] = {"status": "open", "ends_at": ends_at}
    return {"ok": True}


def draw_enter(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    state, entrants, names = keys
    user_id, name, now = str(args[0]), str(args[1]), int(args[2])
    h = s.hashes.get(state)
    if not h:
        return {"error": "not_found"}
    if h["status"] != "open" or now >= int(h["ends_at"]):
        return {"error": "ended"}
    members = s.h(entrants)
    new = user_id not in members
    if new:
        members[user_id] = "1"
        s.h(names)[user_id] = name
    return {"new": new, "count": len(members)}


def draw_here(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    now, expiry, users = int(args[0]), float(args[1]), args[2:]
    counts, _ = s.zsets.get(keys[0], ({}, math.inf))
    live = {user: at for user, at in counts.items() if at >= now}
    live.update(dict.fromkeys(users, expiry))
    s.zsets[keys[0]] = (live, math.inf)
    return 1


def draw_close(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    state, entrants, here, names, final, current = keys
    now, draw_id = int(args[0]), str(args[1])
    h = s.hashes.get(state)
    if not h:
        return {"error": "not_found"}
    if h["status"] == "open":
        present, _ = s.zsets.get(here, ({}, math.inf))
        chosen = [u for u in s.h(entrants) if present.get(u, 0) >= now]
        s.lists[final] = list(chosen)
        h["status"], h["entered"] = "closed", str(len(s.h(entrants)))
        if s.get(current) == draw_id:
            s.strings.pop(current, None)
    eligible = list(s.lists.get(final, []))
    return {
        "eligible": eligible,
        "names": {u: s.h(names).get(u, "") for u in eligible},
        "entered": int(h["entered"]),
    }


def draw_peek(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    members = s.hashes.get(keys[0], {})
    return {"count": len(members), "entered": bool(args[0]) and str(args[0]) in members}


def draw_current(s: OpsState, keys: list[str], _args: list[Any]) -> Any:
    return {"draw_id": s.get(keys[0])}


DRAW_OPS: dict[str, Op] = {
    "draw_current": draw_current,
    "draw_peek": draw_peek,
    "draw_open": draw_open,
    "draw_enter": draw_enter,
    "draw_here": draw_here,
    "draw_close": draw_close,
}
