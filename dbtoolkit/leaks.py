"""Rows committed behind a test's back: noted by triggers, read after each test.

``install`` gives every table of a database (dbtoolkit's template) statement triggers
that note each INSERT, UPDATE, DELETE and TRUNCATE, with its row count, in
``dbtoolkit.writes``. Notes made inside the tests' outer transaction are never
committed, so they vanish with it; the notes another connection commits (code with
its own engine, a background thread, a raw ``COMMIT``) stay. ``LeakWatch`` reads them
from a connection of its own, one query per test; ``check`` has the database put right
when there were any, and ``report`` fails the test or warns, as the setting says.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import psycopg2.extensions
from sqlalchemy.engine import URL

from dbtoolkit import schema
from dbtoolkit.errors import LeakError, LeakWarning
from dbtoolkit.server import connect

INSTALL = """
CREATE SCHEMA dbtoolkit;
CREATE TABLE dbtoolkit.writes (tbl text NOT NULL, operation text NOT NULL, n bigint NOT NULL);
CREATE FUNCTION dbtoolkit.note_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO dbtoolkit.writes VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, TG_OP, 0);
    ELSE
        INSERT INTO dbtoolkit.writes
        SELECT TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, TG_OP, count(*) FROM changed
        HAVING count(*) > 0;
    END IF;
    RETURN NULL;
END $$;
DO $$
DECLARE
    target regclass;
    event text;
BEGIN
    FOR target IN
        SELECT c.oid::regclass FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence = 'p'
          AND n.nspname NOT IN ('information_schema', 'dbtoolkit') AND n.nspname !~ '^pg_'
    LOOP
        FOREACH event IN ARRAY ARRAY['INSERT NEW', 'UPDATE NEW', 'DELETE OLD'] LOOP
            EXECUTE format(
                'CREATE TRIGGER %I AFTER %s ON %s REFERENCING %s TABLE AS changed '
                'FOR EACH STATEMENT EXECUTE FUNCTION dbtoolkit.note_write()',
                'dbtoolkit_' || lower(split_part(event, ' ', 1)), split_part(event, ' ', 1),
                target, split_part(event, ' ', 2));
        END LOOP;
        EXECUTE format(
            'CREATE TRIGGER dbtoolkit_truncate AFTER TRUNCATE ON %s '
            'FOR EACH STATEMENT EXECUTE FUNCTION dbtoolkit.note_write()', target);
    END LOOP;
END $$;
"""

_WORDS = {"INSERT": "inserted into", "UPDATE": "updated in", "DELETE": "deleted from"}


class Write(NamedTuple):
    """Rows one kind of statement committed in one table."""

    table: str
    operation: str
    rows: int

    def __str__(self) -> str:
        if self.operation == "TRUNCATE":
            return f"{self.table} truncated"
        return f"{self.rows} row{'s' * (self.rows != 1)} {_WORDS[self.operation]} {self.table}"


def install(url: URL) -> None:
    """Watch every table of the database at ``url`` (once, after migrating it)."""
    with schema.admin_cursor(url) as cursor:
        cursor.execute(INSTALL)


class LeakWatch:
    """Reads the writes committed to a watched database, on a connection of its own."""

    def __init__(self, url: URL) -> None:
        self.url = url
        self._connection: psycopg2.extensions.connection | None = None

    def writes(self) -> list[Write]:
        """Return what was committed since the last call, and forget it."""
        if self._connection is None:
            self._connection = connect(self.url)
            self._connection.autocommit = True
        with self._connection.cursor() as cursor:
            cursor.execute("DELETE FROM dbtoolkit.writes RETURNING tbl, operation, n")
            found: dict[tuple[str, str], int] = {}
            for table, operation, rows in cursor.fetchall():
                found[table, operation] = found.get((table, operation), 0) + rows
        return [Write(table, op, rows) for (table, op), rows in sorted(found.items())]

    def close(self) -> None:
        """Close the connection (before the database is dropped)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def describe(writes: Sequence[Write], *, bound: bool = False) -> str:
    """Say what leaked and how to isolate it, in one line; ``bound``: the test used db_bind."""
    db_bind = "" if bound else ", bind the application's sessionmaker with the db_bind fixture"
    return (
        f"rows were committed outside the test's transaction while it ran: "
        f"{', '.join(map(str, writes))}. Engines on the test database join the test, but "
        "other connections do not (a raw driver connection, dbtoolkit's engine fixture, "
        "another process, an engine on another URL): write through db_session or an engine "
        f"on the test database{db_bind}, or give the test a database of its own with "
        '@pytest.mark.dbtoolkit(isolation="database"). The rows were removed; '
        "--dbtoolkit-leaks=warn reports them as a warning instead"
    )


def check(watch: LeakWatch, put_right: Callable[[], None]) -> list[Write]:
    """Return what was committed behind the tests' back; if anything, ``put_right`` first."""
    writes = watch.writes()
    if writes:
        put_right()
    return writes


def report(writes: Sequence[Write], mode: str, *, bound: bool = False) -> None:
    """Fail the test with ``LeakError``, or warn with ``LeakWarning`` in ``warn`` mode."""
    if mode == "warn":
        warnings.warn(LeakWarning(describe(writes, bound=bound)), stacklevel=1)
    else:
        raise LeakError(describe(writes, bound=bound))
