"""The developer's own server and database, which no test run may touch.

Fixtures, registered in conftest.py: ``developer_server``, a server started for the
session, playing the one on the developer's machine or a shared one; and
``developer_database``, on it a migrated database with data that must come out of each
test unchanged.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import psycopg
import pytest
from port_for import select_random
from sqlalchemy.engine import URL

from dbtoolkit.guard import Guard
from dbtoolkit.server import Server, find_pg_ctl, postgresql_config, running_server


@pytest.fixture(scope="session")
def developer_server(pytestconfig: pytest.Config, dbtoolkit_guard: Guard) -> Iterator[Server]:
    """A server playing the developer's own, with databases that are not the run's."""
    with ExitStack() as stack:
        with dbtoolkit_guard.unblocked():  # not the run's own server: started on purpose
            local = stack.enter_context(
                running_server(
                    find_pg_ctl(postgresql_config(pytestconfig)),
                    host="127.0.0.1",
                    port=select_random(),
                    user="postgres",
                    password=None,
                )
            )
        yield local.server


def snapshot(url: URL) -> dict[str, list[tuple[object, ...]]]:
    """Every table of the database at ``url`` with its rows."""
    with psycopg.connect(libpq(url)) as connection:
        tables = [
            name
            for (name,) in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
        ]
        return {
            table: sorted(connection.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr)
            for table in tables
        }


def libpq(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def developer_database(developer_server: Server, dbtoolkit_guard: Guard) -> Iterator[URL]:
    """The developer's database, migrated and with data, as it is on their machine.

    It must be unchanged after the test.
    """
    name = f"dev_{uuid.uuid4().hex[:8]}"
    admin, url = developer_server.url(), developer_server.url(name)
    with dbtoolkit_guard.unblocked():
        with psycopg.connect(libpq(admin), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        with psycopg.connect(libpq(url)) as connection:
            connection.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
            connection.execute("INSERT INTO alembic_version VALUES ('0000developer')")
            connection.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
            connection.execute("INSERT INTO notes VALUES (1, 'mine'), (2, 'also mine')")
        before = snapshot(url)
    yield url
    with dbtoolkit_guard.unblocked():
        assert snapshot(url) == before
        with psycopg.connect(libpq(admin), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
