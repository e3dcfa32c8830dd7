"""In-process twins of the PK scripts (``engine/lua/pk_*.lua``): same state machines, no
``await`` inside, checked against Redis by tests/engine/test_pk_ops.py."""

from __future__ import annotations

from typing import Any

from livecommerce.engine.memory_ops import Op, OpsState

_INTS = ("duration_ms", "punish_ms", "invited_at", "lapse_at", "started_at", "ends_at",
         "ended_at", "punish_until", "score_a", "score_b")  # fmt: skip


def _top(s: OpsState, key: str) -> list[list[Any]]:
    counts, _ = s.zsets.get(key, ({}, 0.0))
    ranked = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:3]
    return [[user, int(score)] for user, score in ranked]


def _render(s: OpsState, keys: list[str], changed: bool) -> dict[str, Any]:
    h = s.hashes.get(keys[0])
    if not h:
        return {"error": "not_found"}
    state: dict[str, Any] = {k: h.get(k) for k in ("id", "a", "b", "mode", "phase")}
    state.update({k: int(h.get(k, "0")) for k in _INTS})
    state.update(winner=h.get("winner", ""), changed=changed)
    state.update(top_a=_top(s, keys[1]), top_b=_top(s, keys[2]))
    return state


def pk_invite(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    pk, _, _, map_a, map_b = keys
    pk_id, a, b, mode, duration, punish, now, lapse_at = (str(x) for x in args)
    for room, key in ((a, map_a), (b, map_b)):
        if key in s.strings:
            return {"error": "busy", "room_id": room}
    s.strings[map_a] = s.strings[map_b] = (pk_id, float("inf"))
    s.hashes[pk] = {"id": pk_id, "a": a, "b": b, "mode": mode, "duration_ms": duration,
                    "punish_ms": punish, "invited_at": now, "lapse_at": lapse_at,
                    "phase": "invited"}  # fmt: skip
    return _render(s, keys, True)


def pk_step(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    h = s.hashes.get(keys[0])
    if not h:
        return {"error": "not_found"}
    action, now = str(args[0]), int(args[1])
    phase = h["phase"]

    def release() -> None:
        for key in keys[3:5]:
            if s.get(key) == h["id"]:
                s.strings.pop(key, None)

    if action in ("accept", "decline", "lapse"):
        if phase != "invited":
            return _render(s, keys, False)
        lapse_at = int(h["lapse_at"])
        if action == "lapse" or now >= lapse_at:
            if action != "lapse" and now < lapse_at:
                return _render(s, keys, False)
            h.update(phase="lapsed", ended_at=str(now))
            release()
        elif action == "decline":
            h.update(phase="declined", ended_at=str(now))
            release()
        else:
            h.update(phase="fighting", started_at=str(now),
                     ends_at=str(now + int(h["duration_ms"])))  # fmt: skip
        return _render(s, keys, True)
    if action == "end":
        if phase != "fighting":
            return _render(s, keys, False)
        sa, sb = int(h.get("score_a", "0")), int(h.get("score_b", "0"))
        winner = h["a"] if sa > sb else h["b"] if sb > sa else ""
        h.update(
            phase="punishing",
            ended_at=str(min(now, int(h["ends_at"]))),
            winner=winner,
            punish_until=str(now + int(h["punish_ms"])),
            score_a=str(sa),
            score_b=str(sb),
        )
        return _render(s, keys, True)
    if action == "finish":
        if phase != "punishing":
            return _render(s, keys, False)
        h["phase"] = "ended"
        release()
        return _render(s, keys, True)
    return {"error": "invalid"}


def pk_score(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    h = s.hashes.get(keys[0], {})
    room_id, user_id, amount, now = str(args[0]), str(args[1]), int(args[2]), int(args[3])
    if h.get("phase") != "fighting" or now >= int(h["ends_at"]):
        return {"counted": False}
    field = "score_a" if room_id == h["a"] else "score_b" if room_id == h["b"] else None
    if field is None:
        return {"counted": False}
    h[field] = str(int(h.get(field, "0")) + amount)
    counts, deadline = s.zsets.get(keys[1], ({}, float("inf")))
    counts[user_id] = counts.get(user_id, 0.0) + amount
    s.zsets[keys[1]] = (counts, deadline)
    return {"counted": True}


def pk_get(s: OpsState, keys: list[str], _args: list[Any]) -> Any:
    return _render(s, keys, False)


def pk_current(s: OpsState, keys: list[str], _args: list[Any]) -> Any:
    return {"pk_id": s.get(keys[0])}


PK_OPS: dict[str, Op] = {
    "pk_invite": pk_invite,
    "pk_step": pk_step,
    "pk_score": pk_score,
    "pk_get": pk_get,
    "pk_current": pk_current,
}
