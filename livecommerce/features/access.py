"""Who may do what: the one place where role and room ownership are checked.

Transport calls :func:`require` for every socket event and HTTP route before it calls a
service, using the access level the handler declares. Features never re-check.
"""

from __future__ import annotations

from collections.abc import Collection
from enum import Enum

from livecommerce import errors
from livecommerce.auth import Principal, Role


class Access(Enum):
    WATCH = "watch"  # anyone, anonymous included
    ACT = "act"  # any signed-in user
    HOST = "host"  # a host (or staff/admin): create rooms
    CONTROL = "control"  # the room's own host, or staff/admin
    STAFF = "staff"  # staff or admin


def require(
    principal: Principal | None,
    access: Access,
    room_host_id: str | Collection[str] | None = None,
) -> None:
    """Raise ``unauthorized``/``forbidden`` unless ``principal`` has ``access``.

    ``room_host_id`` is the host of the room the action targets (needed for CONTROL), or
    the hosts of several rooms when any one of them may act (either side of a PK).
    """
    if access is Access.WATCH:
        return
    if principal is None:
        raise errors.Unauthorized("sign in to do that")
    if access is Access.ACT:
        return
    staff = principal.role in (Role.STAFF, Role.ADMIN)
    if staff:
        return
    if access is Access.STAFF:
        raise errors.Forbidden("staff only")
    if access is Access.HOST:
        if principal.role is Role.HOST:
            return
        raise errors.Forbidden("hosts only")
    # CONTROL: the room's own host.
    hosts = {room_host_id} if isinstance(room_host_id, str) else set(room_host_id or ())
    if principal.role is Role.HOST and principal.id in hosts:
        return
    raise errors.Forbidden("only this room's host or staff may do that")
