"""Who may do what: the one place where role and room ownership are checked.

Transport calls :func:`require` for every socket event and HTTP route before it calls a
service, using the access level the handler declares. Features never re-check.
"""

from __future__ import annotations

from enum import Enum

from livecommerce import errors
from livecommerce.auth import Principal, Role


class Access(Enum):
    WATCH = "watch"  # anyone, anonymous included
    ACT = "act"  # any signed-in user
    HOST = "host"  # a host (or staff/admin): create rooms
    CONTROL = "control"  # the room's own host, or staff/admin
    STAFF = "staff"  # staff or admin


def require(principal: Principal | None, access: Access, room_host_id: str | None = None) -> None:
    """Raise ``unauthorized``/``forbidden`` unless ``principal`` has ``access``.

    ``room_host_id`` is the host of the room the action targets (needed for CONTROL).
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
    if principal.role is Role.HOST and room_host_id is not None and principal.id == room_host_id:
        return
    raise errors.Forbidden("only this room's host or staff may do that")
