"""The plugin's own behaviour, seen from a user's project: each test runs pytest on one."""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from catalog import CATALOG_SETTINGS, run, run_in_process, sep_line

from dbtoolkit.seeding import seed_for
from dbtoolkit.server import find_pg_ctl, postgresql_config

# --- The migration -----------------------------------------------------------------


SEEN_ERRORS = """

def pytest_exception_interact(call):
    error = call.excinfo.value
    with open("seen.txt", "a") as seen:
        seen.write(f"{type(error).__name__} caused by {type(error.__cause__).__name__}, "
                   f"{len(call.excinfo.traceback)} frames\\n")
"""


@pytest.mark.catalog(second_revision='op.execute("SELECT * FROM no_such_table")')
def test_a_broken_migration_errors_every_database_test_with_one_line(
    catalog: pytest.Pytester,
) -> None:
    catalog.makepyfile(
        test_books="""
        def test_one(db_session):
            pass

        def test_two(db_session, seeded_authors):
            pass

        def test_three(db_session):
            pass

        def test_without_database():
            assert 1 + 1 == 2
        """
    )
    # What --pdb and other plugins see of the error, after its report was made.
    with (catalog.path / "conftest.py").open("a") as conftest:
        conftest.write(SEEN_ERRORS)
    result = run(catalog)
    result.assert_outcomes(passed=1, errors=3)
    seen = (catalog.path / "seen.txt").read_text().splitlines()
    assert len(seen) == 3
    assert all(line.startswith("MigrationError caused by ProgrammingError, ") for line in seen)
    assert all(int(line.split(", ")[1].split()[0]) > 1 for line in seen)
    revision = catalog.path / "migrations" / "versions" / "bbb2_books.py"
    message = (
        f"MigrationError: alembic upgrade head failed in revision bbb2 "
        f"(Create books, written by authors.; {revision}): "
        'UndefinedTable: relation "no_such_table" does not exist'
    )
    assert result.outlines.count(message) == 3
    # Each error is reported as its header and that one line, nothing else.
    errors = result.outlines[
        result.outlines.index(sep_line(result, "ERRORS")) + 1 : result.outlines.index(
            sep_line(result, "short test summary info")
        )
    ]
    assert errors == [
        line
        for name in ("test_one", "test_two", "test_three")
        for line in (sep_line(result, f"ERROR at setup of {name}"), message)
    ]
    assert "Traceback" not in result.stdout.str()
    assert not [line for line in result.outlines if re.search(r"\.py:\d+", line)]


@pytest.mark.catalog(second_revision='raise RuntimeError("boom")')
def test_a_migration_raising_python_error_names_its_revision(catalog: pytest.Pytester) -> None:
    catalog.makepyfile(test_books="def test_one(db_session):\n    pass\n")
    result = run(catalog)
    result.assert_outcomes(errors=1)
    revision = catalog.path / "migrations" / "versions" / "bbb2_books.py"
    result.stdout.fnmatch_lines(
        [
            "MigrationError: alembic upgrade head failed in revision bbb2 "
            f"(Create books, written by authors.; {revision}): RuntimeError: boom"
        ]
    )


# --- Isolation, whatever the order ---------------------------------------------------

ORDER_TESTS = """
    import pytest
    from sqlalchemy import delete, func, select, text
    from sqlalchemy.exc import IntegrityError

    from catalog_factories import AuthorFactory, BookFactory
    from catalog_models import Author, Book


    def counts(session):
        return tuple(
            session.scalar(select(func.count()).select_from(model)) for model in (Author, Book)
        )


    def test_seed_fixtures_add_up(db_session, seeded_authors, seeded_books):
        assert counts(db_session) == (5, 2)


    @pytest.mark.parametrize("attempt", [1, 2])
    def test_commit_a_fixed_name(db_session, seeded_authors, attempt):
        # A leaked commit would make the second attempt a unique violation.
        db_session.add(Author(name="Ada Lovelace"))
        db_session.commit()
        assert counts(db_session) == (4, 0)


    def test_delete_everything(db_session, seeded_books):
        assert counts(db_session) == (2, 2)
        db_session.execute(delete(Book))
        db_session.execute(delete(Author))
        db_session.commit()
        assert counts(db_session) == (0, 0)


    def test_failed_statement_and_rollback_keep_the_seed(db_session, seeded_authors):
        db_session.add(AuthorFactory.build(name=seeded_authors[0].name))
        with pytest.raises(IntegrityError):
            db_session.commit()
        db_session.rollback()
        assert counts(db_session) == (3, 0)


    @pytest.mark.parametrize("attempt", [1, 2])
    def test_ddl_is_undone(db_session, attempt):
        assert db_session.scalar(text("SELECT to_regclass('scratch')")) is None
        db_session.execute(text("CREATE TABLE scratch (id int)"))
        db_session.commit()
        assert db_session.scalar(text("SELECT to_regclass('scratch')")) == "scratch"


    def test_factory_without_seed(db_session):
        assert counts(db_session) == (0, 0)
        BookFactory.create_batch(4)
        db_session.commit()
        assert counts(db_session) == (4, 4)
"""

ORDER_TEST_NAMES = [
    "test_seed_fixtures_add_up",
    "test_commit_a_fixed_name[1]",
    "test_commit_a_fixed_name[2]",
    "test_delete_everything",
    "test_failed_statement_and_rollback_keep_the_seed",
    "test_ddl_is_undone[1]",
    "test_ddl_is_undone[2]",
    "test_factory_without_seed",
]


@pytest.mark.parametrize(
    ("order", "args"),
    [
        pytest.param("forward", (), id="forward"),
        pytest.param("reversed", ("--reverse",), id="reversed"),
        pytest.param("random", ("-p", "randomly", "--randomly-seed=12345"), id="random"),
    ],
)
def test_every_test_sees_only_its_own_data_in_any_order(
    catalog: pytest.Pytester, order: str, args: tuple[str, ...]
) -> None:
    catalog.makepyfile(test_order=ORDER_TESTS)
    result = run(catalog, "-v", *args, randomly=order == "random")
    result.assert_outcomes(passed=len(ORDER_TEST_NAMES))
    ran = [
        match[1]
        for line in result.outlines
        if (match := re.match(r"test_order\.py::(\S+) PASSED", line))
    ]
    assert sorted(ran) == sorted(ORDER_TEST_NAMES)
    if order == "random":
        result.stdout.fnmatch_lines(["Using --randomly-seed=12345"])
    if order == "forward":
        assert ran == ORDER_TEST_NAMES
    elif order == "reversed":
        assert ran == ORDER_TEST_NAMES[::-1]
    else:
        assert ran not in (ORDER_TEST_NAMES, ORDER_TEST_NAMES[::-1])


def test_every_test_sees_only_its_own_data_across_xdist_workers(
    catalog: pytest.Pytester,
) -> None:
    catalog.makepyfile(test_order=ORDER_TESTS)
    result = run(catalog, "-n", "2")
    result.assert_outcomes(passed=len(ORDER_TEST_NAMES))
    result.stdout.fnmatch_lines([f"2 workers [[]{len(ORDER_TEST_NAMES)} items[]]"])


PG_CTL_LOGGER = """\
#!/bin/sh
echo "$@" >> {log}
exec {pg_ctl} "$@"
"""


@pytest.mark.catalog(own_cache=True)  # it looks at what the run saved there
# One xdist worker shows what a worker imports, as two would, for a process less to start.
@pytest.mark.parametrize("args", [(), ("-n", "1")], ids=["in-process", "xdist"])
def test_a_run_without_database_tests_starts_no_server_and_migrates_nothing(
    catalog: pytest.Pytester,
    pytestconfig: pytest.Config,
    request: pytest.FixtureRequest,
    args: tuple[str, ...],
) -> None:
    # Where the server's OS user (when pytest runs as root) can run it and write the log.
    shared = Path(tempfile.mkdtemp(prefix="dbtoolkit-test-"))
    shared.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(shared))
    log, pg_ctl = shared / "pg_ctl.log", shared / "pg_ctl"
    log.touch(mode=0o666)
    log.chmod(0o666)
    real = find_pg_ctl(postgresql_config(pytestconfig))
    pg_ctl.write_text(PG_CTL_LOGGER.format(log=log, pg_ctl=real))
    pg_ctl.chmod(0o755)
    env_py = catalog.path / "migrations" / "env.py"
    marker = f"with open({str(log)!r}, 'a') as log:\n    log.write('migrated\\n')\n"
    env_py.write_text(marker + env_py.read_text())
    catalog.makepyfile(test_plain=NOTHING_IMPORTED)
    # test_plain looks at what its process imported: one started from nothing.
    result = run(catalog, f"--postgresql-exec={pg_ctl}", *args, fresh=True)
    result.assert_outcomes(passed=2)
    assert set(log.read_text().splitlines()) == {"--version"}  # the header asks, no more
    assert not (catalog.path / ".pytest_cache" / "d" / "dbtoolkit").exists()
    assert "dbtoolkit: migrations head" not in result.stdout.str()

    # The same with a database test: the log shows the server started and migrated.
    catalog.makepyfile(test_db="def test_db(db_session):\n    pass\n")
    result = run(catalog, f"--postgresql-exec={pg_ctl}", "test_db.py", *args)
    result.assert_outcomes(passed=1)
    assert "migrated" in log.read_text().splitlines()
    assert any(line.startswith("start") for line in log.read_text().splitlines())
    if not args:  # the xdist controller collects nothing: it cannot tell
        result.stdout.fnmatch_lines(["collected 1 item", "dbtoolkit: migrations head bbb2"])


# Run without a database test, the plugin imports none of these (the project's factories
# import SQLAlchemy's ORM and factory_boy, as its tests would).
NOTHING_IMPORTED = """\
import sys

HEAVY = ["alembic", "mako", "psycopg2", "greenlet", "asyncpg", "dbtoolkit.schema",
         "dbtoolkit.isolation", "dbtoolkit.provision", "dbtoolkit.migrations",
         "dbtoolkit.sandbox", "dbtoolkit.leaks", "dbtoolkit.cache", "dbtoolkit.queries"]


def test_one():
    assert [name for name in HEAVY if name in sys.modules] == []


def test_two():
    pass
"""


STDLIB = sys.stdlib_module_names
RECORD_MODULES = """\
import sys
from pathlib import Path


def test_unit():
    Path("modules.txt").write_text("\\n".join(sorted(sys.modules)))
"""


def test_unit_tests_import_nothing_more_than_without_the_plugin(pytester: pytest.Pytester) -> None:
    """A project's unit tests (no setting, no database): only dbtoolkit's light modules more.

    As imported by the end of the test, with the plugin and with ``-p no:dbtoolkit``.
    """
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_unit=RECORD_MODULES)
    imported = {}
    for plugin in ("dbtoolkit", "no:dbtoolkit"):
        run(pytester, "-p", plugin, fresh=True).assert_outcomes(passed=1)
        imported[plugin] = set((pytester.path / "modules.txt").read_text().split())
    more = imported["dbtoolkit"] - imported["no:dbtoolkit"]
    light = {"dbtoolkit", "dbtoolkit.plugin", "dbtoolkit.fixtures", "dbtoolkit.settings"}
    assert light <= more
    others = {name for name in more if name.split(".")[0] not in {"dbtoolkit", *STDLIB}}
    heavy = {"dbtoolkit.schema", "dbtoolkit.isolation", "dbtoolkit.provision", "dbtoolkit.leaks"}
    assert (others, more & heavy) == (set(), set())


# --- The header and the settings ---------------------------------------------------


def test_header_says_the_server_runs_as_postgres_when_pytest_runs_as_root(
    catalog: pytest.Pytester,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("only a run as root hands the server to another OS user")
    catalog.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = run_in_process(catalog, "--co")
    result.assert_outcomes()
    result.stdout.fnmatch_lines(
        [
            "dbtoolkit: pytest-postgresql starts PostgreSQL * with */pg_ctl, "
            "run as OS user 'postgres' because pytest runs as root"
        ]
    )


SEED_INI = CATALOG_SETTINGS + "dbtoolkit_seed = 3\n"


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        pytest.param(
            {"DBTOOLKIT_SEED": "5"},
            ("--dbtoolkit-seed=7", "--dbtoolkit-factories=catalog_factories"),
            "schema {path}/alembic.ini (from ini); "
            "factories catalog_factories (from cli), 2 bound; seed 7 (from cli); "
            "leaks fail (from default); driver psycopg2 (from default)",
            id="cli-beats-env-and-ini",
            marks=pytest.mark.catalog(settings=SEED_INI),
        ),
        pytest.param(
            {
                "DBTOOLKIT_SEED": "5",
                "DBTOOLKIT_ALEMBIC_INI": "alembic.ini",
                "DBTOOLKIT_DRIVER": "psycopg",
            },
            ("--dbtoolkit-leaks=WARN",),
            "schema {path}/alembic.ini (from env); "
            "factories catalog_factories (from ini), 2 bound; seed 5 (from env); "
            "leaks warn (from cli); driver psycopg (from env)",
            id="env-beats-ini",
            marks=pytest.mark.catalog(settings=SEED_INI),
        ),
        pytest.param(
            {},
            (),
            "schema {path}/alembic.ini (from default); "
            "factories none (from default), 0 bound; seed 0 (from default); "
            "leaks fail (from default); driver psycopg2 (from default)",
            id="defaults",
            marks=pytest.mark.catalog(settings=""),
        ),
    ],
)
def test_header_names_each_setting_and_where_it_came_from(
    catalog: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    args: tuple[str, ...],
    expected: str,
) -> None:
    catalog.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = run_in_process(catalog, "--co", *args)
    result.assert_outcomes()
    assert f"dbtoolkit: {expected.format(path=catalog.path)}" in result.outlines


@pytest.mark.catalog(settings=SEED_INI)
def test_a_seed_that_is_not_a_number_is_a_usage_error(catalog: pytest.Pytester) -> None:
    catalog.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = run_in_process(catalog, "--dbtoolkit-seed=abc")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == (
        "ERROR: dbtoolkit seed must be a whole number, got 'abc' (from cli); "
        "fix --dbtoolkit-seed, DBTOOLKIT_SEED or dbtoolkit_seed"
    )


@pytest.mark.parametrize(
    ("args", "error"),
    [
        pytest.param(
            ("--dbtoolkit-factories=nope",),
            "factories module 'nope' could not be imported: "
            "ModuleNotFoundError: No module named 'nope'",
            id="cli-missing-module",
        ),
        pytest.param(
            (),
            "factories module 'broken_factories' could not be imported: RuntimeError: boom",
            id="ini-module-that-raises",
            marks=pytest.mark.catalog(
                settings="dbtoolkit_factories =\n    catalog_factories\n    broken_factories\n"
            ),
        ),
    ],
)
def test_a_factories_module_that_does_not_import_is_a_usage_error(
    catalog: pytest.Pytester, args: tuple[str, ...], error: str
) -> None:
    catalog.makepyfile(
        broken_factories='raise RuntimeError("boom")\n',
        test_nothing="def test_nothing():\n    pass\n",
    )
    result = run_in_process(catalog, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == (
        f"ERROR: {error}; fix the module or the dbtoolkit_factories setting (--dbtoolkit-factories)"
    )


# --- Errors in the tests themselves -----------------------------------------------


@pytest.mark.catalog(
    settings="dbtoolkit_alembic_ini = missing/alembic.ini\n"
    "dbtoolkit_factories = catalog_factories\n"
)
def test_a_missing_alembic_ini_errors_every_database_test(catalog: pytest.Pytester) -> None:
    catalog.makepyfile(
        test_books="""
        def test_one(db_session):
            pass

        def test_two(seeded_books):
            pass

        def test_without_database():
            pass
        """
    )
    result = run(catalog)
    result.assert_outcomes(passed=1, errors=2)
    message = (
        f"alembic.ini not found at {catalog.path}/missing/alembic.ini; point "
        "--dbtoolkit-alembic-ini (ini key dbtoolkit_alembic_ini) at your project's alembic.ini"
    )
    assert result.outlines.count(f"ConfigError: {message}") == 2
    assert "Traceback" not in result.stdout.str()


def test_a_factory_outside_a_database_test_fails_with_what_to_request(
    catalog: pytest.Pytester,
) -> None:
    catalog.makepyfile(
        test_books="""
        from catalog_factories import AuthorFactory, BookFactory

        def test_build_needs_no_session():
            assert BookFactory.build().author.name

        def test_create_needs_one():
            AuthorFactory()
        """
    )
    result = run(catalog)
    result.assert_outcomes(passed=1, failed=1)
    message = (
        "NoSessionError: a factory tried to create a row outside a database test; request the "
        "db_session fixture (or a seed fixture such as seeded_users) in this test"
    )
    assert (
        result.outlines[result.outlines.index(sep_line(result, "test_create_needs_one")) + 1]
        == message
    )
    assert "Traceback" not in result.stdout.str()


FAILING_TESTS = """
    from catalog_factories import AuthorFactory


    def test_other_data_first(db_session):
        AuthorFactory.create_batch(4)


    def test_fails_with_data(db_session, seeded_authors):
        author = AuthorFactory()
        print("data:", [seeded.name for seeded in seeded_authors], author.name)
        assert False
"""


def test_a_failing_test_reports_its_seed_and_reproduces_its_data(
    catalog: pytest.Pytester,
) -> None:
    catalog.makepyfile(test_seeded=FAILING_TESTS)
    seed = seed_for(0, "test_seeded.py::test_fails_with_data")
    seed_line = (
        f"Faker/factory_boy seed of this test: {seed} (derived from its node id and "
        "--dbtoolkit-seed; its fixtures draw from it, its body from the seed + 1, on every "
        "run and in any order); rerun it with the same data: "
        "pytest 'test_seeded.py::test_fails_with_data' --dbtoolkit-seed=0"
    )
    data = []
    for args in [(), ("--reverse",)]:
        result = run(catalog, *args)
        result.assert_outcomes(passed=1, failed=1)
        result.stdout.fnmatch_lines(["*- dbtoolkit -*", seed_line])
        assert result.outlines.count(seed_line) == 1
        data.append([line for line in result.outlines if line.startswith("data: ")])
    assert len(data[0]) == 1
    assert data[0] == data[1]
    # The command the report gives reruns the test alone, with the same data.
    alone = run(catalog, "test_seeded.py::test_fails_with_data", "--dbtoolkit-seed=0")
    alone.assert_outcomes(failed=1)
    assert [line for line in alone.outlines if line.startswith("data: ")] == data[0]


def test_a_raw_commit_fails_the_test_and_the_next_test_starts_clean(catalog: pytest.Pytester):
    catalog.makepyfile(
        test_commit="""
        from sqlalchemy import text

        from catalog_factories import AuthorFactory


        def test_raw_commit(db_session, seeded_authors):
            AuthorFactory()
            db_session.execute(text("COMMIT"))


        def test_next_test_starts_clean(db_session, seeded_authors):
            assert db_session.scalar(text("SELECT count(*) FROM authors")) == 3


        def test_next_test_without_seeds_starts_empty(db_session):
            assert db_session.scalar(text("SELECT count(*) FROM authors")) == 0
        """
    )
    result = run(catalog)
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "IsolationError: the test ended the outer transaction with a raw COMMIT or "
            "ROLLBACK, so what it wrote before that is committed and other tests may see it; "
            "use db_session.commit() or db_session.rollback() instead"
        ]
    )


SHARED_SEED_TESTS = """
from sqlalchemy import func, select

from catalog_models import Author

first = {}


def authors(seeded):
    return [(author.id, author.name) for author in seeded]


def test_first(db_session, seeded_authors):
    first["authors"] = authors(seeded_authors)
    seeded_authors[0].name = "Changed"
    db_session.commit()


def test_second_shares_the_same_rows(db_session, seeded_authors):
    assert authors(seeded_authors) == first["authors"]


def test_more_seeds_keep_the_shared_ones(db_session, seeded_authors, seeded_books):
    assert authors(seeded_authors) == first["authors"]
    assert db_session.scalar(select(func.count()).select_from(Author)) == 3 + 2


def test_no_seeds_sees_none(db_session):
    assert db_session.scalar(select(func.count()).select_from(Author)) == 0


def test_laid_again_has_new_rows_with_the_same_values(db_session, seeded_authors):
    again = authors(seeded_authors)
    assert [name for _, name in again] == [name for _, name in first["authors"]]
    assert [id for id, _ in again] != [id for id, _ in first["authors"]]
"""


def test_consecutive_tests_share_their_seeds_and_each_starts_from_them(
    catalog: pytest.Pytester,
) -> None:
    catalog.makepyfile(test_shared=SHARED_SEED_TESTS)
    run(catalog).assert_outcomes(passed=5)
