"""The async side: one shared connection for every async test, and factories that create through it.

An async driver's connection belongs to an event loop (asyncpg's futures are its
loop's), while pytest-asyncio gives each test a new loop by default. So
``SharedAsyncConnection`` keeps the run's async connection in an event loop of its
own, in a thread of its own (``Portal``), and runs there the sync side's
``SharedConnection`` unchanged, on the AsyncEngine's sync facade: an outer transaction,
seed layers closed by SAVEPOINTs, a rollback to them after each test, the deferred
check. Each test's ``AsyncSession`` works on the same connection from the test's own
loop, whichever it is: psycopg's async connection belongs to no loop, and asyncpg's
coroutines are sent to the connection's loop (``_Remote``: about 30 µs a statement,
where a connection of its own costs a test 4 to 9 ms). ``isolated_async_session``
isolates one block on a connection of its own, in the running loop.

``create_async`` runs the factory's own create strategy (post-generation hooks,
``RelatedFactory`` and all) with the AsyncSession's sync session, in the test's loop,
and flushes once: the same factories serve both sides.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from dbtoolkit import seeding
from dbtoolkit.errors import ASYNC_EXTRA, ConfigError
from dbtoolkit.isolation import SharedConnection

try:  # needs greenlet, which only the async extra installs
    from sqlalchemy.ext.asyncio import (
        AsyncConnection,
        AsyncEngine,
        AsyncSession,
        create_async_engine,
    )
    from sqlalchemy.util import greenlet_spawn
except ImportError:
    raise ConfigError(ASYNC_EXTRA) from None

T = TypeVar("T")

_session: seeding.Current[AsyncSession] = seeding.Current(
    "an async factory helper ran outside an async database test; request the "
    "async_db_session fixture in this test, or pass session="
)


def unpooled_engine(url: URL) -> AsyncEngine:
    """An AsyncEngine without a pool: each connection is opened and closed when asked."""
    return create_async_engine(url, poolclass=NullPool)


class Portal:
    """An event loop in a thread of its own, in which sync code may use an AsyncEngine."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="dbtoolkit-async", daemon=True
        )
        self._thread.start()

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """Return ``function(*args)``, run in the loop (in a greenlet, as AsyncSession does)."""
        if threading.current_thread() is self._thread:  # called from code ``call`` runs
            return function(*args)
        return asyncio.run_coroutine_threadsafe(greenlet_spawn(function, *args), self.loop).result()

    def close(self) -> None:
        """Stop the loop and its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class _Remote:
    """An asyncpg object of another loop, usable from any loop: its coroutines run there."""

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop, kinds: tuple[type, ...]):
        self._target, self._loop, self._kinds = target, loop, kinds

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value
        return lambda *args, **kwargs: self._wrap(value(*args, **kwargs))

    def __await__(self) -> Generator[Any, None, Any]:  # ``await statement.cursor()``
        return self._run(self._awaited()).__await__()

    async def _awaited(self) -> Any:
        return await self._target

    def _wrap(self, result: Any) -> Any:
        if inspect.iscoroutine(result):
            return self._run(result)
        return (
            _Remote(result, self._loop, self._kinds) if isinstance(result, self._kinds) else result
        )

    async def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        if asyncio.get_running_loop() is self._loop:
            result = await coroutine
        else:
            future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
            result = await asyncio.wrap_future(future)
        return self._wrap(result)


def _asyncpg_connect(loop: asyncio.AbstractEventLoop) -> Callable[..., Any]:
    """``asyncpg.connect``, whose connection is usable from any loop (``_Remote``)."""
    import asyncpg
    from asyncpg.cursor import Cursor, CursorFactory
    from asyncpg.prepared_stmt import PreparedStatement
    from asyncpg.transaction import Transaction

    kinds = (Cursor, CursorFactory, PreparedStatement, Transaction)

    async def connect(*args: Any, **kwargs: Any) -> _Remote:
        return _Remote(await asyncpg.connect(*args, **kwargs), loop, kinds)

    return connect


class SharedAsyncConnection:
    """The connection every async test of a run (or xdist worker) works on, in any loop.

    ``shared`` is a ``SharedConnection`` on ``engine``'s sync facade; its methods run
    in the portal's loop (``portal.call``). ``test`` yields the test's AsyncSession.
    """

    def __init__(self, engine: AsyncEngine, on_escape: Callable[[], None]) -> None:
        self.engine = engine
        self.portal = Portal()
        if engine.dialect.driver == "asyncpg":
            connect = _asyncpg_connect(self.portal.loop)

            @event.listens_for(engine.sync_engine, "do_connect")
            def remotely(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
                cparams["async_creator_fn"] = connect

        try:
            self.shared = self.portal.call(
                SharedConnection[seeding.Laid], engine.sync_engine, on_escape
            )
        except BaseException:
            self.portal.close()
            raise

    def clear(self) -> None:
        """Roll back to the empty database, if anything is on it (before another test)."""
        if self.shared.layers or self.shared.written:
            self.portal.call(seeding.prepare_fixture_layers, self.shared, [])

    @contextmanager
    def test(
        self, keys: list[seeding.LayerKey], **kwargs: Any
    ) -> Iterator[tuple[AsyncSession, dict[seeding.SeedSpec, seeding.Laid]]]:
        """The running test's AsyncSession on the layers ``keys``; back to them on exit.

        Yields it with the seeds laid (``seeding.prepare`` with ``kwargs``), both made in
        one call to the portal. Objects are not expired on commit
        (``expire_on_commit=False``): after a commit an attribute access would have to
        load lazily, which async code cannot do.
        """
        running = self.shared.test()

        def enter() -> tuple[dict[seeding.SeedSpec, seeding.Laid], list[Session]]:
            return seeding.prepare(self.shared, keys, **kwargs), running.__enter__()

        seeds, sessions = self.portal.call(enter)
        connection = AsyncConnection(self.engine, self.shared.connection)
        session = AsyncSession(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        sessions.append(session.sync_session)
        try:
            yield session, seeds
        finally:
            self.portal.call(running.__exit__, None, None, None)

    def open(self) -> None:
        """Connect again (after ``close``)."""
        self.portal.call(self.shared.open)

    def close(self) -> None:
        """Roll back everything and close the connection."""
        self.portal.call(self.shared.close)

    def __enter__(self) -> SharedAsyncConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.close()
        finally:
            self.portal.close()


@asynccontextmanager
async def isolated_async_session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """Yield an AsyncSession whose every change, committed or not, is undone on exit.

    On a connection of its own, in the running loop. Objects are not expired on commit.
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
    """Create one object with a factory_boy or polyfactory factory through an AsyncSession.

    As ``create_batch_async`` with a count of 1.
    """
    return (await create_batch_async(factory, 1, session=session, **attributes))[0]


async def create_batch_async(
    factory: type[Any], count: int, *, session: AsyncSession | None = None, **attributes: Any
) -> list[Any]:
    """Create ``count`` objects with a factory through an AsyncSession, in one flush.

    A factory_boy factory's create strategy runs as it does for ``db_session``, on the
    AsyncSession's sync session: SubFactories, ``RelatedFactory`` and post-generation
    hooks included (polyfactory's builds). The rows of every table are flushed
    together at the end, so ids are set once it returns.
    """
    target = session if session is not None else current_async_session()

    return await greenlet_spawn(
        seeding.create_flushed, target.sync_session, factory, count, attributes
    )
