"""How a test is isolated: a Session inside an outer transaction that is never committed.

This is SQLAlchemy's "joining a Session into an external transaction" recipe. The
Session runs in SAVEPOINTs (``join_transaction_mode="create_savepoint"``): test code
may commit, roll back, nest savepoints, run DDL or fail a statement, and all of it
stays inside the outer transaction, which is rolled back at the end.

``isolated_session`` does that for one block on a connection of its own.
``SharedConnection`` does it for a whole run on one connection, with layers of seed
data below the tests, each closed by a SAVEPOINT: a test that asks for the same seeds
as the one before starts from them at once, and each test is rolled back to them.

The databases tests work in are copies of the migrated template: ``RunDatabase``
for a run or xdist worker (recreated when a test committed for real), and
``own_database`` for one test that must commit for real.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, scoped_session, sessionmaker
from sqlalchemy.util import ScopedRegistry, ThreadLocalRegistry

from dbtoolkit import schema
from dbtoolkit.errors import DeferredConstraintError, IsolationError
from dbtoolkit.leaks import LeakWatch

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

# libpq's PQtransactionStatus, as psycopg 2 and 3 report it: no transaction open, and
# one in which a statement failed.
_IDLE = 0
_FAILED = 3
_IN_FAILED_TRANSACTION = "25P02"  # a statement ran in a transaction a failed one aborted

Layer = TypeVar("Layer")

ESCAPED = (
    "the test ended the outer transaction with a raw COMMIT or ROLLBACK, so what it wrote "
    "before that is committed and other tests may see it; use db_session.commit() or "
    "db_session.rollback() instead"
)


@contextmanager
def isolated_session(engine: Engine) -> Iterator[Session]:
    """Yield a Session whose every change, committed or not, is undone on exit.

    ``session.commit()`` releases a SAVEPOINT and ``session.rollback()`` returns to
    the state at the last commit, so data committed by a seed survives a rollback in
    the test. Other connections never see any of it. A raw ``COMMIT`` or ``ROLLBACK``
    sent through the connection ends the outer transaction itself; that is reported
    with ``IsolationError`` on exit, since what was written before it is committed.
    """
    with engine.connect() as connection:
        transaction = connection.begin()
        session = Session(bind=connection, join_transaction_mode="create_savepoint")
        try:
            yield session
        finally:
            escaped = session.in_transaction() and _outer_transaction_ended(connection)
            if escaped:
                connection.invalidate()  # its transaction state no longer matches ours
            else:
                session.close()
                transaction.rollback()
        if escaped:
            raise IsolationError(ESCAPED)


class SharedConnection(Generic[Layer]):
    """One connection in an outer transaction for a whole run, with layers of seed data.

    Layer ``n`` is closed by ``SAVEPOINT dbtoolkit_n`` (``dbtoolkit_0`` is the empty
    database). ``prepare`` keeps the layers a test shares with what is laid, rolls back
    the rest and lays what is missing; ``session`` yields the test's Session and rolls
    back to the top layer afterwards, whatever the test did.

    Any session on the connection may write: the test's, or the application's ones
    that ``joined`` binds to it. A test that ends the outer transaction itself (a raw
    ``COMMIT``) has committed the layers and its own rows for real: the connection is
    ``reset`` and the test fails with ``IsolationError``.
    """

    def __init__(self, engine: Engine, on_escape: Callable[[], None] = lambda: None) -> None:
        self.engine = engine
        self.on_escape = on_escape
        self.after_rollback: Callable[[], None] = lambda: None  # told of each ROLLBACK TO
        self.before_building: Callable[[], None] = lambda: None  # before a layer or a test
        self.in_test = False  # a test runs on the connection (``test``)
        self.open()

    def open(self) -> None:
        """Connect, begin the outer transaction and close the empty database as layer 0."""
        self.connection = self.engine.connect()
        self.written = False
        event.listen(self.connection, "before_cursor_execute", self._note)
        self.transaction = self.connection.begin()
        self.layers: list[tuple[Hashable, Layer]] = []
        self.connection.exec_driver_sql("SAVEPOINT dbtoolkit_0")

    def prepare(
        self,
        keys: Sequence[Hashable],
        lay: Callable[[Hashable, Connection, Layer | None], Layer],
    ) -> list[Layer]:
        """Make the layers ``keys``, laying missing ones with ``lay(key, connection, below)``.

        Whatever was written on top of the layers kept is undone.
        """
        keep = 0
        while keep < min(len(keys), len(self.layers)) and self.layers[keep][0] == keys[keep]:
            keep += 1
        if keep < len(self.layers) or self.written:
            self._roll_back_to(keep)
            del self.layers[keep:]
        for key in keys[keep:]:
            below = self.layers[-1][1] if self.layers else None
            self.add_layer(key, lay(key, self.connection, below))
        return [layer for _, layer in self.layers]

    @contextmanager
    def test(self) -> Iterator[list[Session]]:
        """The running test, on top of the layers; back to them on exit.

        Yields the list in which the test's Sessions go; they are closed on exit.
        Before the rollback, deferred constraints are checked (``SET CONSTRAINTS ALL
        IMMEDIATE``) if the test wrote anything: a violated one fails the test with
        ``DeferredConstraintError``, as its COMMIT would have failed.
        """
        sessions: list[Session] = []
        violation = None
        self.before_building()
        self.in_test = True
        try:
            yield sessions
        finally:
            self.in_test = False
            escaped = _outer_transaction_ended(self.connection)  # the layers' BEGIN is sent
            if escaped:
                self.connection.invalidate()
                self.reset()
            else:
                if self.written:
                    violation = self._check_deferred()
                # Closing rolls back a session's own SAVEPOINT, which began on top of the
                # layers; what a commit released below it (or another session on this
                # connection wrote) needs rolling back to the top layer.
                for session in sessions:
                    session.close()
                self.back_to_top()
        if escaped:
            raise IsolationError(ESCAPED)
        if violation is not None:
            raise violation

    @contextmanager
    def session(self, session_class: type[Session] = Session) -> Iterator[Session]:
        """Yield a Session on top of the layers; roll back to them on exit (see ``test``)."""
        with self.test() as sessions:
            session = session_class(bind=self.connection, join_transaction_mode="create_savepoint")
            sessions.append(session)
            yield session

    def note(self, statement: str) -> None:
        """A statement ran on the connection (through any session or engine)."""
        if not self.written and not statement.lstrip()[:9].upper().startswith(_READING):
            self.written = True

    def back_to_top(self) -> None:
        """Undo what was written since the top layer."""
        if self.written:
            self._roll_back_to(len(self.layers))

    def _roll_back_to(self, layer: int) -> None:
        self.connection.exec_driver_sql(f"ROLLBACK TO SAVEPOINT dbtoolkit_{layer}")
        self.written = False
        self.after_rollback()

    def add_layer(self, key: Hashable, layer: Layer) -> None:
        """Close what was written since the top layer as a layer of its own, ``key``."""
        self.before_building()
        self.layers.append((key, layer))
        self.connection.exec_driver_sql(f"SAVEPOINT dbtoolkit_{len(self.layers)}")
        self.written = False

    def __enter__(self) -> SharedConnection[Layer]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def reset(self) -> None:
        """Start over on a fresh connection after the database was written for real.

        ``on_escape`` is called in between, with no connection open, to put the
        database right (dbtoolkit recreates it from the template).
        """
        self.close()
        self.on_escape()
        self.open()

    def close(self) -> None:
        """Roll back everything and return the connection."""
        if self.transaction.is_active:
            self.transaction.rollback()
        self.connection.close()

    def _note(self, *args: Any) -> None:
        self.note(args[2])

    def _check_deferred(self) -> DeferredConstraintError | None:
        if _transaction_status(self.connection) == _FAILED:
            return None  # a statement failed; the test has been told
        try:
            self.connection.exec_driver_sql("SET CONSTRAINTS ALL IMMEDIATE")
        except DBAPIError as exc:
            if _sqlstate(exc) == _IN_FAILED_TRANSACTION:  # asyncpg does not tell it before
                return None
            # psycopg's diagnostics, or the error asyncpg raised (SQLAlchemy's cause)
            diag = getattr(exc.orig, "diag", None) or getattr(exc.orig, "__cause__", None)
            name = getattr(diag, "constraint_name", None) or "?"
            message = (
                getattr(diag, "message_primary", None)
                or getattr(diag, "message", None)
                or str(exc.orig).splitlines()[0]
            )
            detail = getattr(diag, "message_detail", None) or getattr(diag, "detail", None)
            return DeferredConstraintError(
                f"the test left deferred constraint {name!r} violated, so its COMMIT would "
                f"have failed: {message}" + (f" ({detail})" if detail else "")
            )
        return None


class _Disposable(Protocol):
    def dispose(self) -> None: ...


class RunDatabase:
    """A copy of the template that a run (or xdist worker) tests in, dropped on exit.

    ``watched``: its leak watch (``watch``) reads what is committed behind the tests'
    back. ``recreate`` puts it back as the template made it, after a test committed
    for real; the pools of ``engines`` (its own, and the application's through the
    sandbox) are disposed first, so none keeps a dead connection.
    """

    def __init__(self, admin: URL, name: str, *, template: str, run: str, watched: bool) -> None:
        self.admin, self.name, self.template, self.run = admin, name, template, run
        self.url = admin.set(database=name)
        self.watch = LeakWatch(self.url) if watched else None
        self.engines: list[_Disposable] = []

    def __enter__(self) -> RunDatabase:
        schema.create_database(self.admin, self.name, template=self.template, run=self.run)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.watch is not None:
            self.watch.close()
        schema.drop_database(self.admin, self.name)

    def recreate(self) -> None:
        """Drop the database and clone it from the template again."""
        if self.watch is not None:
            self.watch.close()
        for engine in self.engines:
            engine.dispose()
        schema.drop_database(self.admin, self.name)
        schema.create_database(self.admin, self.name, template=self.template, run=self.run)


@contextmanager
def own_database(
    admin: URL,
    name: str,
    *,
    template: str,
    run: str,
    drivername: str,
    session_class: type[Session] = Session,
) -> Iterator[Session]:
    """Yield a Session on a new copy of ``template``, where commits are real; drop it on exit."""
    with schema.created_database(admin, name, template=template, run=run) as url:
        engine = create_engine(url.set(drivername=drivername))
        try:
            with session_class(engine) as session:
                yield session
        finally:
            engine.dispose()


# Statements that write nothing a test could leave behind (SAVEPOINT, RELEASE and
# ROLLBACK TO only move within the test's own transaction).
_READING = ("SELECT", "SAVEPOINT", "RELEASE", "ROLLBACK", "SHOW")


@contextmanager
def joined(
    bind: Engine | Connection | AsyncEngine | AsyncConnection, *makers: Any
) -> Iterator[None]:
    """Make the application's session makers open their sessions on ``bind`` in the block.

    On a test's connection, the sessions join its transaction the way the test's own
    session does, in SAVEPOINTs, so what they commit is rolled back with the test.
    They may be used from other threads, one at a time. The makers are restored on
    exit; a ``scoped_session`` gets back its own registry, so no thread keeps a
    session opened in the block. The async makers (``async_sessionmaker``,
    ``async_scoped_session``) go with an ``AsyncConnection``.
    """
    scoped, makers_types, connections = _kinds()
    factories = [m.session_factory if isinstance(m, scoped) else m for m in makers]
    for maker, factory in zip(makers, factories, strict=True):
        if not isinstance(factory, makers_types):
            raise TypeError(
                f"db_bind takes sessionmaker or scoped_session objects, got {maker!r}; pass the "
                "sessionmaker the code under test opens its sessions with, or mark the test "
                '@pytest.mark.dbtoolkit(isolation="database") to let it commit for real'
            )
    kws = [factory.kw for factory in factories]
    registries = [maker.registry for maker in makers if isinstance(maker, scoped)]
    try:
        for maker, factory in zip(makers, factories, strict=True):
            kw = {key: value for key, value in factory.kw.items() if key != "binds"}
            kw["bind"] = bind
            if isinstance(bind, connections):
                kw["join_transaction_mode"] = "create_savepoint"
            factory.kw = kw
            if isinstance(maker, scoped):
                maker.registry = _fresh(maker.registry)
            if isinstance(factory, sessionmaker):
                _check_bound(maker, factory, bind)
        yield
    finally:
        for factory, kw in zip(factories, kws, strict=True):
            factory.kw = kw
        for maker in makers:
            if isinstance(maker, scoped):
                maker.registry = registries.pop(0)


def _check_bound(maker: Any, factory: sessionmaker[Any], bind: object) -> None:
    """Raise IsolationError if the maker's sessions do not resolve to ``bind``."""
    session = factory()
    try:
        resolved = session.get_bind()
    except Exception:  # e.g. Flask-SQLAlchemy outside an app context: it cannot tell
        resolved = None
    finally:
        session.close()
    if resolved is bind:
        return
    if any(cls.__module__.startswith("flask_sqlalchemy") for cls in type(session).__mro__):
        raise IsolationError(
            f"db_bind({maker!r}) cannot take effect: Flask-SQLAlchemy 3's Session.get_bind "
            "ignores the bind a session is given and returns db.engine "
            "(pallets-eco/flask-sqlalchemy#1167); point the app's SQLALCHEMY_DATABASE_URI at "
            "the test database with dbtoolkit_env instead: db.engine then joins the test, and "
            "db.session with it, without db_bind"
        )
    if resolved is not None:
        raise IsolationError(
            f"db_bind({maker!r}) did not take effect: a session from it resolves to "
            f"{resolved!r}, not the test's connection, because its Session class "
            f"({type(session).__qualname__}) chooses its own bind; point the application's "
            "engine at the test database with dbtoolkit_env instead, and it joins the test "
            "without db_bind"
        )


def _kinds() -> tuple[tuple[type[Any], ...], tuple[type[Any], ...], tuple[type[Any], ...]]:
    """The scoped sessions, session makers and connections ``joined`` accepts.

    The async ones only when something imported SQLAlchemy's asyncio extension: no
    async object exists before that, and importing it needs greenlet, which only the
    async extra installs.
    """
    aio = sys.modules.get("sqlalchemy.ext.asyncio")
    if aio is None:
        return (scoped_session,), (sessionmaker,), (Connection,)
    return (
        (scoped_session, aio.async_scoped_session),
        (sessionmaker, aio.async_sessionmaker),
        (Connection, aio.AsyncConnection),
    )


def _fresh(registry: ScopedRegistry[Any]) -> ScopedRegistry[Any]:
    """An empty registry like ``registry``: thread-local, or keyed by the same scopefunc."""
    if isinstance(registry, ThreadLocalRegistry):
        return ThreadLocalRegistry(registry.createfunc)
    return ScopedRegistry(registry.createfunc, registry.scopefunc)


def _outer_transaction_ended(connection: Connection) -> bool:
    # A session in a transaction has sent BEGIN, so the server must be in one too.
    return _transaction_status(connection) == _IDLE


def _transaction_status(connection: Connection) -> int | None:
    driver = connection.connection.driver_connection
    info = getattr(driver, "info", None)  # psycopg 2 and 3
    if info is not None:
        status: int | None = getattr(info, "transaction_status", None)
        return status
    in_transaction = getattr(driver, "is_in_transaction", None)  # asyncpg: idle or not
    return None if in_transaction is None or in_transaction() else _IDLE


def _sqlstate(exc: DBAPIError) -> str | None:
    code: str | None = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code
