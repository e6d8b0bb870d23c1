"""How a test is isolated: a Session inside an outer transaction that is never committed.

This is SQLAlchemy's "joining a Session into an external transaction" recipe. The
Session runs in SAVEPOINTs (``join_transaction_mode="create_savepoint"``): test code
may commit, roll back, nest savepoints, run DDL or fail a statement, and all of it
stays inside the outer transaction, which is rolled back at the end.

``isolated_session`` does that for one block on a connection of its own.
``SharedConnection`` does it for a whole run on one connection, with layers of seed
data below the tests, each closed by a SAVEPOINT: a test that asks for the same seeds
as the one before starts from them at once, and each test is rolled back to them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from typing import Generic, TypeVar

from sqlalchemy import Connection, Engine, event
from sqlalchemy.orm import Session

from dbtoolkit.errors import IsolationError

# libpq's PQtransactionStatus, as psycopg 2 and 3 report it: no transaction open.
_IDLE = 0

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

    A test that ends the outer transaction itself (a raw ``COMMIT``) has committed the
    layers and its own rows for real: ``on_escape`` is called, with no connection open,
    to put the database right (dbtoolkit recreates it from the template), and the
    test fails with ``IsolationError``.
    """

    def __init__(self, engine: Engine, on_escape: Callable[[], None] = lambda: None) -> None:
        self.engine = engine
        self.on_escape = on_escape
        self._open()

    def _open(self) -> None:
        self.connection = self.engine.connect()
        self.transaction = self.connection.begin()
        self.layers: list[tuple[Hashable, Layer]] = []
        self.connection.exec_driver_sql("SAVEPOINT dbtoolkit_0")

    def prepare(
        self,
        keys: Sequence[Hashable],
        lay: Callable[[Hashable, Connection, Layer | None], Layer],
    ) -> list[Layer]:
        """Make the layers ``keys``, laying missing ones with ``lay(key, connection, below)``."""
        keep = 0
        while keep < min(len(keys), len(self.layers)) and self.layers[keep][0] == keys[keep]:
            keep += 1
        if keep < len(self.layers):
            self.connection.exec_driver_sql(f"ROLLBACK TO SAVEPOINT dbtoolkit_{keep}")
            del self.layers[keep:]
        for key in keys[keep:]:
            below = self.layers[-1][1] if self.layers else None
            self.layers.append((key, lay(key, self.connection, below)))
            self.connection.exec_driver_sql(f"SAVEPOINT dbtoolkit_{len(self.layers)}")
        return [layer for _, layer in self.layers]

    @contextmanager
    def session(self) -> Iterator[Session]:
        """Yield a Session on top of the layers; roll back to them on exit."""
        session = _LayeredSession(bind=self.connection, join_transaction_mode="create_savepoint")
        try:
            yield session
        finally:
            escaped = session.in_transaction() and _outer_transaction_ended(self.connection)
            if escaped:
                self.connection.invalidate()
                self.close()
                self.on_escape()
                self._open()
            else:
                # Closing rolls back the session's own SAVEPOINT, which began on top of
                # the layers; only what a commit released below it needs rolling back.
                session.close()
                if session.info.get(_COMMITTED):
                    self.connection.exec_driver_sql(
                        f"ROLLBACK TO SAVEPOINT dbtoolkit_{len(self.layers)}"
                    )
        if escaped:
            raise IsolationError(ESCAPED)

    def close(self) -> None:
        """Roll back everything and return the connection."""
        if self.transaction.is_active:
            self.transaction.rollback()
        self.connection.close()


_COMMITTED = "dbtoolkit committed"


class _LayeredSession(Session):
    """A Session that notes in ``info`` whether it committed (released its SAVEPOINT)."""


@event.listens_for(_LayeredSession, "after_commit")
def _note_commit(session: Session) -> None:
    session.info[_COMMITTED] = True


def _outer_transaction_ended(connection: Connection) -> bool:
    # A session in a transaction has sent BEGIN, so the server must be in one too.
    info = getattr(connection.connection.dbapi_connection, "info", None)
    return getattr(info, "transaction_status", None) == _IDLE
