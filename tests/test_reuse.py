"""Work done once: migrations once for all xdist workers, and once across runs.

The catalog project's last revision appends a line to ``migrations.log`` each time it
runs, which counts the migrations.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from catalog import catalog_project, run

COUNT_MIGRATION = (
    'import pathlib; log = pathlib.Path(__file__).parents[2] / "migrations.log"; '
    'log.write_text((log.read_text() if log.exists() else "") + "ran\\n")'
)

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


def migrations_run(pytester) -> int:
    log = pytester.path / "migrations.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def first_run(pytester) -> None:
    """Run the worker tests once in a new catalog project that counts its migrations."""
    catalog_project(pytester, second_revision=COUNT_MIGRATION)
    pytester.makepyfile(test_workers=WORKER_TESTS)
    run(pytester).assert_outcomes(passed=4)


def saved(pytester) -> Path:
    """The project's saved data directories, in pytest's cache."""
    return pytester.path / ".pytest_cache" / "d" / "dbtoolkit"


def test_xdist_workers_share_one_migration_and_each_has_its_own_copy(pytester):
    catalog_project(pytester, second_revision=COUNT_MIGRATION)
    pytester.makepyfile(test_workers=WORKER_TESTS)
    result = run(pytester, "-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    assert migrations_run(pytester) == 1


def test_a_second_run_reuses_the_migrated_data_directory_until_a_migration_changes(pytester):
    first_run(pytester)
    run(pytester).assert_outcomes(passed=4)
    assert migrations_run(pytester) == 1

    change_a_migration(pytester)
    run(pytester).assert_outcomes(passed=4)
    assert migrations_run(pytester) == 2


def test_a_damaged_saved_data_directory_is_rebuilt_not_an_error(pytester):
    first_run(pytester)
    (data,) = saved(pytester).glob("*/data")
    shutil.rmtree(data / "base")  # every database's files, as a disk clean-up might

    run(pytester).assert_outcomes(passed=4)
    assert migrations_run(pytester) == 2
    run(pytester).assert_outcomes(passed=4)
    assert migrations_run(pytester) == 2


ORIGIN_TEST = """
from pathlib import Path

from sqlalchemy import text


def test_the_server_runs_on_a_copy_of_the_saved_initdb(db_session):
    data_directory = Path(db_session.scalar(text("SHOW data_directory")))
    assert (data_directory / "copied-from-the-saved-initdb").exists()
"""


def change_a_migration(pytester) -> None:
    revision = pytester.path / "migrations" / "versions" / "bbb2_books.py"
    revision.write_text(revision.read_text() + "\n# a changed migration\n")


def saved_initdb(pytester) -> Path:
    (data,) = (saved(pytester) / "initdb").glob("*/data")
    return data


def test_once_migrations_change_initdb_is_saved_and_the_next_change_only_migrates(pytester):
    first_run(pytester)
    assert not (saved(pytester) / "initdb").exists()

    change_a_migration(pytester)
    run(pytester).assert_outcomes(passed=4)
    (saved_initdb(pytester) / "copied-from-the-saved-initdb").touch()

    change_a_migration(pytester)
    pytester.makepyfile(test_origin=ORIGIN_TEST)
    run(pytester).assert_outcomes(passed=5)
    assert migrations_run(pytester) == 3


def test_a_damaged_saved_initdb_is_rebuilt_not_an_error(pytester):
    first_run(pytester)
    change_a_migration(pytester)
    run(pytester).assert_outcomes(passed=4)
    shutil.rmtree(saved_initdb(pytester) / "global")  # the cluster's own catalogs

    change_a_migration(pytester)
    run(pytester).assert_outcomes(passed=4)
    assert migrations_run(pytester) == 3
    assert (saved_initdb(pytester) / "global" / "pg_control").is_file()


def test_without_pytests_cache_every_run_migrates(pytester):
    catalog_project(pytester, second_revision=COUNT_MIGRATION)
    pytester.makepyfile(test_workers=WORKER_TESTS)
    for _ in range(2):
        run(pytester, "-p", "no:cacheprovider").assert_outcomes(passed=4)
    assert migrations_run(pytester) == 2
