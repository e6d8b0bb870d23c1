"""Real applications, written the way their starters write them, tested as they are.

Each app lives in ``tests/examples/<app>/`` with its own test suite; a test copies it,
points its ``.env`` at a "developer" database, adds dbtoolkit's ini lines and runs the
app's suite in a pytest process of its own. The developer database sits on a server
of its own (the "existing server" of the last tests) and must come out unchanged:
same tables, same rows, same ``alembic_version``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import forkserver
import pytest
from developer import libpq
from sqlalchemy.engine import URL

EXAMPLES = Path(__file__).parent / "examples"

# The lines a user adds to the FastAPI starter's pytest settings (besides pytest-asyncio's,
# which its own plugin asks for).
FASTAPI_SETTINGS = """\
dbtoolkit_driver = psycopg
dbtoolkit_migrate_command = alembic upgrade head
dbtoolkit_env =
    POSTGRES_SERVER={host}
    POSTGRES_PORT={port}
    POSTGRES_USER={user}
    POSTGRES_PASSWORD={password}
    POSTGRES_DB={database}
"""

# The lines a user adds to a Flask-Migrate project's pytest settings.
FLASK_SETTINGS = """\
dbtoolkit_driver = psycopg
dbtoolkit_alembic_ini = migrations/alembic.ini
dbtoolkit_script_location = migrations
dbtoolkit_migrate_command = flask db upgrade
dbtoolkit_env = DATABASE_URL={url}
"""

# The lines a user adds to an async FastAPI app's pytest settings: its async engine joins
# the tests through psycopg, whose async connection shares the test's.
ASYNC_SETTINGS = """\
dbtoolkit_driver = psycopg
dbtoolkit_migrate_command = alembic upgrade head
dbtoolkit_env = DATABASE_URL=postgresql+psycopg://{user}:{password}@{host}:{port}/{database}
"""

ORDERS = {
    "forward": ("-p", "no:randomly"),
    "reversed": ("-p", "no:randomly", "--reverse"),
    "random": ("-p", "randomly", "--randomly-seed=1"),
    "xdist": ("-p", "no:randomly", "-n", "2"),
}


@pytest.fixture
def apps_cache(inner_cache: Path) -> str:
    """The inner runs' shared pytest cache: each app is migrated once, then started from it."""
    return f"cache_dir={inner_cache / 'apps'}"


def copy_app(pytester: pytest.Pytester, name: str, settings: str, dotenv: dict[str, str]) -> None:
    """Copy the app, point its .env at the developer's database, and add ``settings``."""
    shutil.copytree(EXAMPLES / name, pytester.path, dirs_exist_ok=True)
    env_file = pytester.path / ".env"
    lines = env_file.read_text().splitlines()
    for key, value in dotenv.items():
        lines = [f"{key}={value}" if line.startswith(f"{key}=") else line for line in lines]
    env_file.write_text("\n".join(lines) + "\n")
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n" + settings)


def fastapi_dotenv(url: URL) -> dict[str, str]:
    return {
        "POSTGRES_SERVER": str(url.host),
        "POSTGRES_PORT": str(url.port),
        "POSTGRES_USER": str(url.username),
        "POSTGRES_PASSWORD": "",
        "POSTGRES_DB": str(url.database),
    }


@pytest.mark.parametrize("order", ORDERS)
def test_the_fastapi_starter_passes_its_own_tests_with_ini_settings_alone(
    pytester: pytest.Pytester, developer_database: URL, apps_cache: str, order: str
) -> None:
    copy_app(pytester, "fastapi_app", FASTAPI_SETTINGS, fastapi_dotenv(developer_database))
    result = forkserver.runpytest(pytester, "-o", apps_cache, *ORDERS[order], timeout=300)
    result.assert_outcomes(passed=7)


@pytest.mark.parametrize("order", ORDERS)
def test_the_flask_migrate_app_passes_its_own_tests_with_ini_settings_alone(
    pytester: pytest.Pytester, developer_database: URL, apps_cache: str, order: str
) -> None:
    copy_app(pytester, "flask_app", FLASK_SETTINGS, {"DATABASE_URL": libpq(developer_database)})
    result = forkserver.runpytest(pytester, "-o", apps_cache, *ORDERS[order], timeout=300)
    result.assert_outcomes(passed=6)


@pytest.mark.parametrize("order", ORDERS)
def test_the_async_fastapi_app_passes_its_own_tests_with_ini_settings_alone(
    pytester: pytest.Pytester, developer_database: URL, apps_cache: str, order: str
) -> None:
    dev = developer_database.set(drivername="postgresql+psycopg")
    dotenv = {"DATABASE_URL": dev.render_as_string(hide_password=False)}
    copy_app(pytester, "async_app", ASYNC_SETTINGS, dotenv)
    result = forkserver.runpytest(pytester, "-o", apps_cache, *ORDERS[order], timeout=300)
    result.assert_outcomes(passed=4)


def test_an_async_app_on_asyncpg_is_told_how_to_join(
    pytester: pytest.Pytester, developer_database: URL, apps_cache: str
) -> None:
    asyncpg = ASYNC_SETTINGS.replace("postgresql+psycopg", "postgresql+asyncpg")
    dev = developer_database.set(drivername="postgresql+asyncpg")
    copy_app(pytester, "async_app", asyncpg, {"DATABASE_URL": dev.render_as_string()})
    result = forkserver.runpytest(pytester, "-o", apps_cache, "-p", "no:randomly", timeout=300)
    result.assert_outcomes(failed=4)
    assert (
        result.outlines.count(
            "ConfigError: an async engine of the application reaches the test database with "
            "asyncpg; it joins the test's transaction only through psycopg, whose async "
            "connection can share the test's: use postgresql+psycopg in the application's URL, "
            "with dbtoolkit_driver = psycopg"
        )
        == 4
    )
