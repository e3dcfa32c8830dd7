"""Who is calling: password hashing, signed tokens, guests and password logins.

Tokens are stateless HS256 JWTs, so any node that knows the secret can verify them without
a database round trip. All nodes must therefore share the secret: configure one, or let
``resolve_secret`` keep a generated one in the shared database.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import Argon2Error, InvalidHashError

from livecommerce import errors
from livecommerce.persistence.models import User
from livecommerce.persistence.repositories import Secrets, Users


class Role(StrEnum):
    VIEWER = "viewer"
    HOST = "host"
    STAFF = "staff"
    ADMIN = "admin"
    # Lower-case aliases of the same members (``Role.host is Role.HOST``), so code may
    # spell a role like its wire value. Iteration yields the four members above only.
    viewer = "viewer"
    host = "host"
    staff = "staff"
    admin = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    id: str
    name: str
    role: Role

    @classmethod
    def of(cls, user: User) -> Principal:
        return cls(id=user.id, name=user.name, role=Role(user.role))

    @property
    def is_staff(self) -> bool:
        return self.role in (Role.STAFF, Role.ADMIN)

    @property
    def can_host(self) -> bool:
        return self.role in (Role.HOST, Role.STAFF, Role.ADMIN)

    def to_public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "role": str(self.role)}


_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (Argon2Error, InvalidHashError):  # mismatch, corrupt hash, ...
        return False


@cache
def _dummy_hash() -> str:
    # Compared against when the username is unknown, so a miss costs as much as a wrong
    # password and response times do not reveal which usernames exist.
    return hash_password(secrets.token_urlsafe(16))


def _check(stored: str | None, password: str) -> bool:
    return verify_password(stored or _dummy_hash(), password)


USERNAME = re.compile(r"[A-Za-z0-9_.-]{3,32}")
MIN_PASSWORD = 6
MAX_NAME = 32
_ALGORITHM = "HS256"
_CLAIMS = ["sub", "name", "role", "iat", "exp"]


class Auth:
    def __init__(self, users: Users, secret: str, token_ttl_s: int) -> None:
        self._users = users
        self._secret = secret
        self._ttl_s = token_ttl_s

    def issue(self, user: User | Principal) -> str:
        now = int(time.time())
        claims = {
            "sub": user.id,
            "name": user.name,
            "role": str(user.role),
            "iat": now,
            "exp": now + self._ttl_s,
        }
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM)

    def verify(self, token: str) -> Principal:
        """The caller a token names; Unauthorized for anything wrong with it."""
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=[_ALGORITHM], options={"require": _CLAIMS}
            )
            return Principal(
                id=str(claims["sub"]), name=str(claims["name"]), role=Role(claims["role"])
            )
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            raise errors.Unauthorized("invalid or expired token") from exc

    async def guest(self, name: str) -> tuple[str, User]:
        clean = name.strip() if isinstance(name, str) else ""
        if not 1 <= len(clean) <= MAX_NAME:
            raise errors.Invalid(
                "name must be 1..32 characters", fields={"name": "1..32 characters"}
            )
        user = await self._users.create(name=clean, role=Role.VIEWER, is_guest=True)
        return self.issue(user), user

    async def login(self, username: str, password: str) -> tuple[str, User]:
        user = await self._users.by_username(username) if isinstance(username, str) else None
        stored = user.password_hash if user is not None else None
        # Argon2 takes tens of milliseconds of CPU: keep it off the event loop.
        ok = await asyncio.to_thread(_check, stored, str(password))
        if user is None or stored is None or not ok:
            raise errors.Unauthorized("wrong username or password")
        return self.issue(user), user

    async def add_user(self, username: str, password: str, role: Role | str) -> User:
        """A password user (CLI, demo seeding). Invalid input names every bad field."""
        fields = _check_new_user(username, password, role)
        if fields:
            raise errors.Invalid("invalid user", fields=fields)
        password_hash = await asyncio.to_thread(hash_password, password)
        return await self._users.create(
            name=username, role=Role(role), username=username, password_hash=password_hash
        )


def _check_new_user(username: str, password: str, role: Role | str) -> dict[str, str]:
    fields: dict[str, str] = {}
    if not isinstance(username, str) or not USERNAME.fullmatch(username):
        fields["username"] = "3..32 characters: letters, digits, '_', '.', '-'"
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        fields["password"] = f"at least {MIN_PASSWORD} characters"
    if role not in {r.value for r in Role}:
        fields["role"] = "one of viewer, host, staff, admin"
    return fields


async def resolve_secret(configured: str, secrets_repo: Secrets) -> str:
    """The JWT key: the configured one, else one generated once and shared via the DB."""
    if configured:
        return configured
    return await secrets_repo.get_or_create("jwt", lambda: secrets.token_urlsafe(48))
