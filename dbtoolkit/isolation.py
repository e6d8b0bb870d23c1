"""How a test is isolated: a Session inside an outer transaction that is never committed.

This is SQLAlchemy's "joining a Session into an external transaction" recipe. The
Session runs in SAVEPOINTs (``join_transaction_mode="create_savepoint"``): test code
may commit, roll back, nest savepoints, run DDL or fail a statement, and all of it
stays inside the outer transaction, which is rolled back at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from dbtoolkit.errors import IsolationError

# libpq's PQtransactionStatus, as psycopg 2 and 3 report it: no transaction open.
_IDLE = 0


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
            raise IsolationError(
                "the test ended the outer transaction with a raw COMMIT or ROLLBACK, so "
                "what it wrote before that is committed and other tests may see it; use "
                "db_session.commit() or db_session.rollback() instead"
            )


def _outer_transaction_ended(connection: Connection) -> bool:
    # A session in a transaction has sent BEGIN, so the server must be in one too.
    info = getattr(connection.connection.dbapi_connection, "info", None)
    return getattr(info, "transaction_status", None) == _IDLE
