"""Durable storage: SQLAlchemy models, repositories and Alembic migrations."""

from livecommerce.persistence.db import Database
from livecommerce.persistence.migrate import migrate
from livecommerce.persistence.models import AppSecret, Order, Product, Room, User, new_id
from livecommerce.persistence.repositories import Orders, Products, Rooms, Secrets, Users

__all__ = [
    "AppSecret",
    "Database",
    "Order",
    "Orders",
    "Product",
    "Products",
    "Room",
    "Rooms",
    "Secrets",
    "User",
    "Users",
    "migrate",
    "new_id",
]
