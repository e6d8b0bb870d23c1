"""How many queries a block runs: counting them, and asserting an exact or a maximum count.

This catches N+1 queries (one query for a list, then one more for each item), as
pytest-django's ``django_assert_num_queries`` does. What is counted is each statement
the database driver's cursor executes, seen through SQLAlchemy's
``before_cursor_execute`` event:

- an ``executemany`` counts as what the cursor executes: a flush that inserts many rows
  in one ``INSERT ... VALUES (...), (...)`` (SQLAlchemy's "insertmanyvalues") counts
  once per batch it sends;
- the savepoints that the isolation itself issues (statements that begin with
  ``SAVEPOINT``, ``RELEASE SAVEPOINT`` or ``ROLLBACK TO SAVEPOINT``) are not counted,
  so that a block is not charged for the SAVEPOINT that ``db_session`` sends before its
  first query and after each ``commit()`` or ``rollback()`` (the test's own
  ``begin_nested()`` savepoints are left out with them); ``BEGIN``, ``COMMIT`` and
  ``ROLLBACK`` go through the driver's connection, not a cursor, and are not seen.

Counting on an Engine sees every connection of that Engine; counting on a Connection
sees that connection alone. The async objects (``AsyncSession``, ``AsyncEngine``,
``AsyncConnection``) are counted through the sync objects they wrap.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from sqlalchemy import Connection, Engine, event
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

Bind: TypeAlias = "Engine | Connection | Session | AsyncEngine | AsyncConnection | AsyncSession"

_TRANSACTION_CONTROL = re.compile(
    r"\s*(SAVEPOINT|RELEASE\s+SAVEPOINT|ROLLBACK\s+TO\s+SAVEPOINT)\b", re.IGNORECASE
)


class Queries:
    """The statements a ``count_queries`` block ran, in order; ``len()`` is how many."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def __len__(self) -> int:
        return len(self.statements)

    def __repr__(self) -> str:
        return f"<Queries: {len(self)} ran>"

    def listing(self) -> str:
        """Return the statements numbered from 1, one under another, each in full."""
        lines = []
        for number, statement in enumerate(self.statements, start=1):
            prefix = f"  {number}. "
            first, *rest = [line.rstrip() for line in statement.strip().splitlines()] or [""]
            lines.append(prefix + first)
            lines.extend(" " * len(prefix) + line for line in rest)
        return "\n".join(lines)


class QueryAssertion(Protocol):
    """What the ``assert_num_queries`` and ``assert_max_num_queries`` fixtures yield."""

    def __call__(self, count: int, *, bind: Bind | None = None) -> AbstractContextManager[Queries]:
        """Return a context manager that checks its block's queries against ``count``."""


@contextmanager
def count_queries(bind: Bind) -> Iterator[Queries]:
    """Yield a ``Queries`` that records every statement run on ``bind`` inside the block.

    ``bind`` is an Engine (every connection of it is watched), a Connection (that one
    alone) or a Session (what ``session.get_bind()`` returns). Savepoint statements are
    left out; see the module's docstring for what counts as a query::

        with count_queries(db_session) as queries:
            db_session.scalars(select(User)).all()
        assert len(queries) == 1
    """
    target = _target(bind)
    queries = Queries()

    def record(
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        if not _TRANSACTION_CONTROL.match(statement):
            queries.statements.append(statement)

    event.listen(target, "before_cursor_execute", record)
    try:
        yield queries
    finally:
        event.remove(target, "before_cursor_execute", record)


def assert_num_queries(expected: int, bind: Bind) -> AbstractContextManager[Queries]:
    """Return a context manager that fails unless its block runs exactly ``expected`` queries.

    It yields the ``Queries`` being recorded. On exit, if the block itself raised
    nothing, a different count raises ``AssertionError`` listing every statement::

        with assert_num_queries(2, db_session):
            users = db_session.scalars(select(User).options(selectinload(User.projects)))
            titles = [project.title for user in users for project in user.projects]
    """
    _check_count("assert_num_queries", expected)
    return _Assertion(bind, lambda ran: ran == expected, f"expected {_queries(expected)}")


def assert_max_num_queries(maximum: int, bind: Bind) -> AbstractContextManager[Queries]:
    """Return a context manager that fails if its block runs more than ``maximum`` queries.

    Like ``assert_num_queries``, but any count up to ``maximum`` passes.
    """
    _check_count("assert_max_num_queries", maximum)
    return _Assertion(bind, lambda ran: ran <= maximum, f"expected at most {_queries(maximum)}")


class _Assertion(AbstractContextManager[Queries]):
    """Count the queries of a block and check the count when the block ends."""

    def __init__(self, bind: Bind, passes: Callable[[int], bool], expectation: str) -> None:
        self._counting = count_queries(bind)
        self._passes = passes
        self._expectation = expectation

    def __enter__(self) -> Queries:
        self._queries = self._counting.__enter__()
        return self._queries

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        __tracebackhide__ = True
        self._counting.__exit__(exc_type, exc, traceback)
        if exc_type is None and not self._passes(len(self._queries)):
            message = f"{self._expectation}, {len(self._queries)} ran"
            if self._queries.statements:
                message += ":\n" + self._queries.listing()
            raise AssertionError(message)


def _target(bind: Bind) -> Engine | Connection:
    # The async objects wrap sync ones. Told apart by attribute, not by class: importing
    # SQLAlchemy's asyncio extension needs greenlet, which only the async extra installs.
    for wrapped in ("sync_session", "sync_engine", "sync_connection"):
        inner = getattr(bind, wrapped, None)
        if inner is not None:
            return _target(inner)
    if isinstance(bind, Session):
        return bind.get_bind()
    if isinstance(bind, Engine | Connection):
        return bind
    raise TypeError(
        "count queries on a SQLAlchemy Engine, Connection or Session (or a started async "
        "one), "
        f"got {type(bind).__name__} {bind!r}"
    )


def _check_count(function: str, count: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"{function}() needs a count of 0 or more, got {count!r}")


def _queries(count: int) -> str:
    return f"{count} query" if count == 1 else f"{count} queries"
