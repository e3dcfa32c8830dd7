"""Auth: password hashing, tokens, guests, logins and the shared secret."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest

from livecommerce import auth as auth_module
from livecommerce import errors
from livecommerce.auth import (
    Auth,
    Principal,
    Role,
    hash_password,
    resolve_secret,
    verify_password,
)
from livecommerce.persistence.db import Database
from livecommerce.persistence.migrate import migrate
from livecommerce.persistence.repositories import Secrets, Users

SECRET = "a-test-secret-long-enough-for-hs256-and-even-for-hs512-0123456789"


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    await migrate(db_url)
    database = Database(db_url)
    yield database
    await database.close()


@pytest.fixture
def auth(db: Database) -> Auth:
    return Auth(Users(db), SECRET, token_ttl_s=3600)


def test_roles_and_principal() -> None:
    assert Role("staff") is Role.STAFF and Role["staff"] is Role.STAFF
    assert str(Role.host) == "host" and [str(r) for r in Role] == [
        "viewer",
        "host",
        "staff",
        "admin",
    ]
    viewer, host = Principal("u_1", "V", Role.viewer), Principal("u_2", "H", Role.host)
    staff, admin = Principal("u_3", "S", Role.staff), Principal("u_4", "A", Role.admin)
    assert [p.is_staff for p in (viewer, host, staff, admin)] == [False, False, True, True]
    assert [p.can_host for p in (viewer, host, staff, admin)] == [False, True, True, True]
    assert host.to_public() == {"id": "u_2", "name": "H", "role": "host"}
    with pytest.raises(AttributeError):
        host.role = Role.admin  # type: ignore[misc]


def test_password_hashing() -> None:
    hashed = hash_password("hunter22")
    assert hashed != "hunter22" and verify_password(hashed, "hunter22")
    assert verify_password(hashed, "hunter23") is False
    assert verify_password("not-a-hash", "hunter22") is False


async def test_guest_token_round_trip(auth: Auth, db: Database) -> None:
    token, user = await auth.guest("  Ann  ")
    assert (user.name, user.role, user.is_guest, user.username) == ("Ann", "viewer", True, None)
    assert auth.verify(token) == Principal(user.id, "Ann", Role.viewer)
    stored = await Users(db).get(user.id)
    assert stored is not None and stored.is_guest


@pytest.mark.parametrize("name", ["", "   ", "x" * 33])
async def test_guest_name_is_validated(auth: Auth, name: str) -> None:
    with pytest.raises(errors.Invalid) as info:
        await auth.guest(name)
    assert "name" in info.value.to_dict()["fields"]


async def test_guest_name_of_32_characters_is_fine(auth: Auth) -> None:
    _, user = await auth.guest("x" * 32)
    assert user.name == "x" * 32


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "u_1", "name": "N", "role": "viewer", "iat": now, "exp": now + 60} | over


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "",
        "a.b.c",
        jwt.encode(_claims(exp=int(time.time()) - 5), SECRET, algorithm="HS256"),
        jwt.encode(_claims(), "another-secret-that-is-long-enough-too", algorithm="HS256"),
        jwt.encode(_claims(role="emperor"), SECRET, algorithm="HS256"),
        jwt.encode({k: v for k, v in _claims().items() if k != "sub"}, SECRET, algorithm="HS256"),
        jwt.encode(_claims(), SECRET, algorithm="HS512"),
    ],
    ids=["garbage", "empty", "dots", "expired", "other-key", "bad-role", "no-sub", "hs512"],
)
def test_bad_tokens_are_unauthorized(auth: Auth, token: str) -> None:
    with pytest.raises(errors.Unauthorized, match="invalid or expired token"):
        auth.verify(token)


def test_unsigned_and_non_string_tokens_are_unauthorized(auth: Auth) -> None:
    unsigned = jwt.encode(_claims(), None, algorithm="none")
    for token in (unsigned, None, 42):
        with pytest.raises(errors.Unauthorized):
            auth.verify(token)  # type: ignore[arg-type]


async def test_tampered_token_is_unauthorized(auth: Auth) -> None:
    token, _ = await auth.guest("Ann")
    header, payload, signature = token.split(".")
    forged = jwt.encode(_claims(role="admin"), "x" * 40, algorithm="HS256").split(".")[1]
    for bad in (f"{header}.{forged}.{signature}", f"{header}.{payload}.{signature[:-2]}AA"):
        with pytest.raises(errors.Unauthorized):
            auth.verify(bad)


async def test_expiry_follows_ttl(auth: Auth, monkeypatch: pytest.MonkeyPatch) -> None:
    _, user = await auth.guest("Ann")
    now = time.time()
    with monkeypatch.context() as m:  # issue two tokens as if some time ago
        m.setattr(time, "time", lambda: now - 3590)
        fresh = auth.issue(user)
        m.setattr(time, "time", lambda: now - 3610)
        stale = auth.issue(user)
    assert auth.verify(fresh).id == user.id
    with pytest.raises(errors.Unauthorized):
        auth.verify(stale)


async def test_login(auth: Auth, monkeypatch: pytest.MonkeyPatch) -> None:
    created = await auth.add_user("anchor", "s3cret!", "host")
    token, user = await auth.login("anchor", "s3cret!")
    assert user.id == created.id and auth.verify(token).role is Role.host
    checked: list[str] = []
    real = auth_module.verify_password

    def spy(password_hash: str, password: str) -> bool:
        checked.append(password)
        return real(password_hash, password)

    monkeypatch.setattr(auth_module, "verify_password", spy)
    for username, password in [("anchor", "wrong!!"), ("ghost", "s3cret!"), ("", "")]:
        with pytest.raises(errors.Unauthorized, match="wrong username or password"):
            await auth.login(username, password)
    # Unknown users are checked against a dummy hash too, costing the same time.
    assert checked == ["wrong!!", "s3cret!", ""]


async def test_guests_cannot_log_in(auth: Auth) -> None:
    _, guest = await auth.guest("Ann")
    with pytest.raises(errors.Unauthorized):
        await auth.login(guest.name, "")


async def test_add_user_validation(auth: Auth) -> None:
    with pytest.raises(errors.Invalid) as info:
        await auth.add_user("a b", "12345", "emperor")
    assert set(info.value.to_dict()["fields"]) == {"username", "password", "role"}
    for username in ("ab", "x" * 33, "bad/name", "tab\t"):
        with pytest.raises(errors.Invalid):
            await auth.add_user(username, "long-enough", "viewer")
    user = await auth.add_user("Ok_name.1-2", "123456", Role.staff)
    assert (user.username, user.name, user.role, user.is_guest) == (
        "Ok_name.1-2", "Ok_name.1-2", "staff", False,
    )  # fmt: skip
    assert user.password_hash and user.password_hash != "123456"
    with pytest.raises(errors.Conflict):
        await auth.add_user("Ok_name.1-2", "other-password", "viewer")


async def test_resolve_secret(db: Database, db_url: str) -> None:
    assert await resolve_secret("configured", Secrets(db)) == "configured"
    other = Database(db_url)
    try:
        found = await asyncio.gather(
            *(resolve_secret("", Secrets(each)) for each in [db, other] * 4)
        )
    finally:
        await other.close()
    assert len(set(found)) == 1 and len(found[0]) >= 48
    # Two nodes built on the shared secret accept each other's tokens.
    first, second = Auth(Users(db), found[0], 60), Auth(Users(db), found[-1], 60)
    token, _ = await first.guest("Ann")
    assert second.verify(token).name == "Ann"
