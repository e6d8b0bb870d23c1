"""Work done once: migrations once for all xdist workers, and once across runs.

The catalog project's last revision appends a line to ``migrations.log`` each time it
runs, which counts the migrations.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from catalog import run

COUNT_MIGRATION = (
    'import pathlib; log = pathlib.Path(__file__).parents[2] / "migrations.log"; '
    'log.write_text((log.read_text() if log.exists() else "") + "ran\\n")'
)

# Each test's runs have a pytest cache of their own, whose contents they look at.
pytestmark = pytest.mark.catalog(second_revision=COUNT_MIGRATION, own_cache=True)

WORKER_TESTS = """
from sqlalchemy import text


def test_one(db_session, pytestconfig):
    worker = getattr(pytestconfig, "workerinput", {}).get("workerid", "main")
    assert db_session.scalar(text("SELECT current_database()")).endswith("_" + worker)


def test_two(db_session, pytestconfig):
    test_one(db_session, pytestconfig)


def test_three(db_session, pytestconfig):
    test_one(db_session, pytestconfig)


def test_four(db_session, pytestconfig):
    test_one(db_session, pytestconfig)
"""


def migrations_run(catalog) -> int:
    log = catalog.path / "migrations.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def first_run(catalog) -> None:
    """Run the worker tests once in the catalog project that counts its migrations."""
    catalog.makepyfile(test_workers=WORKER_TESTS)
    run(catalog).assert_outcomes(passed=4)


def saved(catalog) -> Path:
    """The project's saved data directories, in pytest's cache."""
    return catalog.path / ".pytest_cache" / "d" / "dbtoolkit"


def test_xdist_workers_share_one_migration_and_each_has_its_own_copy(catalog):
    catalog.makepyfile(test_workers=WORKER_TESTS)
    result = run(catalog, "-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    assert migrations_run(catalog) == 1


def test_a_second_run_reuses_the_migrated_data_directory_until_a_migration_changes(catalog):
    first_run(catalog)
    run(catalog).assert_outcomes(passed=4)
    assert migrations_run(catalog) == 1

    change_a_migration(catalog)
    run(catalog).assert_outcomes(passed=4)
    assert migrations_run(catalog) == 2


def test_a_damaged_saved_data_directory_is_rebuilt_not_an_error(catalog):
    first_run(catalog)
    (data,) = saved(catalog).glob("*/data")
    shutil.rmtree(data / "base")  # every database's files, as a disk clean-up might

    run(catalog).assert_outcomes(passed=4)
    assert migrations_run(catalog) == 2
    run(catalog).assert_outcomes(passed=4)
    assert migrations_run(catalog) == 2


ORIGIN_TEST = """
from pathlib import Path

from sqlalchemy import text


def test_the_server_runs_on_a_copy_of_the_saved_initdb(db_session):
    data_directory = Path(db_session.scalar(text("SHOW data_directory")))
    assert (data_directory / "copied-from-the-saved-initdb").exists()
"""


def change_a_migration(catalog) -> None:
    revision = catalog.path / "migrations" / "versions" / "bbb2_books.py"
    revision.write_text(revision.read_text() + "\n# a changed migration\n")


def saved_initdb(catalog) -> Path:
    (data,) = (saved(catalog) / "initdb").glob("*/data")
    return data


def test_once_migrations_change_initdb_is_saved_and_the_next_change_only_migrates(catalog):
    first_run(catalog)
    assert not (saved(catalog) / "initdb").exists()

    change_a_migration(catalog)
    run(catalog).assert_outcomes(passed=4)
    (saved_initdb(catalog) / "copied-from-the-saved-initdb").touch()

    change_a_migration(catalog)
    catalog.makepyfile(test_origin=ORIGIN_TEST)
    run(catalog).assert_outcomes(passed=5)
    assert migrations_run(catalog) == 3


def test_a_damaged_saved_initdb_is_rebuilt_not_an_error(catalog):
    first_run(catalog)
    change_a_migration(catalog)
    run(catalog).assert_outcomes(passed=4)
    shutil.rmtree(saved_initdb(catalog) / "global")  # the cluster's own catalogs

    change_a_migration(catalog)
    run(catalog).assert_outcomes(passed=4)
    assert migrations_run(catalog) == 3
    assert (saved_initdb(catalog) / "global" / "pg_control").is_file()


def test_without_pytests_cache_every_run_migrates(catalog):
    catalog.makepyfile(test_workers=WORKER_TESTS)
    for _ in range(2):
        run(catalog, "-p", "no:cacheprovider").assert_outcomes(passed=4)
    assert migrations_run(catalog) == 2
