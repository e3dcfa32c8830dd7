"""Every Redis key and channel name, in one place.

Keys of one room share the hash tag ``{room:<id>}`` so a Lua script touching them stays in
one Redis Cluster slot. Cross-room keys (timers, users, nodes) have tags of their own.
The in-process engine uses the same strings as dictionary keys.
"""

from __future__ import annotations

PREFIX = "lc:"


def room_tag(room_id: str) -> str:
    return f"{PREFIX}{{room:{room_id}}}"


# -- fan-out ---------------------------------------------------------------------------
def room_seq(room_id: str) -> str:
    return f"{room_tag(room_id)}:seq"


def room_history(room_id: str) -> str:
    return f"{room_tag(room_id)}:hist"


def room_history_floor(room_id: str) -> str:
    """Lowest seq whose durable broadcast is still in history (older ones were trimmed)."""
    return f"{room_tag(room_id)}:hist_floor"


def room_last_values(room_id: str) -> str:
    """Hash event -> last value published by publish_if_changed."""
    return f"{room_tag(room_id)}:last"


def room_channel(room_id: str) -> str:
    return f"{room_tag(room_id)}:bus"


def user_channel(user_id: str) -> str:
    return f"{PREFIX}{{user:{user_id}}}:bus"


# -- presence --------------------------------------------------------------------------
def room_presence_counts(room_id: str) -> str:
    """Hash node_id -> local connection count."""
    return f"{room_tag(room_id)}:online"


def room_presence_expiry(room_id: str) -> str:
    """Sorted set node_id -> epoch ms after which that node's count is ignored."""
    return f"{room_tag(room_id)}:online_exp"


# -- feature state (generic helpers features build on) ---------------------------------
def room_key(room_id: str, *parts: str) -> str:
    """A feature's key inside a room's slot: ``room_key(r, "pin")``."""
    return ":".join((room_tag(room_id), *parts))


def idempotency(room_id: str, user_id: str, action: str, request_id: str) -> str:
    return room_key(room_id, "idem", action, user_id, request_id)


def rate(scope: str, *parts: str) -> str:
    return ":".join((f"{PREFIX}{{rate:{scope}}}", *parts))


# -- timers ----------------------------------------------------------------------------
TIMER_TAG = f"{PREFIX}{{timers}}"
TIMERS_DUE = f"{TIMER_TAG}:due"  # zset name -> due (or lease expiry) ms
TIMERS_PAYLOAD = f"{TIMER_TAG}:payload"  # hash name -> json
TIMERS_TOKEN = f"{TIMER_TAG}:token"  # hash name -> lease token


def timer_name(kind: str, key: str) -> str:
    return f"{kind}:{key}"


# -- durable logs and order lookup -----------------------------------------------------
def log_registry(log: str) -> str:
    """Set of the per-room stream keys that make up a durable log."""
    return f"{PREFIX}{{logs}}:{log}"


def order_locator(order_id: str) -> str:
    """order id -> "<room_id> <sale_id>", so any node can find an order's room slot."""
    return f"{PREFIX}{{order:{order_id}}}:loc"


# -- PK battles ------------------------------------------------------------------------
# A PK spans two rooms (two slots), so its keys share a tag of their own: every PK step is
# one script in one slot, and "a room is in at most one PK" is checked in that slot.
PK_TAG = f"{PREFIX}{{pk}}"


def pk_room(room_id: str) -> str:
    """room id -> the id of the PK the room is in (invited, fighting or punishing)."""
    return f"{PK_TAG}:room:{room_id}"


def pk_key(pk_id: str, *parts: str) -> str:
    return ":".join((PK_TAG, "pk", pk_id, *parts))
