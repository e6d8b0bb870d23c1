"""A small async application service on the sample schema, as a FastAPI project would have one.

Like real code, it opens its own ``AsyncSession`` objects from a module-level
``async_sessionmaker`` and commits. Its engine reads its URL from the environment and
is lazy: in the tests it must never connect, since ``async_db_bind`` binds the maker
to the test's connection.
"""

from __future__ import annotations

import os

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from dbtoolkit.models import User

DATABASE_URL = os.environ.get(
    "ASYNC_SERVICE_DATABASE_URL", "postgresql+asyncpg://service@localhost/service"
)

engine = create_async_engine(DATABASE_URL)
SessionLocal = async_sessionmaker(engine, expire_on_commit=False)


async def register_user(name: str, email: str) -> int:
    """Create an active user without an organization; return its id."""
    async with SessionLocal() as session:
        user = User(name=name, email=email)
        session.add(user)
        await session.commit()
        return user.id


async def deactivate(email: str) -> int:
    """Deactivate the user with that email; return how many users were deactivated."""
    async with SessionLocal() as session:
        result = await session.execute(
            update(User).where(User.email == email, User.active).values(active=False)
        )
        await session.commit()
        return result.rowcount


async def count_users() -> int:
    """How many users there are, active or not."""
    async with SessionLocal() as session:
        return await session.scalar(select(func.count()).select_from(User)) or 0
