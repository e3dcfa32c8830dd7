"""In-process twins of the comment scripts (``engine/lua/comment_*.lua``, ``keyword_top``).

Same contract as ``memory_ops.py``: no ``await`` inside, so each runs atomically on the
event loop, and tests/engine/test_comment_ops.py runs both backends with one set of
assertions. Times are wall-clock ms, as Redis ``TIME`` is.
"""

from __future__ import annotations

import math
import time
from typing import Any

from livecommerce import jsonutil
from livecommerce.engine.memory_ops import Op, OpsState


def _now_ms() -> int:
    return int(time.time() * 1000)


def _ttl_left_ms(s: OpsState, key: str) -> int:
    hit = s.strings.get(key)
    if hit is None or s.get(key) is None:
        return 0
    return max(1, math.ceil((hit[1] - time.monotonic()) * 1000))


def take_token(s: OpsState, key: str, rate: float, burst: float, now: int) -> int:
    """``_bucket.lua``'s token bucket; the state is a string "tokens ts" with a TTL."""
    raw = s.get(key)
    tokens, ts = (float(burst), now) if raw is None else _bucket(raw)
    tokens = min(burst, tokens + max(0, now - ts) * rate / 1000)
    wait = 0
    if tokens >= 1:
        tokens -= 1
    else:
        wait = max(1, math.ceil((1 - tokens) * 1000 / rate))
    s.set(key, f"{tokens} {now}", math.ceil(burst * 1000 / rate) + 1000)
    return wait


def _bucket(raw: str) -> tuple[float, int]:
    tokens, ts = raw.split()
    return float(tokens), int(ts)


def comment_gate(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    idem, mute, settings, slow_user, bucket, draw = keys
    comment_id, idem_ttl, exempt, rate, burst, has_idem = args
    if has_idem == "1" and (prior := s.get(idem)) is not None:
        return {"dup": prior}
    if exempt != "1":
        now = _now_ms()
        muted_until = int(s.get(mute) or 0)
        if muted_until > now:
            return {"error": "muted", "until": muted_until}
        slow = int(s.hashes.get(settings, {}).get("slow_ms", "0"))
        if slow > 0 and (left := _ttl_left_ms(s, slow_user)) > 0:
            return {"error": "rate_limited", "retry_after_ms": left, "reason": "slow_mode"}
        wait = take_token(s, bucket, float(rate), float(burst), now)
        if wait > 0:
            return {"error": "rate_limited", "retry_after_ms": wait}
        if slow > 0:
            s.set(slow_user, "1", slow)
    if has_idem == "1":
        s.set(idem, str(comment_id), int(idem_ttl))
    current = s.get(draw)
    return {"ok": True} if current is None else {"ok": True, "draw": current}


def comment_mute(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    (mute,) = keys
    until, ttl = str(args[0]), int(args[1])
    if ttl > 0:
        s.set(mute, until, ttl)
    elif ttl == 0:
        s.strings.pop(mute, None)
    return {"until": int(s.get(mute) or 0)}


def comment_settings(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    h = s.h(keys[0])
    action = args[0]
    if action == "slow":
        h["slow_ms"] = str(args[1])
        h["version"] = str(int(h.get("version", "0")) + 1)
    elif action == "words":
        n_add = int(args[1])
        words = set(jsonutil.loads(h.get("words", "[]")))
        words |= set(args[2 : 2 + n_add])
        words -= set(args[2 + n_add :])
        h["words"] = jsonutil.dumps(sorted(words))
        h["version"] = str(int(h.get("version", "0")) + 1)
    return {
        "slow_ms": int(h.get("slow_ms", "0")),
        "words": jsonutil.loads(h.get("words", "[]")),
        "version": int(h.get("version", "0")),
    }


def comment_record(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    recent, log, keywords = keys
    cap, ttl_ms, log_json, n = int(args[0]), int(args[1]), args[2], int(args[3])
    items, pairs = args[4 : 4 + n], args[4 + n :]
    if cap > 0 and items:
        listed = s.lists.setdefault(recent, [])
        listed[:0] = reversed(items)
        del listed[cap:]
    s.append(log, {"c": log_json})
    if pairs:
        _sweep_zsets(s)
        counts, _ = s.zsets.get(keywords, ({}, 0.0))
        for token, count in zip(pairs[::2], pairs[1::2], strict=True):
            counts[token] = counts.get(token, 0.0) + float(count)
        s.zsets[keywords] = (counts, time.monotonic() + ttl_ms / 1000)
    return 1


def _sweep_zsets(s: OpsState) -> None:
    now = time.monotonic()
    for key in [k for k, (_, deadline) in s.zsets.items() if deadline <= now]:
        del s.zsets[key]


def comment_delete(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    recent, log = keys
    comment_id, log_json = args
    listed = s.lists.get(recent, [])
    kept = [raw for raw in listed if jsonutil.loads(raw)["id"] != comment_id]
    found = int(len(kept) != len(listed))
    s.lists[recent] = kept
    s.append(log, {"c": log_json})
    return found


def comment_recent(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    newest_first = s.lists.get(keys[0], [])[: max(0, int(args[0]))]
    return [jsonutil.loads(raw) for raw in reversed(newest_first)]


def keyword_top(s: OpsState, keys: list[str], args: list[Any]) -> Any:
    _sweep_zsets(s)
    n = max(0, int(args[0]))
    sums: dict[str, float] = {}
    for key in keys:
        counts, _ = s.zsets.get(key, ({}, 0.0))
        # ZREVRANGE order: score, then member, both descending (ties keep the highest).
        top = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:n]
        for word, count in top:
            sums[word] = sums.get(word, 0.0) + count
    return sums


COMMENT_OPS: dict[str, Op] = {
    "comment_gate": comment_gate,
    "comment_mute": comment_mute,
    "comment_settings": comment_settings,
    "comment_record": comment_record,
    "comment_delete": comment_delete,
    "comment_recent": comment_recent,
    "keyword_top": keyword_top,
}
