"""Nothing outside the run's own databases: refusals, word for word, and nothing touched.

Each test runs a project in a pytest process of its own and then finds the developer's
database (``developer_database``) exactly as it was: same tables, rows, alembic_version.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from catalog import run
from developer import libpq
from sqlalchemy.engine import URL

EXAMPLES = Path(__file__).parent / "examples"

FIXES = (
    "Point the application at the test database with dbtoolkit_env (e.g. "
    "DATABASE_URL={url}), or, if the tests really need that database, allow it with "
    "dbtoolkit_allow_urls (--dbtoolkit-allow-urls)"
)


def refusal(who: str, url: URL) -> str:
    target = url.set(drivername="postgresql").render_as_string(hide_password=True)
    return (
        f"OutsideDatabaseError: {who} tried to connect to {target}, which is not one of this "
        f"run's databases; nothing was sent to it. {FIXES}"
    )


# An application module as many are written: its engine built at import from .env.
APP_DB = """
    from dotenv import dotenv_values
    from sqlalchemy import create_engine, text

    engine = create_engine(dotenv_values(".env")["DATABASE_URL"])


    def save_note(body):
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO notes VALUES (3, :body)"), {"body": body})
"""

REACHING_OUT = """
    import psycopg
    from dotenv import dotenv_values

    import app_db


    def test_the_app_engine_writes(db_session):
        app_db.save_note("from a test")


    def test_a_raw_connection_writes(db_session):
        with psycopg.connect(dotenv_values(".env")["DATABASE_URL"]) as connection:
            connection.execute("DELETE FROM notes")
"""


@pytest.mark.parametrize("server", ["started", "existing"])
def test_an_engine_built_from_dotenv_and_a_raw_connection_are_refused(
    catalog: pytest.Pytester, developer_database: URL, developer_server, server: str
) -> None:
    (catalog.path / ".env").write_text(f"DATABASE_URL={libpq(developer_database)}\n")
    catalog.makepyfile(app_db=APP_DB, test_reaching_out=REACHING_OUT)
    args = () if server == "started" else (f"--dbtoolkit-url={libpq(developer_server.url())}",)
    result = run(catalog, *args)
    result.assert_outcomes(failed=2)
    for test in ("test_the_app_engine_writes", "test_a_raw_connection_writes"):
        assert (
            result.outlines.count(refusal(f"test test_reaching_out.py::{test}", developer_database))
            == 1
        )


def test_a_url_the_settings_allow_is_let_through(
    catalog: pytest.Pytester, developer_database: URL
) -> None:
    catalog.makepyfile(
        test_reading=f"""
        import psycopg


        def test_reads_the_notes(db_session):
            with psycopg.connect({libpq(developer_database)!r}) as connection:
                assert connection.execute("SELECT count(*) FROM notes").fetchone() == (2,)
        """
    )
    result = run(catalog, "-o", f"dbtoolkit_allow_urls={developer_database}")  # the ini key
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"dbtoolkit: may also connect to {developer_database} (from ini)"])


FASTAPI_DB_TEST = """
from sqlmodel import select

from app.models import User


def test_users_table_is_there(db_session):
    assert [user.email for user in db_session.exec(select(User))] == {emails!r}
"""


def copy_fastapi_app(
    pytester: pytest.Pytester, developer_database: URL, settings: str, test: str, emails: list[str]
) -> None:
    shutil.copytree(EXAMPLES / "fastapi_app", pytester.path, dirs_exist_ok=True)
    (pytester.path / ".env").write_text(
        "FIRST_SUPERUSER=admin@example.com\nFIRST_SUPERUSER_PASSWORD=changethis\n"
        f"POSTGRES_SERVER={developer_database.host}\nPOSTGRES_PORT={developer_database.port}\n"
        f"POSTGRES_USER={developer_database.username}\nPOSTGRES_DB={developer_database.database}\n"
    )
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        "dbtoolkit_driver = psycopg\ndbtoolkit_session_class = sqlmodel.Session\n" + settings
    )
    (pytester.path / test).write_text(FASTAPI_DB_TEST.format(emails=emails))


def test_an_env_py_that_migrates_the_database_in_dotenv_is_stopped_and_named(
    pytester: pytest.Pytester, developer_database: URL
) -> None:
    # Outside app/tests, whose conftest would reach the database first, through the app.
    copy_fastapi_app(pytester, developer_database, "", "test_db_session.py", [])
    result = run(pytester, "test_db_session.py")
    result.assert_outcomes(errors=1)
    target = developer_database.set(drivername="postgresql").render_as_string(hide_password=True)
    env_py = pytester.path / "app" / "alembic" / "env.py"
    assert (
        f"MigrationError: alembic upgrade head failed: env.py ({env_py}) connected to {target} "
        "instead of the template dbtoolkit migrates, so it takes its URL from elsewhere (the "
        "application's settings, .env); nothing was sent there; make env.py use the "
        "sqlalchemy.url or the connection (config.attributes['connection']) dbtoolkit hands "
        "it, or set dbtoolkit_migrate_command (e.g. 'alembic upgrade head', 'flask db "
        "upgrade') to migrate in a process of its own, with dbtoolkit_env pointing the "
        "application's settings at the template"
    ) in result.outlines


def test_the_same_env_py_migrates_the_template_through_its_own_command(
    pytester: pytest.Pytester, developer_database: URL
) -> None:
    copy_fastapi_app(
        pytester,
        developer_database,
        "dbtoolkit_migrate_command = alembic upgrade head\n"
        "dbtoolkit_env =\n    POSTGRES_SERVER={host}\n    POSTGRES_PORT={port}\n"
        "    POSTGRES_USER={user}\n    POSTGRES_DB={database}\n",
        "app/tests/test_db_session.py",
        ["admin@example.com"],  # what the conftest's session fixture made, through the app
    )
    result = run(pytester, "app/tests/test_db_session.py")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "dbtoolkit: env POSTGRES_SERVER=127.0.0.1, POSTGRES_PORT=*, POSTGRES_USER=postgres, "
            "POSTGRES_DB=dbtoolkit_*_main (from ini)",
            "dbtoolkit: migrate with alembic upgrade head (from ini)",
        ]
    )


def test_a_flask_migrate_env_py_in_process_names_the_app_context(
    pytester: pytest.Pytester, developer_database: URL
) -> None:
    shutil.copytree(EXAMPLES / "flask_app", pytester.path, dirs_exist_ok=True)
    (pytester.path / ".env").write_text(f"DATABASE_URL={libpq(developer_database)}\n")
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        "dbtoolkit_alembic_ini = migrations/alembic.ini\n"
        "dbtoolkit_script_location = migrations\n"
        "dbtoolkit_driver = psycopg\n"
        "dbtoolkit_env = DATABASE_URL={url}\n"
    )
    result = run(pytester, "tests/test_users.py::test_create_user")
    result.assert_outcomes(errors=1)
    env_py = pytester.path / "migrations" / "env.py"
    assert (
        f"MigrationError: alembic upgrade head failed in env.py ({env_py}): RuntimeError: "
        "Working outside of application context.; env.py needs the application (a Flask app "
        "context): make env.py use the sqlalchemy.url or the connection "
        "(config.attributes['connection']) dbtoolkit hands it, or set "
        "dbtoolkit_migrate_command (e.g. 'alembic upgrade head', 'flask db upgrade') to "
        "migrate in a process of its own, with dbtoolkit_env pointing the application's "
        "settings at the template"
    ) in result.outlines
