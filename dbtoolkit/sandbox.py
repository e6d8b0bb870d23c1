"""Application engines join the running test's transaction, with no code in the application.

The Ecto sandbox idea, for SQLAlchemy: when an engine that is not dbtoolkit's own
opens a connection to this process's test database, SQLAlchemy's ``do_connect`` event
hands it the running test's connection instead of a new one, and that engine's
dialect turns its transaction control into savepoints: ``BEGIN`` becomes
``SAVEPOINT``, ``COMMIT`` ``RELEASE SAVEPOINT``, ``ROLLBACK`` ``ROLLBACK TO
SAVEPOINT``; closing and isolation levels are left to the test. Everything the
application writes, through ``Session(engine)``, a ``sessionmaker``,
``engine.begin()`` or ``engine.connect()``, from any thread, is therefore inside
the test's transaction, seen by ``db_session`` and rolled back after the test.

``Sandbox.current`` gives the running test's connection: the shared sync one, on
which an async psycopg engine joins too (asyncpg's connection cannot be shared). When
the test rolls back below an application transaction that is still open (a session
that lives longer than a test), its savepoint is gone: it is opened again before that
transaction's next statement, so the application goes on as if it had just begun.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import Pool

from dbtoolkit.errors import ConfigError
from dbtoolkit.guard import Target, endpoint


def own(engine: Engine) -> Engine:
    """Mark ``engine`` as dbtoolkit's own: it is never joined to a test."""
    engine.dialect._dbtoolkit_own = True  # type: ignore[attr-defined]
    return engine


class Sandbox:
    """Joins the application's engines to the running test, for one test database."""

    def __init__(self, host: str, port: int, database: str) -> None:
        self.server, self.database = endpoint(host, port), database
        # The driver and DBAPI connection of the shared sync connection tests run on
        # (the connection is None while it is closed).
        self.current: tuple[str, Callable[[], Any | None]] = ("", lambda: None)
        # Whether engines join now: while a test runs, not between tests.
        self.active: Callable[[], bool] = lambda: True
        # Told of every statement the application runs on the test's connection.
        self.note: Callable[[str], None] = lambda statement: None
        self.engines: weakref.WeakSet[Engine] = weakref.WeakSet()  # on the test database
        self._dialects: weakref.WeakSet[Dialect] = weakref.WeakSet()  # the joined ones
        self._names = itertools.count(1)
        # The savepoint each application connection (a pool checkout) has open, by id,
        # with the connection it is on, and those no longer there.
        self._open: dict[int, tuple[str, Any]] = {}
        self._gone: set[int] = set()
        # The async psycopg connection shared with the sync test connection it stands on.
        self._async: tuple[Any, Any] | None = None
        self._lock = threading.Lock()

    def install(self) -> None:
        """Listen to every engine's connections."""
        event.listen(Engine, "do_connect", self._do_connect)
        event.listen(Engine, "engine_connect", self._engine_connect)
        event.listen(Engine, "before_cursor_execute", self._statement)
        event.listen(Pool, "checkout", self._checkout)

    def uninstall(self) -> None:
        """Stop listening."""
        event.remove(Engine, "do_connect", self._do_connect)
        event.remove(Engine, "engine_connect", self._engine_connect)
        event.remove(Engine, "before_cursor_execute", self._statement)
        event.remove(Pool, "checkout", self._checkout)

    def dispose(self) -> None:
        """Empty the pools of the engines on the test database (before it is recreated)."""
        for engine in list(self.engines):
            engine.dispose(close=False)
        self.forget()

    def forget(self) -> None:
        """The test rolled back below every open application savepoint."""
        self._gone.update(self._open)

    def settle(self) -> None:
        """Release the open application savepoints, before the test builds on top of them.

        What the application wrote in them stays; its transactions go on in new
        savepoints from their next statement. Else a later COMMIT of a session that
        outlives a test (RELEASE) would release the test's own savepoints with its own.
        """
        for key, (name, connection) in reversed(list(self._open.items())):
            if key not in self._gone:
                _execute(connection, f"RELEASE SAVEPOINT {name}")
                self._gone.add(key)

    def _do_connect(self, dialect: Dialect, record: Any, cargs: Any, cparams: Any) -> Any:
        if getattr(dialect, "_dbtoolkit_own", False):
            return None
        target = Target.of(cparams)
        if endpoint(target.host, target.port) != self.server or target.database != self.database:
            return None
        if not self.active():
            return None
        connection = self._connection_for(dialect, create=True)
        if connection is not None:
            self._join(dialect)
        return connection

    def _checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        # A pooled connection that is the test's, taken out while no test runs: the pool
        # drops it (its close is a no-op) and connects anew, for real.
        if self.active():
            return
        tests = [self.current[1]()]
        if self._async is not None:
            tests.append(self._async[1])
        if any(dbapi_connection is test for test in tests):
            raise DisconnectionError("the test this connection joined has ended")

    def _connection_for(self, dialect: Dialect, *, create: bool) -> Any | None:
        """The running test's DBAPI connection for an engine of ``dialect``, or None.

        An async psycopg engine gets an async connection on the sync test connection's
        libpq connection (``create``: made now, in the application's event loop).
        """
        driver, current = self.current
        connection = current()
        if dialect.is_async:
            if connection is None:
                return None
            if dialect.driver != "psycopg" or driver != "psycopg":
                if not create:
                    return None
                raise ConfigError(
                    f"an async engine of the application reaches the test database with "
                    f"{dialect.driver}; it joins the test's transaction only through psycopg, "
                    "whose async connection can share the test's: use postgresql+psycopg "
                    "in the application's URL, with dbtoolkit_driver = psycopg"
                )
            if self._async is None or self._async[0] is not connection:
                if not create:
                    return None
                self._async = connection, _share_psycopg(dialect, connection)
            return self._async[1]
        if connection is not None and create and dialect.driver != driver:
            raise ConfigError(
                f"an engine of the application reaches the test database with "
                f"{dialect.driver}, but the test's connection uses {driver}, and one "
                f"transaction cannot span both; set dbtoolkit_driver = {dialect.driver} "
                "(--dbtoolkit-driver)"
            )
        return connection

    def _engine_connect(self, connection: Connection) -> None:
        engine = connection.engine
        if engine in self.engines or getattr(engine.dialect, "_dbtoolkit_own", False):
            return
        url = engine.url
        if endpoint(url.host, url.port) == self.server and url.database == self.database:
            self.engines.add(engine)

    def _statement(self, connection: Connection, cursor: Any, statement: str, *args: Any) -> None:
        if connection.dialect not in self._dialects:
            return
        fairy = connection.connection
        if id(fairy) in self._gone:  # its savepoint went with the test's rollback
            self._gone.discard(id(fairy))
            _execute(fairy, f"SAVEPOINT {self._open[id(fairy)][0]}")
        self.note(statement)

    def _join(self, dialect: Dialect) -> None:
        """Make ``dialect`` turn transaction control into savepoints on the test's connection."""
        with self._lock:
            if dialect in self._dialects:
                return
            self._dialects.add(dialect)

        def joined(connection: Any) -> bool:
            raw = getattr(connection, "dbapi_connection", connection)
            return raw is self._connection_for(dialect, create=False)

        def begin(connection: Any) -> None:
            name = f"dbtoolkit_app_{next(self._names)}"
            _execute(connection, f"SAVEPOINT {name}")
            self._open[id(connection)] = name, connection.dbapi_connection
            self._gone.discard(id(connection))

        def end(connection: Any, *statements: str) -> None:
            name, _ = self._open.pop(id(connection), (None, None))
            if id(connection) in self._gone:  # nothing ran since it went: nothing to end
                self._gone.discard(id(connection))
            elif name is not None:
                for statement in statements:
                    _execute(connection, statement.format(name))

        def commit(connection: Any) -> None:
            end(connection, "RELEASE SAVEPOINT {}")

        def rollback(connection: Any) -> None:
            end(connection, "ROLLBACK TO SAVEPOINT {}", "RELEASE SAVEPOINT {}")

        def nothing(connection: Any, *args: Any) -> None:
            return None

        replacements: dict[str, Callable[..., None]] = {
            "do_begin": begin,
            "do_commit": commit,
            "do_rollback": rollback,
            "do_close": nothing,  # the test's connection stays open
            "do_terminate": nothing,
            "set_isolation_level": nothing,  # the test's transaction decides
            "reset_isolation_level": nothing,
        }
        for name, replacement in replacements.items():
            setattr(dialect, name, _either(joined, replacement, getattr(dialect, name)))


def _either(
    joined: Callable[[Any], bool], replacement: Callable[..., None], original: Callable[..., Any]
) -> Callable[..., Any]:
    """``replacement`` on the test's connection, ``original`` on any other."""

    def method(connection: Any, *args: Any) -> Any:
        return (replacement if joined(connection) else original)(connection, *args)

    return method


def _share_psycopg(dialect: Dialect, sync: Any) -> Any:
    """An async psycopg connection, adapted for ``dialect``, on ``sync``'s libpq connection.

    It never prepares statements: the sync connection names its prepared statements
    without knowing of it, and two such namings on one server session would clash.
    """
    import psycopg

    async def on_the_same_libpq_connection(
        *args: Any, **kwargs: Any
    ) -> psycopg.AsyncConnection[Any]:
        connection: psycopg.AsyncConnection[Any] = psycopg.AsyncConnection(sync.pgconn)
        connection.prepare_threshold = None
        return connection

    return dialect.loaded_dbapi.connect(async_creator_fn=on_the_same_libpq_connection)


def _execute(connection: Any, statement: str) -> None:
    cursor = connection.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()
