"""Seeds with scope="module" or "session": laid once for the tests of a module or run.

Each test runs pytest on the catalog project with factories that count the rows
they create, and the inner run prints the counts at its end: so the tests see how
often each seed was laid, not only what the inner tests saw. A scoped seed lies
below the function-scoped ones, so tests that share it and differ in their other
seeds still share one laying; a test that does not ask for it never sees its rows.
"""

from __future__ import annotations

import pytest
from catalog import CATALOG_SETTINGS, run

# Subclasses of the catalog's AuthorFactory, one per seed scope, that count what they
# create, and a check that every test of a laying sees the very same rows (ids).
COUNTED = """
    import collections

    from catalog_factories import AuthorFactory

    CREATED = collections.Counter()
    FIRST_IDS = {}


    class CountedAuthorFactory(AuthorFactory):
        @classmethod
        def _create(cls, model_class, *args, **kwargs):
            CREATED[cls.__name__] += 1
            return super()._create(model_class, *args, **kwargs)


    class SessionAuthorFactory(CountedAuthorFactory):
        pass


    class ModuleAuthorFactory(CountedAuthorFactory):
        pass


    class FunctionAuthorFactory(CountedAuthorFactory):
        pass


    def assert_same_rows(key, objects):
        ids = sorted(obj.id for obj in objects)
        assert FIRST_IDS.setdefault(key, ids) == ids
"""

SCOPED_CONFTEST = """
    from catalog_factories import BookFactory
    from counted import CREATED, FunctionAuthorFactory, ModuleAuthorFactory, SessionAuthorFactory
    from dbtoolkit import seed

    session_authors = seed(SessionAuthorFactory, 5, scope="session")
    module_authors = seed(ModuleAuthorFactory, 20, scope="module")
    two_authors = seed(FunctionAuthorFactory, 2)
    three_authors = seed(FunctionAuthorFactory, 3)
    four_books = seed(BookFactory, 4)


    def pytest_terminal_summary(terminalreporter):
        terminalreporter.write_line(f"created: {dict(sorted(CREATED.items()))}")
"""

SCOPED_SETTINGS = CATALOG_SETTINGS.replace(
    "dbtoolkit_factories = catalog_factories",
    "dbtoolkit_factories =\n    catalog_factories\n    counted",
)

# What every inner test module starts with.
HELPERS = """
    from sqlalchemy import delete, func, select

    from catalog_models import Author, Book
    from counted import assert_same_rows


    def counts(db_session):
        return tuple(
            db_session.scalar(select(func.count()).select_from(model)) for model in (Author, Book)
        )


    def author_ids(db_session):
        return set(db_session.scalars(select(Author.id)))


    def ids(*seeds):
        return {obj.id for objects in seeds for obj in objects}


    def delete_everything(db_session):
        db_session.execute(delete(Book))
        db_session.execute(delete(Author))
        db_session.commit()
        assert counts(db_session) == (0, 0)
"""

# Each test asks for the module seed and another function seed, or for the module seed
# alone (twice: the same layers); each deletes every row and commits, which the next
# test must not see.
ONE_MODULE_TESTS = (
    HELPERS
    + """
    import pytest


    @pytest.mark.parametrize("attempt", [1, 2])
    def test_module_seed_alone(db_session, module_authors, attempt):
        assert_same_rows(__name__, module_authors)
        assert counts(db_session) == (20, 0)
        assert author_ids(db_session) == ids(module_authors)
        delete_everything(db_session)


    def test_two_authors(db_session, module_authors, two_authors):
        assert_same_rows(__name__, module_authors)
        assert counts(db_session) == (22, 0)
        assert author_ids(db_session) == ids(module_authors, two_authors)
        delete_everything(db_session)


    def test_three_authors_asked_for_first(db_session, three_authors, module_authors):
        assert_same_rows(__name__, module_authors)
        assert counts(db_session) == (23, 0)
        assert author_ids(db_session) == ids(module_authors, three_authors)
        delete_everything(db_session)


    def test_four_books(db_session, module_authors, four_books):
        assert_same_rows(__name__, module_authors)
        assert counts(db_session) == (24, 4)
        assert author_ids(db_session) == ids(module_authors, [book.author for book in four_books])
        delete_everything(db_session)
"""
)

# Every test asks for the session seed and its module's seed.
TWO_MODULE_TESTS = (
    HELPERS
    + """

    def test_two_authors(db_session, session_authors, module_authors, two_authors):
        assert_same_rows("session", session_authors)
        assert_same_rows(__name__, module_authors)
        assert counts(db_session) == (27, 0)
        assert author_ids(db_session) == ids(session_authors, module_authors, two_authors)
        delete_everything(db_session)


    def test_three_authors(db_session, module_authors, three_authors, session_authors):
        assert_same_rows("session", session_authors)
        assert_same_rows(__name__, module_authors)
        assert counts(db_session) == (28, 0)
        assert author_ids(db_session) == ids(session_authors, module_authors, three_authors)
        delete_everything(db_session)
"""
)

# Tests in between that do not ask for the module seed.
GAP_TESTS = (
    HELPERS
    + """

    def test_before(db_session, module_authors):
        assert author_ids(db_session) == ids(module_authors)
        assert counts(db_session) == (20, 0)


    def test_without_it(db_session):
        assert counts(db_session) == (0, 0)


    def test_with_another_seed_only(db_session, two_authors):
        assert author_ids(db_session) == ids(two_authors)
        assert counts(db_session) == (2, 0)


    def test_after(db_session, module_authors):
        assert author_ids(db_session) == ids(module_authors)
        assert counts(db_session) == (20, 0)
"""
)


def scoped_project(catalog: pytest.Pytester, **modules: str) -> None:
    """Add the counting factories, their seeds and ``modules`` to the catalog project."""
    catalog.makepyfile(counted=COUNTED, conftest=SCOPED_CONFTEST, **modules)


@pytest.mark.catalog(settings=SCOPED_SETTINGS)
@pytest.mark.parametrize(
    "args",
    [
        pytest.param((), id="forward"),
        pytest.param(("--reverse",), id="reversed"),
        pytest.param(("-p", "randomly", "--randomly-seed=12345"), id="random"),
    ],
)
def test_a_module_seed_is_laid_once_below_each_tests_own_seeds(
    catalog: pytest.Pytester, args: tuple[str, ...]
) -> None:
    scoped_project(catalog, test_shelf=ONE_MODULE_TESTS)
    result = run(catalog, *args, randomly="randomly" in args)
    result.assert_outcomes(passed=5)
    # The function seeds are laid for their test: 2 and 3 counted authors.
    assert "created: {'FunctionAuthorFactory': 5, 'ModuleAuthorFactory': 20}" in result.outlines


@pytest.mark.catalog(settings=SCOPED_SETTINGS)
def test_a_module_seed_is_laid_once_per_module_and_a_session_seed_once(
    catalog: pytest.Pytester,
) -> None:
    scoped_project(catalog, test_first=TWO_MODULE_TESTS, test_second=TWO_MODULE_TESTS)
    result = run(catalog)
    result.assert_outcomes(passed=4)
    assert (
        "created: {'FunctionAuthorFactory': 10, 'ModuleAuthorFactory': 40, "
        "'SessionAuthorFactory': 5}"
    ) in result.outlines


@pytest.mark.catalog(settings=SCOPED_SETTINGS)
@pytest.mark.parametrize(
    "args", [pytest.param((), id="forward"), pytest.param(("--reverse",), id="reversed")]
)
def test_a_test_that_does_not_ask_for_a_module_seed_does_not_see_it(
    catalog: pytest.Pytester, args: tuple[str, ...]
) -> None:
    scoped_project(catalog, test_gap=GAP_TESTS)
    result = run(catalog, *args)
    result.assert_outcomes(passed=4)
    # Rolled back below the seed for the tests in between, then laid again.
    assert "created: {'FunctionAuthorFactory': 2, 'ModuleAuthorFactory': 40}" in result.outlines


def test_an_unknown_scope_is_an_error_where_the_seed_is_defined(
    catalog: pytest.Pytester,
) -> None:
    catalog.makepyfile(
        test_bogus="""
        from catalog_factories import AuthorFactory
        from dbtoolkit import seed

        bogus_authors = seed(AuthorFactory, 2, scope="bogus")


        def test_never_runs(bogus_authors):
            pass
        """
    )
    result = run(catalog)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR collecting test_bogus.py*",
            "E   dbtoolkit.errors.ConfigError: "
            "seed() takes scope session, module, function, got 'bogus'",
        ]
    )
