"""Repositories: the only code that writes SQL. Each call is one short transaction.

Every write that could race with another process is a single conditional statement, an
insert that skips ids already stored (``ON CONFLICT DO NOTHING``) or treats the
unique-key violation as "someone else got there first", or a read-modify-write whose read
locks the rows (``FOR UPDATE``, keys always taken in id order so two writers queue rather
than deadlock; SQLite ignores it, its write transactions already run one at a time). So
the same code is correct on SQLite (several processes, one file) and on PostgreSQL (READ
COMMITTED, transactions really overlapping).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from livecommerce import errors
from livecommerce.persistence.db import Database, dialect_insert, means_unavailable
from livecommerce.persistence.models import (
    AppSecret,
    Order,
    Product,
    Room,
    User,
    new_id,
    now_ms,
)


@asynccontextmanager
async def _tx(db: Database, *, readonly: bool = False) -> AsyncIterator[AsyncSession]:
    """One transaction. A lock timeout, lost connection, unreachable server or deadlock
    becomes ``unavailable``: the transaction was rolled back, so nothing was changed."""
    try:
        async with db.session(readonly=readonly) as session, session.begin():
            yield session
    except Exception as exc:
        if means_unavailable(exc):
            raise errors.Unavailable("the database is unavailable; nothing was changed") from exc
        raise


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


async def locked(s: AsyncSession, model: Any, ids: Collection[str]) -> dict[str, Any]:
    """The rows of ``model`` with these ids, locked until the transaction ends (in id
    order: two writers with overlapping ids queue instead of deadlocking)."""
    query = select(model).where(model.id.in_(ids)).order_by(model.id).with_for_update()
    return {row.id: row for row in await s.scalars(query)}


async def upsert_rows(
    s: AsyncSession,
    db: Database,
    model: Any,
    rows: Sequence[Mapping[str, Any]],
    move: Callable[[Any, Mapping[str, Any]], None],
) -> int:
    """Write a batch of rows keyed by ``id``, applied in order; returns how many ids this
    call inserted. The first row of each id is inserted unless it is stored (``ON
    CONFLICT DO NOTHING``: a row another node inserts meanwhile is waited for, then
    skipped, never an error); every other row goes to ``move(stored, row)`` with the
    stored row locked, so two nodes' updates of one row apply one after the other.

    The conflict clause names no constraint on purpose: PostgreSQL arbitrates only the
    named ones, and two nodes inserting the same order would then collide on its other
    unique key (the request). A row skipped for another id holding its unique key is
    ``Conflict``."""
    if not rows:
        return 0
    first: dict[str, int] = {}  # id -> index of its first row
    for index, row in enumerate(rows):
        first.setdefault(row["id"], index)
    query = dialect_insert(db, model).on_conflict_do_nothing()
    # In id order, as racing writers lock the same keys: none waits for one that waits.
    done = await s.execute(query.returning(model.id), [rows[first[k]] for k in sorted(first)])
    new = set(done.scalars())
    stored = await locked(s, model, first.keys())
    if len(stored) < len(first):
        raise errors.Conflict(f"a {model.__tablename__} row already holds this unique key")
    for index, row in enumerate(rows):
        if row["id"] not in new or index != first[row["id"]]:
            move(stored[row["id"]], row)
    return len(new)


class Users:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        *,
        name: str,
        role: str,
        username: str | None = None,
        password_hash: str | None = None,
        is_guest: bool = False,
    ) -> User:
        user = User(
            id=new_id("u"),
            username=username,
            name=name,
            role=str(role),
            password_hash=password_hash,
            is_guest=is_guest,
            created_at=now_ms(),
        )
        try:
            async with _tx(self._db) as s:
                s.add(user)
        except IntegrityError as exc:
            raise errors.Conflict("username taken", fields={"username": "taken"}) from exc
        return user

    async def get(self, user_id: str) -> User | None:
        async with _tx(self._db, readonly=True) as s:
            return await s.get(User, user_id)

    async def by_username(self, username: str) -> User | None:
        async with _tx(self._db, readonly=True) as s:
            found = await s.scalars(select(User).where(User.username == username))
            return found.first()

    async def get_many(self, ids: Iterable[str]) -> dict[str, User]:
        wanted = set(ids)
        if not wanted:
            return {}
        async with _tx(self._db, readonly=True) as s:
            found = await s.scalars(select(User).where(User.id.in_(wanted)))
            return {user.id: user for user in found}


class Rooms:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        *,
        host_id: str,
        title: str,
        stream_url: str | None = None,
        starts_at: int | None = None,
    ) -> Room:
        room = Room(
            id=new_id("r"),
            host_id=host_id,
            title=title,
            stream_url=stream_url,
            status="scheduled",
            starts_at=starts_at,
            created_at=now_ms(),
        )
        try:
            async with _tx(self._db) as s:
                s.add(room)
        except IntegrityError as exc:  # the foreign key: no such host
            raise errors.NotFound("host not found") from exc
        return room

    async def get(self, room_id: str) -> Room | None:
        async with _tx(self._db, readonly=True) as s:
            return await s.get(Room, room_id)

    async def list_live(self) -> list[Room]:
        query = select(Room).where(Room.status == "live").order_by(Room.started_at.desc())
        return await self._list(query)

    async def list_by_host(self, host_id: str) -> list[Room]:
        query = select(Room).where(Room.host_id == host_id).order_by(Room.created_at.desc())
        return await self._list(query)

    async def list_all(self, limit: int = 100) -> list[Room]:
        return await self._list(select(Room).order_by(Room.created_at.desc()).limit(limit))

    async def _list(self, query: Any) -> list[Room]:
        async with _tx(self._db, readonly=True) as s:
            return list(await s.scalars(query))

    async def transition(self, room_id: str, to: str, *, from_: Collection[str]) -> Room | None:
        """Compare-and-set the status: one UPDATE guarded by ``status IN from_``, so of many
        concurrent callers (any process) exactly one wins. Returns the updated room, None
        if its status was not in ``from_``; raises NotFound for an unknown room."""
        values: dict[str, Any] = {"status": to}
        if to == "live":
            values["started_at"] = now_ms()
        elif to == "ended":
            values["ended_at"] = now_ms()
        guarded = (
            update(Room)
            .where(Room.id == room_id, Room.status.in_(list(from_)))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        async with _tx(self._db) as s:
            changed = _rowcount(await s.execute(guarded))
            room = await s.get(Room, room_id, populate_existing=True)
        if room is None:
            raise errors.NotFound("room not found")
        return room if changed else None


class Products:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        *,
        room_id: str,
        title: str,
        price_cents: int,
        stock: int,
        image_url: str | None = None,
    ) -> Product:
        product = Product(
            id=new_id("p"),
            room_id=room_id,
            title=title,
            price_cents=price_cents,
            stock=stock,
            image_url=image_url,
            created_at=now_ms(),
        )
        try:
            async with _tx(self._db) as s:
                s.add(product)
        except IntegrityError as exc:  # the foreign key: no such room
            raise errors.NotFound("room not found") from exc
        return product

    async def get(self, product_id: str) -> Product | None:
        async with _tx(self._db, readonly=True) as s:
            return await s.get(Product, product_id)

    async def list_for_room(self, room_id: str) -> list[Product]:
        query = (
            select(Product)
            .where(Product.room_id == room_id)
            .order_by(Product.created_at, Product.id)
        )
        async with _tx(self._db, readonly=True) as s:
            return list(await s.scalars(query))


_ORDER_COLUMNS = frozenset(Order.__table__.columns.keys())


class Orders:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def upsert(self, order_fields: Mapping[str, Any]) -> bool:
        """Record an order idempotently by id. True if this call inserted it; False if it
        was already there, in which case only ``status``/``updated_at`` move forward (a
        stale update, older ``updated_at``, never overwrites a newer status)."""
        # Keep only columns: callers pass the engine's order dict, which may carry extras.
        fields = {k: v for k, v in order_fields.items() if k in _ORDER_COLUMNS}
        fields.setdefault("created_at", now_ms())
        fields.setdefault("updated_at", fields["created_at"])
        if await self._refresh(fields):
            return False
        try:
            async with _tx(self._db) as s:
                s.add(Order(**fields))
        except IntegrityError:
            # Another task or process inserted it between our check and our insert.
            if not await self._refresh(fields):
                raise errors.Conflict("an order already exists for this request") from None
            return False
        return True

    async def upsert_many(self, batch: Sequence[Mapping[str, Any]]) -> int:
        """``upsert`` for a batch in one transaction (the order writer's path): new ids are
        inserted, known ones only move forward. If an order's request is already taken by
        another id, the batch falls back to one ``upsert`` per order (which names the
        conflict). Returns how many were new."""
        rows = [{k: v for k, v in o.items() if k in _ORDER_COLUMNS} for o in batch]
        for row in rows:
            row.setdefault("created_at", now_ms())
            row.setdefault("updated_at", row["created_at"])
        try:
            async with _tx(self._db) as s:
                return await upsert_rows(s, self._db, Order, rows, _move_order)
        except (IntegrityError, errors.Conflict):
            return sum([await self.upsert(row) for row in rows])

    async def _refresh(self, fields: Mapping[str, Any]) -> bool:
        """Move an existing order's status forward; False if there is no such order."""
        newer = (
            update(Order)
            .where(
                Order.id == fields["id"],
                Order.status != fields["status"],
                Order.updated_at <= fields["updated_at"],
            )
            .values(status=fields["status"], updated_at=fields["updated_at"])
            .execution_options(synchronize_session=False)
        )
        async with _tx(self._db) as s:
            exists = await s.scalar(select(Order.id).where(Order.id == fields["id"]))
            if exists is not None:
                await s.execute(newer)
        return exists is not None

    async def get(self, order_id: str) -> Order | None:
        async with _tx(self._db, readonly=True) as s:
            return await s.get(Order, order_id)

    async def list_for_user(self, user_id: str, room_id: str | None = None) -> list[Order]:
        query = select(Order).where(Order.user_id == user_id)
        if room_id is not None:
            query = query.where(Order.room_id == room_id)
        query = query.order_by(Order.created_at.desc(), Order.id)
        async with _tx(self._db, readonly=True) as s:
            return list(await s.scalars(query))


def _move_order(current: Order, row: Mapping[str, Any]) -> None:
    if current.status != row["status"] and current.updated_at <= row["updated_at"]:
        current.status, current.updated_at = row["status"], row["updated_at"]


class Secrets:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, name: str) -> str | None:
        async with _tx(self._db, readonly=True) as s:
            return await s.scalar(select(AppSecret.value).where(AppSecret.name == name))

    async def get_or_create(self, name: str, factory: Callable[[], str]) -> str:
        """The stored value, or a new one from ``factory``. When processes race, the
        first insert wins and everyone returns that value."""
        existing = await self.get(name)
        if existing is not None:
            return existing
        value = factory()
        try:
            async with _tx(self._db) as s:
                s.add(AppSecret(name=name, value=value))
        except IntegrityError:
            winner = await self.get(name)
            if winner is None:  # pragma: no cover - a deleted secret; nothing deletes them
                raise
            return winner
        return value
