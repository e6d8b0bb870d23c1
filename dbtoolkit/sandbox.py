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

``Sandbox.current`` says which connection is the running test's: the shared sync
connection, or the running async test's. The application's transactions must end
before the test rolls back below them, as with any savepoint.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection, Dialect

from dbtoolkit.guard import Target, endpoint


def own(engine: Engine) -> Engine:
    """Mark ``engine`` as dbtoolkit's own: it is never joined to a test."""
    engine.dialect._dbtoolkit_own = True  # type: ignore[attr-defined]
    return engine


class Sandbox:
    """Joins the application's engines to the running test, for one test database."""

    def __init__(self, host: str, port: int, database: str) -> None:
        self.server, self.database = endpoint(host, port), database
        # The running test's DBAPI connection, sync or async (None: no test runs).
        self.current: dict[bool, Callable[[], Any | None]] = {}
        self.on_write: Callable[[], None] = lambda: None
        self.engines: weakref.WeakSet[Engine] = weakref.WeakSet()  # the joined ones
        self.transactions = 0  # application transactions begun so far
        self._dialects: weakref.WeakSet[Dialect] = weakref.WeakSet()
        self._names = itertools.count(1)
        # The savepoint each application connection (a pool checkout) has open.
        self._savepoints: dict[int, str] = {}
        self._lock = threading.Lock()

    def install(self) -> None:
        """Listen to every engine's connections."""
        event.listen(Engine, "do_connect", self._do_connect)
        event.listen(Engine, "engine_connect", self._engine_connect)

    def uninstall(self) -> None:
        """Stop listening."""
        event.remove(Engine, "do_connect", self._do_connect)
        event.remove(Engine, "engine_connect", self._engine_connect)

    def dispose(self) -> None:
        """Empty the joined engines' pools: their next connection is the test's new one."""
        for engine in list(self.engines):
            engine.dispose(close=False)

    def _do_connect(self, dialect: Dialect, record: Any, cargs: Any, cparams: Any) -> Any:
        if getattr(dialect, "_dbtoolkit_own", False):
            return None
        target = Target.of(cparams)
        if endpoint(target.host, target.port) != self.server or target.database != self.database:
            return None
        current = self.current.get(dialect.is_async)
        connection = current() if current is not None else None
        if connection is None:
            return None
        self._join(dialect)
        return connection

    def _engine_connect(self, connection: Connection) -> None:
        if connection.engine.dialect in self._dialects:
            self.engines.add(connection.engine)

    def _join(self, dialect: Dialect) -> None:
        """Make ``dialect`` turn transaction control into savepoints on the test's connection."""
        with self._lock:
            if dialect in self._dialects:
                return
            self._dialects.add(dialect)

        def joined(connection: Any) -> bool:
            raw = getattr(connection, "dbapi_connection", connection)
            current = self.current.get(dialect.is_async)
            return current is not None and raw is current()

        def begin(connection: Any) -> None:
            name = f"dbtoolkit_app_{next(self._names)}"
            _execute(connection, f"SAVEPOINT {name}")
            self._savepoints[id(connection)] = name
            self.transactions += 1
            self.on_write()

        def commit(connection: Any) -> None:
            name = self._savepoints.pop(id(connection), None)
            if name is not None:
                _execute(connection, f"RELEASE SAVEPOINT {name}")

        def rollback(connection: Any) -> None:
            name = self._savepoints.pop(id(connection), None)
            if name is not None:
                _execute(connection, f"ROLLBACK TO SAVEPOINT {name}")
                _execute(connection, f"RELEASE SAVEPOINT {name}")

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


def _execute(connection: Any, statement: str) -> None:
    cursor = connection.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()
