"""async_db_session from a project's point of view: loop scopes, drivers and guards.

Each test runs pytest on the catalog project (``catalog.py``) in a subprocess: the
loop scopes (the async fixtures work in all three, on one shared connection), both
async drivers, seed layers of wider scope, the deferred-constraint check, the leak
watch and the escape check on async tests, and what a loop mismatch or anyio's trio
backend is told. tests/test_async.py holds the in-process promises, so that CI can
run it in every loop scope cheaply.
"""

from pathlib import Path

import pytest
from catalog import CATALOG_SETTINGS, catalog_project, run, sep_line

# --- Loop scopes: every one works ---------------------------------------------------


def loop_settings(scope: str) -> str:
    """The catalog's settings with pytest-asyncio's default fixture loop scope.

    Spelled out in every inner run here, the loop scope being what these runs test
    (``catalog_project`` would otherwise add ``function``).
    """
    return CATALOG_SETTINGS + f"asyncio_default_fixture_loop_scope = {scope}\n"


FUNCTION_LOOP_SETTINGS = loop_settings("function")

INNER_LOOPS = """
    import asyncio

    from sqlalchemy import text

    # (test module, loop) for every async test, in the order they ran.
    SEEN = []
    BACKENDS = set()  # the server process of each async_db_session's connection


    async def note(module, session=None):
        SEEN.append((module, asyncio.get_running_loop()))
        if session is not None:
            BACKENDS.add(await session.scalar(text("SELECT pg_backend_pid()")))
"""

INNER_ASYNC_TESTS = """
    import pytest
    from sqlalchemy import func, select
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    import loops
    from catalog_factories import AuthorFactory, BookFactory
    from catalog_models import Author, Book
    from dbtoolkit.aio import create_async, create_batch_async
    from dbtoolkit import async_seed

    pytestmark = pytest.mark.asyncio{MARK_ARGS}

    async_seeded_authors = async_seed(AuthorFactory, 3)


    async def counts(connectable):
        return (
            await connectable.scalar(select(func.count()).select_from(Author)),
            await connectable.scalar(select(func.count()).select_from(Book)),
        )


    async def seen_elsewhere(session):
        other = create_async_engine(session.bind.engine.url, poolclass=NullPool)
        try:
            async with other.connect() as connection:
                return await counts(connection)
        finally:
            await other.dispose()


    @pytest.mark.parametrize("run", range(3))
    async def test_a_commit_is_undone(async_db_session, async_seeded_authors, run):
        await loops.note(__name__, async_db_session)
        assert await counts(async_db_session) == (3, 0)
        await create_batch_async(BookFactory, 2)
        await async_db_session.commit()
        assert await counts(async_db_session) == (5, 2)
        assert await seen_elsewhere(async_db_session) == (0, 0)


    @pytest.mark.parametrize("run", range(2))
    async def test_without_seeds_it_starts_empty(async_db_session, run):
        await loops.note(__name__, async_db_session)
        assert await counts(async_db_session) == (0, 0)
        await create_async(BookFactory, title="Left Behind")
        await async_db_session.commit()
        assert await counts(async_db_session) == (1, 1)
        assert await seen_elsewhere(async_db_session) == (0, 0)
"""

INNER_LOOP_CHECK = """

    async def test_the_tests_ran_in_the_loops_of_their_scope():
        await loops.note(__name__)
        assert len(loops.BACKENDS) == 1  # one connection for all, whatever their loops
        by_module = {}
        for module, loop in loops.SEEN:
            by_module.setdefault(module, set()).add(loop)
        distinct = {loop for _, loop in loops.SEEN}
        assert len(loops.SEEN) == 11
        if "{SCOPE}" == "function":
            assert len(distinct) == 11
        elif "{SCOPE}" == "module":
            assert [len(seen) for seen in by_module.values()] == [1, 1]
            assert len(distinct) == 2
        else:
            assert len(distinct) == 1
"""

LOOP_MARK_ARGS = {
    "function": "",
    "module": '(loop_scope="module")',
    "session": '(loop_scope="session")',
}


@pytest.mark.parametrize(
    ("scope", "fixture_scope"),
    [
        ("function", "function"),
        ("module", "module"),
        ("session", "session"),
        ("module", "function"),
    ],
)
def test_async_db_session_works_in_any_loop_scope_on_one_connection(
    pytester: pytest.Pytester, inner_cache: Path, scope: str, fixture_scope: str
) -> None:
    # The tests run in loops of ``scope``, the project's async fixtures in ``fixture_scope``'s.
    catalog_project(
        pytester, cache_dir=inner_cache / "catalog", settings=loop_settings(fixture_scope)
    )
    tests = INNER_ASYNC_TESTS.replace("{MARK_ARGS}", LOOP_MARK_ARGS[scope])
    pytester.makepyfile(
        loops=INNER_LOOPS,
        test_first=tests,
        test_second=tests + INNER_LOOP_CHECK.replace("{SCOPE}", scope),
    )
    result = run(pytester, "-v")
    output = result.stdout.str() + result.stderr.str()
    assert "attached to a different loop" not in output
    result.assert_outcomes(passed=11)
    result.stdout.fnmatch_lines(
        ["*test_second.py::test_the_tests_ran_in_the_loops_of_their_scope PASSED*"]
    )


# --- Drivers: asyncpg by default, psycopg on request; the sync driver too -------------

INNER_DRIVER_TEST = """
    import pytest

    pytestmark = pytest.mark.asyncio


    async def test_the_async_driver_is_the_one_asked_for(async_db_session):
        assert async_db_session.bind.dialect.driver == "{DRIVER}"
        assert async_db_session.bind.engine.url.drivername == "postgresql+{DRIVER}"
"""


@pytest.mark.parametrize(
    ("args", "driver"),
    [((), "asyncpg"), (("--dbtoolkit-async-driver=psycopg",), "psycopg")],
    ids=["default", "psycopg"],
)
def test_async_db_session_isolates_with_each_async_driver(
    pytester: pytest.Pytester, inner_cache: Path, args: tuple[str, ...], driver: str
) -> None:
    catalog_project(pytester, cache_dir=inner_cache / "catalog", settings=FUNCTION_LOOP_SETTINGS)
    pytester.makepyfile(
        loops=INNER_LOOPS,
        test_isolation=INNER_ASYNC_TESTS.replace("{MARK_ARGS}", ""),
        test_driver=INNER_DRIVER_TEST.replace("{DRIVER}", driver),
    )
    result = run(pytester, "-v", *args)
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(
        ["*test_driver.py::test_the_async_driver_is_the_one_asked_for PASSED*"]
    )


INNER_SYNC_DRIVER_TESTS = """
    import pytest
    from sqlalchemy import func, select

    from catalog_factories import BookFactory
    from catalog_models import Author, Book


    def counts(connectable):
        return (
            connectable.scalar(select(func.count()).select_from(Author)),
            connectable.scalar(select(func.count()).select_from(Book)),
        )


    def test_the_driver_is_psycopg(db_session, engine):
        assert db_session.get_bind().dialect.driver == "psycopg"
        assert engine.dialect.driver == "psycopg"


    @pytest.mark.parametrize("run", range(3))
    def test_a_commit_is_undone(db_session, engine, seeded_authors, run):
        assert counts(db_session) == (3, 0)
        BookFactory.create_batch(2)
        db_session.commit()
        assert counts(db_session) == (5, 2)
        with engine.connect() as fresh:
            assert counts(fresh) == (0, 0)
"""


def test_db_session_isolates_with_the_psycopg_driver(
    pytester: pytest.Pytester, inner_cache: Path
) -> None:
    catalog_project(pytester, cache_dir=inner_cache / "catalog", settings=FUNCTION_LOOP_SETTINGS)
    pytester.makepyfile(test_sync_driver=INNER_SYNC_DRIVER_TESTS)
    result = run(pytester, "-v", "--dbtoolkit-driver=psycopg")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*test_sync_driver.py::test_the_driver_is_psycopg PASSED*"])


# --- Seed layers, the deferred check, leaks and escapes, as for db_session ------------

INNER_SCOPED_SEEDS = """
    import collections

    import pytest
    from sqlalchemy import func, select

    from catalog_factories import AuthorFactory, BookFactory
    from catalog_models import Author, Book
    from dbtoolkit import async_seed

    pytestmark = pytest.mark.asyncio
    CREATED = collections.Counter()


    class ModuleAuthorFactory(AuthorFactory):
        @classmethod
        def _create(cls, model_class, *args, **kwargs):
            CREATED[cls.__name__] += 1
            return super()._create(model_class, *args, **kwargs)


    module_authors = async_seed(ModuleAuthorFactory, 2, scope="module")
    books = async_seed(BookFactory, 1)


    async def counts(session):
        return (
            await session.scalar(select(func.count()).select_from(Author)),
            await session.scalar(select(func.count()).select_from(Book)),
        )


    @pytest.mark.parametrize("run", range(3))
    async def test_with_books(async_db_session, module_authors, books, run):
        assert await counts(async_db_session) == (3, 1)
        await async_db_session.rollback()
        assert await counts(async_db_session) == (3, 1)


    @pytest.mark.parametrize("run", range(2))
    async def test_without_books(async_db_session, module_authors, run):
        assert await counts(async_db_session) == (2, 0)


    async def test_without_seeds(async_db_session):
        assert await counts(async_db_session) == (0, 0)


    async def test_the_module_seed_was_laid_once():
        assert CREATED == {"ModuleAuthorFactory": 2}
"""


def test_a_scoped_async_seed_is_laid_once_for_the_tests_that_share_it(
    pytester: pytest.Pytester,
    inner_cache: Path,
) -> None:
    catalog_project(pytester, cache_dir=inner_cache / "catalog")
    pytester.makepyfile(test_scoped=INNER_SCOPED_SEEDS)
    run(pytester, "-v").assert_outcomes(passed=7)


# The catalog's books.author_id, made a foreign key checked at commit only.
DEFERRED_AUTHOR_FK = (
    'op.execute("ALTER TABLE books DROP CONSTRAINT books_author_id_fkey, '
    "ADD CONSTRAINT fk_books_author_deferred FOREIGN KEY (author_id) REFERENCES authors(id) "
    'DEFERRABLE INITIALLY DEFERRED")'
)

INNER_GUARDED = """
    import pytest
    from sqlalchemy import func, insert, select, text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    from catalog_factories import AuthorFactory
    from catalog_models import Author, Book
    from dbtoolkit import async_seed

    pytestmark = pytest.mark.asyncio
    async_seeded_authors = async_seed(AuthorFactory, 2)


    async def assert_as_seeded(session):
        assert await session.scalar(select(func.count()).select_from(Author)) == 2
        assert await session.scalar(select(func.count()).select_from(Book)) == 0


    async def test_1_leaves_a_deferred_key_violated(async_db_session, async_seeded_authors):
        async_db_session.add(Book(title="Orphan", author_id=-1))
        await async_db_session.flush()


    async def test_2_fails_in_a_statement(async_db_session, async_seeded_authors):
        with pytest.raises(Exception, match="violates foreign key"):
            await async_db_session.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))
            async_db_session.add(Book(title="Orphan", author_id=-1))
            await async_db_session.flush()


    async def test_3_as_seeded(async_db_session, async_seeded_authors):
        await assert_as_seeded(async_db_session)


    async def test_4_commits_on_a_connection_of_its_own(async_db_session, async_seeded_authors):
        other = create_async_engine(async_db_session.bind.engine.url, poolclass=NullPool)
        async with other.begin() as connection:
            await connection.execute(insert(Author).values(name="Leaked"))
        await other.dispose()


    async def test_5_as_seeded(async_db_session, async_seeded_authors):
        await assert_as_seeded(async_db_session)


    async def test_6_sends_a_raw_commit(async_db_session, async_seeded_authors):
        await async_db_session.execute(text("COMMIT"))


    async def test_7_as_seeded(async_db_session, async_seeded_authors):
        await assert_as_seeded(async_db_session)
"""

VIOLATED = (
    "DeferredConstraintError: the test left deferred constraint 'fk_books_author_deferred' "
    'violated, so its COMMIT would have failed: insert or update on table "books" violates '
    'foreign key constraint "fk_books_author_deferred" '
    '(Key (author_id)=(-1) is not present in table "authors".)'
)
LEAKED = (
    "LeakError: rows were committed outside the test's transaction while it ran: "
    "1 row inserted into public.authors."
)
ESCAPED = "IsolationError: the test ended the outer transaction with a raw COMMIT or ROLLBACK"


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
def test_the_deferred_check_the_leak_watch_and_the_escape_check_guard_async_tests(
    pytester: pytest.Pytester, inner_cache: Path, driver: str
) -> None:
    catalog_project(pytester, cache_dir=inner_cache / "catalog", second_revision=DEFERRED_AUTHOR_FK)
    pytester.makepyfile(test_guarded=INNER_GUARDED)
    result = run(pytester, "-v", f"--dbtoolkit-async-driver={driver}")
    # Every body passes; the three that leave something behind error at teardown.
    result.assert_outcomes(passed=7, errors=3)
    for name, message in [
        ("test_1_leaves_a_deferred_key_violated", VIOLATED),
        ("test_4_commits_on_a_connection_of_its_own", LEAKED),
        ("test_6_sends_a_raw_commit", ESCAPED),
    ]:
        error = sep_line(result, f"ERROR at teardown of {name}")
        assert result.outlines[result.outlines.index(error) + 1].startswith(message)


# --- Loops: a mismatch names its fix; anyio's trio is refused -------------------------

INNER_MISMATCH = """
    import asyncio

    import pytest
    import pytest_asyncio


    @pytest_asyncio.fixture
    async def pending():
        return asyncio.get_running_loop().create_future()


    @pytest.mark.asyncio(loop_scope="module")
    async def test_awaits_a_future_of_the_fixtures_loop(pending):
        await pending
"""

INNER_TRIO = """
    import pytest


    @pytest.fixture
    def anyio_backend():
        return "trio"


    @pytest.mark.anyio
    async def test_on_trio(async_db_session):
        pass
"""


def test_a_loop_mismatch_names_the_fix(pytester: pytest.Pytester, inner_cache: Path) -> None:
    catalog_project(pytester, cache_dir=inner_cache / "catalog", settings=FUNCTION_LOOP_SETTINGS)
    pytester.makepyfile(test_mismatch=INNER_MISMATCH)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*attached to a different loop*",
            "*- dbtoolkit -*",
            "the test ran in pytest-asyncio's module-scoped event loop and used an object that "
            "belongs to another loop, made by a fixture set up in another loop scope; run the "
            "async fixtures in the test's loop: asyncio_default_fixture_loop_scope = module in "
            'the ini, or @pytest_asyncio.fixture(loop_scope="module") on the fixture '
            "(dbtoolkit's own fixtures work in any loop)",
        ]
    )


def test_anyio_on_trio_is_refused_with_the_fix(
    pytester: pytest.Pytester, inner_cache: Path
) -> None:
    catalog_project(pytester, cache_dir=inner_cache / "catalog")
    pytester.makepyfile(test_trio=INNER_TRIO)
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "ConfigError: async_db_session runs on asyncio, but anyio runs "
            "test_trio.py::test_on_trio on trio; give it the asyncio backend (an anyio_backend "
            'fixture that returns "asyncio")'
        ]
    )


INNER_ANYIO = """
    import pytest
    from sqlalchemy import func, select

    from catalog_factories import BookFactory
    from catalog_models import Author, Book
    from dbtoolkit import async_seed
    from dbtoolkit.aio import create_async

    async_seeded_authors = async_seed(BookFactory.author.get_factory(), 2)


    @pytest.mark.anyio
    @pytest.mark.parametrize("run", range(2))
    async def test_on_anyio(async_db_session, async_seeded_authors, run):
        await create_async(BookFactory)
        await async_db_session.commit()
        assert await async_db_session.scalar(select(func.count()).select_from(Author)) == 3
        assert await async_db_session.scalar(select(func.count()).select_from(Book)) == 1
"""


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_anyio_runs_async_db_session_on_asyncio(
    pytester: pytest.Pytester, inner_cache: Path, mode: str
) -> None:
    catalog_project(pytester, cache_dir=inner_cache / "catalog")
    pytester.makepyfile(test_anyio=INNER_ANYIO)
    result = run(pytester, "-o", f"asyncio_mode={mode}")
    result.assert_outcomes(passed=2)
