"""How a test is isolated: a Session inside an outer transaction that is never committed.

This is SQLAlchemy's "joining a Session into an external transaction" recipe. The
Session runs in SAVEPOINTs (``join_transaction_mode="create_savepoint"``): test code
may commit, roll back, nest savepoints, run DDL or fail a statement, and all of it
stays inside the outer transaction, which is rolled back at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.orm import Session


@contextmanager
def isolated_session(engine: Engine) -> Iterator[Session]:
    """Yield a Session whose every change, committed or not, is undone on exit.

    ``session.commit()`` releases a SAVEPOINT and ``session.rollback()`` returns to
    the state at the last commit, so data committed by a seed survives a rollback in
    the test. Other connections never see any of it.
    """
    with engine.connect() as connection:
        transaction = connection.begin()
        session = Session(bind=connection, join_transaction_mode="create_savepoint")
        try:
            yield session
        finally:
            session.close()
            transaction.rollback()
