"""The application's engines in the test: recovery after a leak, db_bind, polyfactory, env.py.

The example applications (test_apps.py) show the sandbox on code as it is written;
these runs pin down its edges on the catalog project.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from catalog import CATALOG_SETTINGS, run, run_in_process

EXAMPLES = Path(__file__).parent / "examples"

# The catalog project's application: an engine built at import from DATABASE_URL,
# which dbtoolkit_env points at the test database, with a pool, as most apps have.
APP = """
    import os

    from sqlalchemy import create_engine, func, select
    from sqlalchemy.orm import Session

    from catalog_models import Author

    engine = create_engine(os.environ["DATABASE_URL"])


    def add_author(name):
        with Session(engine) as session:
            session.add(Author(name=name))
            session.commit()


    def count_authors():
        with engine.connect() as connection:
            return connection.scalar(select(func.count()).select_from(Author))
"""

APP_SETTINGS = CATALOG_SETTINGS + "dbtoolkit_env = DATABASE_URL={url}\ndbtoolkit_driver = psycopg\n"

AFTER_A_LEAK = """
    import psycopg
    import pytest

    import catalog_app


    def test_uses_the_app(db_session):
        catalog_app.add_author("Ada")
        assert catalog_app.count_authors() == 1


    def test_leaks_through_a_raw_connection(dbtoolkit_database):
        url = dbtoolkit_database.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(url) as connection:
            connection.execute("INSERT INTO authors (name) VALUES ('Leaked')")


    @pytest.mark.parametrize("n", [1, 2, 3])
    def test_after_the_leak_the_app_works(db_session, n):
        assert catalog_app.count_authors() == 0
        catalog_app.add_author(f"Grace {n}")
        assert catalog_app.count_authors() == 1
"""


@pytest.mark.catalog(settings=APP_SETTINGS)
def test_after_a_leak_the_database_is_recreated_and_the_apps_engine_goes_on(
    catalog: pytest.Pytester,
) -> None:
    catalog.makepyfile(catalog_app=APP, test_after_a_leak=AFTER_A_LEAK)
    result = run(catalog)
    # The leaking test errors at teardown; the three after it pass: no stale pooled
    # connection of the application's engine survived the recreated database.
    result.assert_outcomes(passed=5, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_leaks_through_a_raw_connection*"])


WITH_DB_BIND = """
    import psycopg
    from sqlalchemy.orm import sessionmaker

    SessionLocal = sessionmaker()


    def test_binds_and_leaks(db_session, db_bind, dbtoolkit_database):
        db_bind(SessionLocal)
        url = dbtoolkit_database.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(url) as connection:
            connection.execute("INSERT INTO authors (name) VALUES ('Leaked')")
"""


def test_a_leak_does_not_recommend_db_bind_to_a_test_that_used_it(
    catalog: pytest.Pytester,
) -> None:
    catalog.makepyfile(test_bound=WITH_DB_BIND)
    result = run(catalog)
    result.assert_outcomes(passed=1, errors=1)
    assert (
        "LeakError: rows were committed outside the test's transaction while it ran: 1 row "
        "inserted into public.authors. Engines on the test database join the test, but other "
        "connections do not (a raw driver connection, dbtoolkit's engine fixture, another "
        "process, an engine on another URL): write through db_session or an engine on the "
        "test database, or give the test a database of its own with "
        '@pytest.mark.dbtoolkit(isolation="database"). The rows were removed; '
        "--dbtoolkit-leaks=warn reports them as a warning instead"
    ) in result.outlines


FLASK_DB_BIND = """
from app.extensions import db


def test_binds_flask_sqlalchemy(app, db_session, db_bind):
    db_bind(db.session)
"""


def test_db_bind_says_why_it_cannot_bind_flask_sqlalchemy(pytester: pytest.Pytester) -> None:
    shutil.copytree(EXAMPLES / "flask_app", pytester.path, dirs_exist_ok=True)
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        "dbtoolkit_alembic_ini = migrations/alembic.ini\ndbtoolkit_script_location = migrations\n"
        "dbtoolkit_migrate_command = flask db upgrade\ndbtoolkit_env = DATABASE_URL={url}\n"
        "dbtoolkit_driver = psycopg\n"
    )
    (pytester.path / "tests" / "test_db_bind.py").write_text(FLASK_DB_BIND)
    result = run(pytester, "tests/test_db_bind.py")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "IsolationError: db_bind(<sqlalchemy.orm.scoping.scoped_session object at *>) "
            "cannot take effect: Flask-SQLAlchemy 3's Session.get_bind ignores the bind a "
            "session is given and returns db.engine (pallets-eco/flask-sqlalchemy#1167); point "
            "the app's SQLALCHEMY_DATABASE_URI at the test database with dbtoolkit_env instead: "
            "db.engine then joins the test, and db.session with it, without db_bind"
        ]
    )


POLYFACTORIES = """
    from polyfactory.factories.sqlalchemy_factory import SQLAlchemyFactory

    from catalog_models import Author


    class AuthorPolyfactory(SQLAlchemyFactory[Author]):
        __set_primary_key__ = False
"""

POLYFACTORY_TESTS = """
    import pytest
    from sqlalchemy import func, select

    from catalog_models import Author
    from catalog_polyfactories import AuthorPolyfactory
    from dbtoolkit import async_seed, seed

    seeded = seed(AuthorPolyfactory, 3)
    async_seeded = async_seed(AuthorPolyfactory, 2)
    names = {}


    def count(session):
        return session.scalar(select(func.count()).select_from(Author))


    def test_seeds_and_creates(db_session, seeded):
        names["first"] = [author.name for author in seeded]
        AuthorPolyfactory.create_sync()
        assert count(db_session) == 4


    def test_the_same_seed_again(db_session, seeded):
        assert [author.name for author in seeded] == names["first"]
        assert count(db_session) == 3


    @pytest.mark.asyncio
    async def test_async(async_db_session, async_seeded):
        await AuthorPolyfactory.create_async()
        assert await async_db_session.scalar(select(func.count()).select_from(Author)) == 3


    def test_starts_empty(db_session):
        assert count(db_session) == 0
"""


@pytest.mark.catalog(
    settings="dbtoolkit_alembic_ini = alembic.ini\n"
    "dbtoolkit_factories =\n    catalog_factories\n    catalog_polyfactories\n"
)
def test_polyfactory_factories_are_bound_like_factory_boys(catalog: pytest.Pytester) -> None:
    catalog.makepyfile(catalog_polyfactories=POLYFACTORIES, test_poly=POLYFACTORY_TESTS)
    result = run(catalog, "-v")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        ["*factories catalog_factories, catalog_polyfactories (from ini), 3 bound*"]
    )


ASYNC_ENV_PY = """
    import asyncio

    from alembic import context
    from sqlalchemy import pool
    from sqlalchemy.ext.asyncio import async_engine_from_config

    config = context.config


    def do_run_migrations(connection):
        context.configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()


    async def run_async_migrations():
        connectable = async_engine_from_config(
            config.get_section(config.config_ini_section, {}),
            prefix="sqlalchemy.",
            poolclass=pool.NullPool,
        )
        async with connectable.connect() as connection:
            await connection.run_sync(do_run_migrations)
        await connectable.dispose()


    asyncio.run(run_async_migrations())
"""


def test_an_async_env_py_is_given_an_async_driver(catalog: pytest.Pytester) -> None:
    catalog.makepyfile(
        **{
            "migrations/env": ASYNC_ENV_PY,
            "test_books": "def test_books(db_session, seeded_books):\n    pass\n",
        }
    )
    run(catalog).assert_outcomes(passed=1)


@pytest.mark.catalog(settings=CATALOG_SETTINGS + "dbtoolkit_session_class = sqlmodel.Session\n")
def test_the_session_class_is_db_sessions_and_the_header_names_it(
    catalog: pytest.Pytester,
) -> None:
    catalog.makepyfile(
        test_session="""
        import sqlmodel


        def test_db_session_is_sqlmodels(db_session):
            assert type(db_session) is sqlmodel.Session
            assert db_session.exec(sqlmodel.text("SELECT 1")).one() == (1,)
        """
    )
    result = run(catalog)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["dbtoolkit: *; session sqlmodel.orm.session.Session (from ini)*"])
    error = run_in_process(catalog, "--dbtoolkit-session-class=sqlmodel.Nope")
    assert error.ret == pytest.ExitCode.USAGE_ERROR
    error.stderr.fnmatch_lines(
        [
            "ERROR: dbtoolkit session_class 'sqlmodel.Nope' (from cli) could not be imported: "
            "AttributeError: module 'sqlmodel' has no attribute 'Nope'; fix "
            "--dbtoolkit-session-class, DBTOOLKIT_SESSION_CLASS or dbtoolkit_session_class, "
            "e.g. sqlmodel.Session"
        ]
    )
