"""The async side: an AsyncSession isolated like db_session, and factories that create through it.

``isolated_async_session`` is ``isolated_session`` for an ``AsyncEngine``: an outer
transaction never committed, and an ``AsyncSession`` in SAVEPOINTs inside it
(``join_transaction_mode="create_savepoint"``). factory_boy has no async strategy, so
``create_async`` builds the object with the factory (its SubFactories built with it)
and adds and flushes it through the session: the same factories serve both sides.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, asynccontextmanager
from typing import Any

from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from dbtoolkit.errors import ASYNC_EXTRA, ConfigError
from dbtoolkit.seeding import Current, build_batch

try:  # needs greenlet, which only the async extra installs
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
except ImportError:
    raise ConfigError(ASYNC_EXTRA) from None

_session: Current[AsyncSession] = Current(
    "an async factory helper ran outside an async database test; request the "
    "async_db_session fixture in this test, or pass session="
)


def unpooled_engine(url: URL) -> AsyncEngine:
    """An AsyncEngine without a pool: each connection is opened and closed in one loop."""
    return create_async_engine(url, poolclass=NullPool)


@asynccontextmanager
async def isolated_async_session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """Yield an AsyncSession whose every change, committed or not, is undone on exit.

    Objects are not expired on commit (``expire_on_commit=False``): after a commit an
    attribute access would have to load lazily, which async code cannot do implicitly.
    """
    async with engine.connect() as connection:
        transaction = await connection.begin()
        session = AsyncSession(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        try:
            yield session
        finally:
            await session.close()
            if transaction.is_active:
                await transaction.rollback()


def current_async_session() -> AsyncSession:
    """Return the running test's AsyncSession, which ``create_async`` uses by default."""
    return _session.get()


def activate(session: AsyncSession) -> AbstractContextManager[AsyncSession]:
    """Make ``session`` the one ``create_async`` uses, for the block."""
    return _session.activate(session)


async def create_async(
    factory: type[Any], *, session: AsyncSession | None = None, **attributes: Any
) -> Any:
    """Create one object with a factory_boy factory through an AsyncSession.

    The factory builds the object and its SubFactories (``factory.build``); the
    session adds and flushes them, so the rows exist and ids are set. Post-generation
    hooks that create rows with the factory's own (sync) strategy are not supported.
    """
    return (await create_batch_async(factory, 1, session=session, **attributes))[0]


async def create_batch_async(
    factory: type[Any], count: int, *, session: AsyncSession | None = None, **attributes: Any
) -> list[Any]:
    """Create ``count`` objects with a factory through an AsyncSession, in one flush.

    The factory is factory_boy's or polyfactory's; either only builds the objects.
    """
    target = session if session is not None else current_async_session()
    objects = build_batch(factory, count, attributes)
    target.add_all(objects)
    await target.flush()
    return objects
