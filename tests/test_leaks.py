"""Rows committed behind a test's back, and tests that commit in a database of their own.

Each test runs pytest on the catalog project (``tests/examples/catalog``) in a subprocess, in
file order, so that a leaking test and the test after it run in a known order; the
outer tests themselves hold in any order and under xdist.
"""

from __future__ import annotations

import re

import pytest
from catalog import CATALOG_SETTINGS, run, run_in_process, sep_line

# The message of a leak, around the list of what leaked, as the user reads it.
LEAK = (
    "rows were committed outside the test's transaction while it ran: {writes}. Engines on "
    "the test database join the test, but other connections do not (a raw driver "
    "connection, dbtoolkit's engine fixture, another process, an engine on another URL): "
    "write through db_session or an engine on the test database, bind the application's "
    "sessionmaker with the db_bind fixture, or give the test a database of its own with "
    '@pytest.mark.dbtoolkit(isolation="database"). The rows were removed; '
    "--dbtoolkit-leaks=warn reports them as a warning instead"
)

# The catalog project's ini turns warnings into errors; these runs look at the warning.
SHOW_LEAK_WARNINGS = ("-W", "default::dbtoolkit.errors.LeakWarning")

# Helpers at the top of every inner test module: what another connection sees.
INNER_HELPERS = """
    import psycopg2
    from sqlalchemy import func, insert, select, text, update

    from catalog_models import Author, Book


    def libpq(url):
        return url.set(drivername="postgresql").render_as_string(hide_password=False)


    def committed_authors(url):
        '''The author names a connection of its own sees in the database at ``url``.

        A raw driver connection: an engine on the test database would join the test.
        '''
        connection = psycopg2.connect(libpq(url))
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT name FROM authors")
                return sorted(name for (name,) in cursor.fetchall())
        finally:
            connection.close()


    def authors(session):
        return session.scalar(select(func.count()).select_from(Author))
"""


def errors_section(result: pytest.RunResult) -> list[str]:
    """The lines between the ERRORS title and the next section title.

    Under xdist, the line naming the worker and its Python is left out.
    """
    start = result.outlines.index(sep_line(result, "ERRORS")) + 1
    end = next(
        index
        for index, line in enumerate(result.outlines[start:], start)
        if re.match(r"^=+ .* =+$", line)
    )
    return [line for line in result.outlines[start:end] if not re.match(r"^\[gw\d+\] ", line)]


def assert_one_line_leak_error(result: pytest.RunResult, test: str, writes: str) -> None:
    """``test`` errored at teardown with the leak message alone, no traceback."""
    lines = errors_section(result)
    header = lines.index(sep_line(result, f"ERROR at teardown of {test}"))
    assert lines[header + 1] == "LeakError: " + LEAK.format(writes=writes)
    # What follows the message is the next report or dbtoolkit's seed section, no source.
    assert header + 2 == len(lines) or re.match(r"^[_-]+ ", lines[header + 2])
    assert "Traceback" not in result.stdout.str()
    assert not [line for line in result.outlines if re.search(r"\.py:\d+", line)]


# --- Leaks fail the test that made them, and are removed ----------------------------

OWN_ENGINE_TESTS = (
    INNER_HELPERS
    + """

    def test_commits_through_its_own_engine(db_session, engine):
        own = engine  # dbtoolkit's own engine: outside the test
        with own.begin() as connection:
            connection.execute(insert(Author), [{"name": "Ada"}, {"name": "Grace"}])
        # The rows really are committed: another connection sees them.
        assert committed_authors(engine.url) == ["Ada", "Grace"]


    def test_next_test_starts_clean(db_session, engine):
        assert authors(db_session) == 0
        assert committed_authors(engine.url) == []


    def test_leaks_again_through_a_raw_connection(db_session, dbtoolkit_database):
        raw = psycopg2.connect(libpq(dbtoolkit_database))
        with raw, raw.cursor() as cursor:
            cursor.execute("INSERT INTO authors (name) VALUES ('Edsger')")
        raw.close()


    def test_the_recreated_database_is_clean_too(db_session, seeded_authors, engine):
        assert authors(db_session) == 3
        assert committed_authors(engine.url) == []
"""
)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param((), id="in-order"),
        pytest.param(("-n", "2", "--dist", "loadfile"), id="xdist"),
    ],
)
def test_rows_committed_through_an_own_engine_error_the_test_and_are_removed(
    catalog: pytest.Pytester, args: tuple[str, ...]
) -> None:
    catalog.makepyfile(test_leak=OWN_ENGINE_TESTS)
    result = run(catalog, *args)
    result.assert_outcomes(passed=4, errors=2)
    assert_one_line_leak_error(
        result, "test_commits_through_its_own_engine", "2 rows inserted into public.authors"
    )
    assert_one_line_leak_error(
        result, "test_leaks_again_through_a_raw_connection", "1 row inserted into public.authors"
    )
    assert len([line for line in result.outlines if line.startswith("LeakError: ")]) == 2


EVERY_KIND_OF_WRITE = (
    INNER_HELPERS
    + """

    def test_writes_every_way(db_session, engine):
        own = engine  # dbtoolkit's own engine: outside the test
        with own.begin() as connection:
            connection.execute(insert(Author).values(name="Ada"))
        with own.begin() as connection:
            author_id = connection.execute(
                insert(Author).values(name="Grace").returning(Author.id)
            ).scalar_one()
            connection.execute(insert(Book).values(title="Notes", author_id=author_id))
        with own.begin() as connection:
            connection.execute(update(Author).where(Author.name == "Ada").values(name="Ada L."))
            # An UPDATE that changes no row writes nothing.
            connection.execute(update(Book).where(Book.title == "Nothing").values(title="X"))
        with own.begin() as connection:
            connection.execute(text("DELETE FROM books"))
            connection.execute(text("DELETE FROM authors WHERE name = 'Grace'"))
        with own.begin() as connection:
            connection.execute(text("TRUNCATE books"))
"""
)


def test_a_leak_names_each_table_and_kind_of_write_even_in_the_last_test(
    catalog: pytest.Pytester,
) -> None:
    catalog.makepyfile(test_leak=EVERY_KIND_OF_WRITE)
    result = run(catalog)
    result.assert_outcomes(passed=1, errors=1)
    assert_one_line_leak_error(
        result,
        "test_writes_every_way",
        "1 row deleted from public.authors, 2 rows inserted into public.authors, "
        "1 row updated in public.authors, 1 row deleted from public.books, "
        "1 row inserted into public.books, public.books truncated",
    )


THREAD_TESTS = (
    INNER_HELPERS
    + """
    import threading


    def test_a_background_thread_commits(db_session, engine):
        def work():
            own = engine  # dbtoolkit's own engine: outside the test
            with own.begin() as connection:
                connection.execute(insert(Author), [{"name": f"Worker {n}"} for n in range(3)])

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        assert committed_authors(engine.url) == ["Worker 0", "Worker 1", "Worker 2"]


    def test_next_test_starts_clean(db_session, engine):
        assert authors(db_session) == 0
        assert committed_authors(engine.url) == []
"""
)


def test_rows_a_background_thread_commits_are_a_leak_too(catalog: pytest.Pytester) -> None:
    catalog.makepyfile(test_thread=THREAD_TESTS)
    result = run(catalog)
    result.assert_outcomes(passed=2, errors=1)
    assert_one_line_leak_error(
        result, "test_a_background_thread_commits", "3 rows inserted into public.authors"
    )


ENGINE_ONLY_TESTS = (
    INNER_HELPERS
    + """

    def test_commits_without_db_session(engine):
        with engine.begin() as connection:
            connection.execute(insert(Author), [{"name": "Ada"}, {"name": "Grace"}])


    def test_next_test_without_db_session_starts_clean(engine):
        assert committed_authors(engine.url) == []


    def test_a_db_session_test_starts_clean(db_session, engine):
        assert authors(db_session) == 0
        assert committed_authors(engine.url) == []
"""
)


def test_a_leak_by_a_test_without_db_session_is_blamed_on_that_test(
    catalog: pytest.Pytester,
) -> None:
    # The database is watched from the moment it exists, not from the first db_session.
    catalog.makepyfile(test_engine=ENGINE_ONLY_TESTS)
    result = run(catalog)
    result.assert_outcomes(passed=3, errors=1)
    assert_one_line_leak_error(
        result, "test_commits_without_db_session", "2 rows inserted into public.authors"
    )


# --- What the leaks setting changes --------------------------------------------------

LEAK_THEN_LOOK = (
    INNER_HELPERS
    + """

    def test_leaks(db_session, engine):
        own = engine  # dbtoolkit's own engine: outside the test
        with own.begin() as connection:
            connection.execute(insert(Author), [{"name": "Ada"}, {"name": "Grace"}])


    def test_next_test(db_session, engine):
        print("next test sees", authors(db_session), "authors:", *committed_authors(engine.url))
"""
)


@pytest.mark.parametrize(
    ("env", "args", "source"),
    [
        pytest.param({}, ("--dbtoolkit-leaks=warn",), "cli", id="cli"),
        pytest.param({"DBTOOLKIT_LEAKS": "warn"}, (), "env", id="env"),
    ],
)
def test_leaks_warn_reports_a_warning_and_still_removes_the_rows(
    catalog: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    args: tuple[str, ...],
    source: str,
) -> None:
    catalog.makepyfile(test_leak=LEAK_THEN_LOOK)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = run(catalog, "-s", *SHOW_LEAK_WARNINGS, *args)
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(
        [
            f"dbtoolkit: *; leaks warn (from {source})*",
            "*next test sees 0 authors:",
            "*= warnings summary =*",
            "test_leak.py::test_leaks",
            "*: LeakWarning: " + LEAK.format(writes="2 rows inserted into public.authors"),
        ]
    )
    assert "LeakError" not in result.stdout.str()


def test_leaks_warn_where_warnings_are_errors_is_one_line_too(catalog: pytest.Pytester) -> None:
    catalog.makepyfile(test_leak=LEAK_THEN_LOOK)
    result = run(catalog, "-s", "--dbtoolkit-leaks=warn")
    result.assert_outcomes(passed=2, errors=1)
    lines = errors_section(result)
    header = lines.index(sep_line(result, "ERROR at teardown of test_leaks"))
    assert lines[header + 1] == "LeakWarning: " + LEAK.format(
        writes="2 rows inserted into public.authors"
    )
    assert "Traceback" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*next test sees 0 authors:"])


FIXTURE_TEARDOWN_TESTS = (
    INNER_HELPERS
    + """
    import pytest


    @pytest.fixture
    def audit_log(engine):
        yield
        own = engine  # a fixture that commits as it is torn down, outside the test
        with own.begin() as connection:
            connection.execute(insert(Author).values(name="Audit"))


    def test_with_the_fixture(db_session, audit_log):
        pass


    def test_unrelated(db_session, engine):
        assert committed_authors(engine.url) == []


    def test_last_with_the_fixture(db_session, audit_log):
        pass
"""
)


def test_a_leak_in_a_fixtures_teardown_is_blamed_on_its_test_even_the_last(
    catalog: pytest.Pytester,
) -> None:
    catalog.makepyfile(test_fixture=FIXTURE_TEARDOWN_TESTS)
    result = run(catalog)
    result.assert_outcomes(passed=3, errors=2)
    for test in ("test_with_the_fixture", "test_last_with_the_fixture"):
        assert_one_line_leak_error(result, test, "1 row inserted into public.authors")


@pytest.mark.catalog(settings=CATALOG_SETTINGS + "dbtoolkit_leaks = off\n")
def test_leaks_off_in_the_ini_does_not_check_and_the_rows_stay(
    catalog: pytest.Pytester,
) -> None:
    catalog.makepyfile(test_leak=LEAK_THEN_LOOK)
    result = run(catalog, "-s")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["dbtoolkit: *; leaks off (from ini)*", "*next test sees 2 authors: Ada Grace"]
    )
    assert "Leak" not in result.stdout.str()


@pytest.mark.parametrize(
    ("env", "args", "value", "source"),
    [
        pytest.param({}, ("--dbtoolkit-leaks=x",), "x", "cli", id="cli"),
        pytest.param({"DBTOOLKIT_LEAKS": "yes"}, (), "yes", "env", id="env"),
        pytest.param(
            {},
            (),
            "ignore",
            "ini",
            id="ini",
            marks=pytest.mark.catalog(settings=CATALOG_SETTINGS + "dbtoolkit_leaks = ignore\n"),
        ),
    ],
)
def test_a_leaks_value_that_is_not_a_choice_is_a_usage_error(
    catalog: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    args: tuple[str, ...],
    value: str,
    source: str,
) -> None:
    catalog.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    for name, env_value in env.items():
        monkeypatch.setenv(name, env_value)
    result = run_in_process(catalog, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == (
        f"ERROR: dbtoolkit leaks must be one of fail, warn, off, got {value!r} (from {source}); "
        "fix --dbtoolkit-leaks, DBTOOLKIT_LEAKS or dbtoolkit_leaks"
    )


# --- No leak without one -------------------------------------------------------------

ISOLATED_WRITES = (
    INNER_HELPERS
    + """
    import threading

    import pytest
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.orm import sessionmaker

    from catalog_factories import AuthorFactory, BookFactory


    def test_factories_and_commit(db_session, seeded_books):
        BookFactory.create_batch(3)
        db_session.commit()
        assert authors(db_session) == 5


    def test_rollback_after_a_flush(db_session, seeded_authors):
        AuthorFactory.create_batch(2)
        db_session.flush()
        db_session.rollback()
        assert authors(db_session) == 3


    def test_raw_sql_writes_and_commits(db_session, seeded_authors):
        db_session.execute(text("INSERT INTO authors (name) VALUES ('Raw')"))
        db_session.execute(text("UPDATE authors SET name = name || '!'"))
        db_session.commit()
        db_session.execute(text("DELETE FROM authors WHERE name = 'Raw!'"))
        db_session.execute(text("TRUNCATE books, authors"))
        db_session.commit()
        assert authors(db_session) == 0


    def test_a_failed_statement(db_session, seeded_authors):
        db_session.add(Author(name=seeded_authors[0].name))
        with pytest.raises(IntegrityError):
            db_session.commit()
        db_session.rollback()
        assert authors(db_session) == 3


    def test_a_nested_savepoint(db_session):
        with db_session.begin_nested():
            AuthorFactory()
        db_session.commit()
        assert authors(db_session) == 1


    def test_application_sessions_bound_with_db_bind(db_session, db_bind, engine):
        application_sessions = sessionmaker(engine)
        db_bind(application_sessions)

        def work():
            with application_sessions() as session:
                session.add(Author(name="From a thread"))
                session.commit()

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        assert authors(db_session) == 1


    def test_reading_through_its_own_connection(db_session, engine):
        assert committed_authors(engine.url) == []
"""
)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param((), id="in-order"),
        pytest.param(("--reverse",), id="reversed"),
        pytest.param(("-n", "2"), id="xdist"),
    ],
)
def test_writes_inside_the_test_transaction_are_no_leak(
    catalog: pytest.Pytester, args: tuple[str, ...]
) -> None:
    catalog.makepyfile(test_isolated=ISOLATED_WRITES)
    result = run(catalog, *args)
    result.assert_outcomes(passed=7)
    assert "Leak" not in result.stdout.str()


# --- A database of its own: @pytest.mark.dbtoolkit(isolation="database") ------------

OWN_DATABASE_TESTS = (
    INNER_HELPERS
    + """
    import subprocess
    import sys

    import pytest
    from sqlalchemy import Engine

    # A separate process reads the authors with psycopg2 alone.
    READ_AUTHORS = (
        "import sys, psycopg2\\n"
        "connection = psycopg2.connect(sys.argv[1])\\n"
        "with connection.cursor() as cursor:\\n"
        "    cursor.execute('SELECT name FROM authors ORDER BY name')\\n"
        "    print(','.join(row[0] for row in cursor.fetchall()))\\n"
    )
    own = {}


    def dbtoolkit_databases(engine):
        # Any database of the server lists them all; the maintenance one is dbtoolkit's.
        with engine.connect() as connection:
            return set(
                connection.scalars(
                    text(r"SELECT datname FROM pg_database WHERE datname LIKE 'dbtoolkit\\_%'")
                )
            )


    @pytest.mark.dbtoolkit(isolation="database")
    def test_commits_for_real(db_session, dbtoolkit_database, engine):
        bind = db_session.get_bind()
        assert isinstance(bind, Engine)
        own["name"] = bind.url.database
        assert own["name"] == f"{dbtoolkit_database.database}_1"
        assert own["name"] in dbtoolkit_databases(engine)
        db_session.add(Author(name="Ada"))
        db_session.commit()
        assert committed_authors(bind.url) == ["Ada"]
        libpq_url = bind.url.set(drivername="postgresql").render_as_string(hide_password=False)
        seen = subprocess.run(
            [sys.executable, "-c", READ_AUTHORS, libpq_url],
            capture_output=True,
            text=True,
            check=True,
        )
        assert seen.stdout == "Ada\\n"
        # The run's own test database is untouched.
        assert committed_authors(dbtoolkit_database) == []


    def test_a_later_test_sees_nothing_and_the_database_is_gone(db_session, engine):
        assert authors(db_session) == 0
        assert committed_authors(engine.url) == []
        databases = dbtoolkit_databases(engine)
        assert engine.url.database in databases
        assert own["name"] not in databases


    @pytest.mark.dbtoolkit(isolation="transaction")
    def test_transaction_isolation_by_name_is_the_default(db_session, engine):
        assert db_session.get_bind().engine.url.database == engine.url.database
        db_session.add(Author(name="Grace"))
        db_session.commit()
        assert committed_authors(engine.url) == []
"""
)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param((), id="in-order"),
        pytest.param(("-n", "2", "--dist", "loadfile"), id="xdist"),
    ],
)
def test_a_test_marked_for_a_database_of_its_own_commits_for_real_there(
    catalog: pytest.Pytester, args: tuple[str, ...]
) -> None:
    catalog.makepyfile(test_own=OWN_DATABASE_TESTS)
    result = run(catalog, *args)
    result.assert_outcomes(passed=3)
    assert "Leak" not in result.stdout.str()


OWN_DATABASE_SEED_TESTS = (
    INNER_HELPERS
    + """
    import pytest


    def test_seeded_in_the_shared_transaction(db_session, seeded_authors, engine):
        assert authors(db_session) == 3
        assert committed_authors(engine.url) == []


    @pytest.mark.dbtoolkit(isolation="database")
    def test_seeds_are_committed_in_its_database(db_session, seeded_authors, seeded_books):
        # Its three authors, and the two that the seeded books brought with them.
        names = {author.name for author in seeded_authors}
        names |= {book.author.name for book in seeded_books}
        assert len(names) == 3 + 2
        db_session.rollback()  # committed: a rollback keeps them
        assert authors(db_session) == 3 + 2
        assert set(committed_authors(db_session.get_bind().url)) == names


    def test_the_shared_seeds_are_still_there(db_session, seeded_authors, engine):
        assert authors(db_session) == 3
        assert committed_authors(engine.url) == []


    def test_and_gone_without_them(db_session):
        assert authors(db_session) == 0
"""
)


def test_seed_fixtures_commit_their_rows_in_a_database_of_its_own(
    catalog: pytest.Pytester,
) -> None:
    catalog.makepyfile(test_seeds=OWN_DATABASE_SEED_TESTS)
    result = run(catalog)
    result.assert_outcomes(passed=4)


BAD_MARKERS = """
    import pytest


    @pytest.mark.dbtoolkit(isolation="savepoint")
    def test_unknown_isolation(db_session):
        pass


    @pytest.mark.dbtoolkit("database")
    def test_positional(db_session):
        pass


    @pytest.mark.dbtoolkit(isolation="database", keep=True)
    def test_unknown_argument(db_session):
        pass


    @pytest.mark.dbtoolkit(isolation="databse")
    def test_without_db_session():
        pass


    def test_unmarked(db_session):
        pass
"""


def test_a_bad_dbtoolkit_marker_errors_the_test_at_setup_with_one_line(
    catalog: pytest.Pytester,
) -> None:
    catalog.makepyfile(test_markers=BAD_MARKERS)
    result = run(catalog)
    result.assert_outcomes(passed=1, errors=4)
    lines = errors_section(result)
    for test, got in [
        ("test_unknown_isolation", "{'isolation': 'savepoint'}"),
        ("test_positional", "('database',)"),
        ("test_unknown_argument", "{'isolation': 'database', 'keep': True}"),
        ("test_without_db_session", "{'isolation': 'databse'}"),
    ]:
        header = lines.index(sep_line(result, f"ERROR at setup of {test}"))
        assert lines[header + 1] == (
            'ConfigError: @pytest.mark.dbtoolkit takes isolation="transaction" (the default) '
            f'or isolation="database", got {got}; fix the marker on test_markers.py::{test}'
        )
    assert "Traceback" not in result.stdout.str()


def test_the_dbtoolkit_marker_is_registered(catalog: pytest.Pytester) -> None:
    catalog.makepyfile(
        test_marked="""
        import pytest


        @pytest.mark.dbtoolkit(isolation="database")
        def test_marked(db_session):
            pass
        """
    )
    run(catalog, "--strict-markers").assert_outcomes(passed=1)
    markers = run_in_process(catalog, "--markers")
    markers.stdout.fnmatch_lines(
        [
            '@pytest.mark.dbtoolkit(isolation="database"): give the test a database of its '
            "own, cloned from the migrated template and dropped afterwards, in which "
            "db_session commits for real"
        ]
    )
