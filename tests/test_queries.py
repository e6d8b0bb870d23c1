"""Counting queries: N+1 detection on db_session, and what a failing count reports.

The counts are exact: every test starts from its own seed rows (or none) and counts
only what its block runs, whatever ran before it and in whatever order.
"""

from __future__ import annotations

import pytest
from catalog import run
from sqlalchemy import event, func, insert, select, text
from sqlalchemy.orm import selectinload

from dbtoolkit import count_queries, queries
from dbtoolkit.models import Organization, User
from factories import OrganizationFactory, UserFactory

# --- Counting on db_session --------------------------------------------------------


class BlockError(Exception):
    pass


def run_in(block, db_session, statements, *, fail=False, entered=None):
    """Run ``statements`` inside ``block``, then raise BlockError there if ``fail``.

    What ``block`` yields is appended to ``entered``.
    """
    with block as counted:
        if entered is not None:
            entered.append(counted)
        for statement in statements:
            db_session.execute(text(statement))
        if fail:
            raise BlockError


def fresh_users(db_session):
    """Forget every loaded object, so the organizations are loaded from the database."""
    db_session.expunge_all()
    return db_session.scalars(select(User).order_by(User.id)).all()


def test_lazy_loading_each_users_organization_is_one_query_per_user(db_session, seeded_users):
    assert len({user.organization_id for user in seeded_users}) == 5
    with count_queries(db_session) as counted:
        users = fresh_users(db_session)
        names = [user.organization.name for user in users]
    assert len(names) == 5
    assert len(counted) == 1 + 5
    assert counted.statements[0].startswith("SELECT users.id")
    assert all(s.startswith("SELECT organizations.id") for s in counted.statements[1:])


def test_selectinload_brings_it_down_to_two(db_session, seeded_users, assert_num_queries):
    db_session.expunge_all()
    with assert_num_queries(2) as counted:
        users = db_session.scalars(select(User).options(selectinload(User.organization))).all()
        names = [user.organization.name for user in users]
    assert len(names) == 5
    assert counted.statements[1].startswith("SELECT organizations.id")


def test_users_of_one_organization_load_it_once(db_session, assert_num_queries):
    organization = OrganizationFactory()
    UserFactory.create_batch(3, organization=organization)
    with assert_num_queries(2):  # the other two users find it in the identity map
        slugs = {user.organization.slug for user in fresh_users(db_session)}
    assert slugs == {organization.slug}


def test_savepoints_the_session_sends_are_not_counted(db_session, seeded_users):
    sent = []

    def record(conn, cursor, statement, parameters, context, executemany):
        sent.append(statement.split()[0])

    connection = db_session.get_bind()
    event.listen(connection, "before_cursor_execute", record)
    try:
        with count_queries(db_session) as counted:
            db_session.scalar(select(func.count()).select_from(User))
            db_session.commit()
            db_session.scalar(select(func.count()).select_from(User))
            db_session.rollback()
            assert db_session.scalar(select(func.count()).select_from(User)) == 5
    finally:
        event.remove(connection, "before_cursor_execute", record)
    assert len(counted) == 3
    assert all(statement.startswith("SELECT count(*)") for statement in counted.statements)
    # They were sent all the same: the block began, released and rolled back savepoints.
    assert {"SAVEPOINT", "RELEASE", "ROLLBACK"} <= set(sent)


def test_a_flush_of_many_rows_is_one_query(db_session, assert_num_queries):
    db_session.add_all(OrganizationFactory.build_batch(3))
    with assert_num_queries(1) as counted:
        db_session.flush()
    assert counted.statements[0].startswith("INSERT INTO organizations")


def test_an_executemany_counts_each_batch_the_cursor_runs(db_session, assert_num_queries):
    rows = [{"name": f"Batch {n}", "slug": f"batch-{n}"} for n in range(3)]
    # With RETURNING, every driver sends the rows in "insertmanyvalues" batches of 2.
    statement = (
        insert(Organization.__table__)
        .returning(Organization.id)
        .execution_options(insertmanyvalues_page_size=2)
    )
    with assert_num_queries(2):
        db_session.connection().execute(statement, rows)
    assert db_session.scalar(select(func.count()).where(Organization.slug.like("batch-%"))) == 3


def test_an_engine_is_counted_on_all_its_connections_a_connection_on_itself(
    db_session, engine, assert_num_queries
):
    with count_queries(engine) as on_engine, count_queries(db_session) as on_session:
        db_session.execute(text("SELECT 1"))
        with engine.connect() as other:
            other.execute(text("SELECT 2"))
    assert on_engine.statements == ["SELECT 1", "SELECT 2"]
    assert on_session.statements == ["SELECT 1"]
    with assert_num_queries(1, bind=engine), engine.connect() as other:
        other.execute(text("SELECT 3"))


@pytest.mark.dbtoolkit(isolation="database")
def test_a_test_with_a_database_of_its_own_is_counted_on_it(
    db_session, seeded_users, assert_num_queries
):
    db_session.expunge_all()
    with assert_num_queries(1 + 5):
        names = [user.organization.name for user in db_session.scalars(select(User))]
    assert len(names) == 5


def test_counting_stops_when_the_block_ends_even_by_an_error(db_session):
    with count_queries(db_session.get_bind()) as counted:
        db_session.execute(text("SELECT 1"))
    entered = []
    with pytest.raises(BlockError):
        run_in(count_queries(db_session), db_session, ["SELECT 1"], fail=True, entered=entered)
    db_session.execute(text("SELECT 2"))
    assert counted.statements == entered[0].statements == ["SELECT 1"]


def test_assert_max_num_queries_passes_up_to_the_maximum(
    db_session, seeded_users, assert_max_num_queries
):
    with assert_max_num_queries(2) as counted:
        db_session.get(User, seeded_users[0].id)  # in the identity map: no query
        db_session.execute(text("SELECT 1"))
    assert len(counted) == 1
    with assert_max_num_queries(2):
        db_session.execute(text("SELECT 1"))
        db_session.execute(text("SELECT 2"))


# --- What a failing count says ------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "count", "statements", "message"),
    [
        pytest.param(
            queries.assert_num_queries,
            2,
            ["SELECT 1"],
            "expected 2 queries, 1 ran:\n  1. SELECT 1",
            id="exact-too-few",
        ),
        pytest.param(
            queries.assert_num_queries,
            1,
            [],
            "expected 1 query, 0 ran",
            id="exact-none",
        ),
        pytest.param(
            queries.assert_max_num_queries,
            1,
            ["SELECT 1", "SELECT count(*)\nFROM users\nWHERE users.active"],
            "expected at most 1 query, 2 ran:\n"
            "  1. SELECT 1\n"
            "  2. SELECT count(*)\n"
            "     FROM users\n"
            "     WHERE users.active",
            id="max-multi-line",
        ),
    ],
)
def test_a_failing_count_lists_every_statement(db_session, check, count, statements, message):
    with pytest.raises(AssertionError) as failure:
        run_in(check(count, db_session), db_session, statements)
    assert str(failure.value) == message


def test_ten_statements_keep_their_text_aligned(db_session):
    statements = [f"SELECT {number},\n{number}" for number in range(1, 11)]
    with pytest.raises(AssertionError) as failure:
        run_in(queries.assert_num_queries(9, db_session), db_session, statements)
    lines = str(failure.value).splitlines()
    assert lines[0] == "expected 9 queries, 10 ran:"
    assert lines[17:] == ["  9. SELECT 9,", "     9", "  10. SELECT 10,", "      10"]


def test_an_error_in_the_block_is_not_hidden_by_the_count(db_session, assert_num_queries):
    with pytest.raises(BlockError):
        run_in(assert_num_queries(0), db_session, ["SELECT 1"], fail=True)


@pytest.mark.parametrize("check", [queries.assert_num_queries, queries.assert_max_num_queries])
@pytest.mark.parametrize("count", [-1, 1.5, True])
def test_a_count_that_is_not_a_whole_number_of_0_or_more_is_refused(db_session, check, count):
    with pytest.raises(ValueError, match=r"\(\) needs a count of 0 or more, got ") as failure:
        check(count, db_session)
    assert str(failure.value) == f"{check.__name__}() needs a count of 0 or more, got {count!r}"


def test_something_else_than_an_engine_connection_or_session_is_refused():
    with pytest.raises(TypeError) as failure, count_queries("postgresql://"):
        pass
    assert str(failure.value) == (
        "count queries on a SQLAlchemy Engine, Connection or Session (or a started async "
        "one), got str 'postgresql://'"
    )


# --- The fixtures in a user's project -------------------------------------------------

COUNTING_TESTS = """
    from sqlalchemy import select, text

    from catalog_models import Author


    def test_passes(db_session, seeded_authors, {fixture}):
        with {fixture}(2):
            db_session.execute(text("SELECT 1"))
            db_session.scalars(select(Author.name).order_by(Author.name)).all()


    def test_one_too_many(db_session, seeded_authors, {fixture}):
        with {fixture}(1):
            db_session.execute(text("SELECT 1"))
            db_session.scalars(select(Author.name).order_by(Author.name)).all()
"""


@pytest.mark.parametrize(
    ("fixture", "header"),
    [
        pytest.param("assert_num_queries", "expected 1 query, 2 ran:", id="exact"),
        pytest.param("assert_max_num_queries", "expected at most 1 query, 2 ran:", id="max"),
    ],
)
def test_a_count_exceeded_fails_the_test_with_every_statement(
    catalog: pytest.Pytester, fixture: str, header: str
) -> None:
    catalog.makepyfile(test_counting=COUNTING_TESTS.replace("{fixture}", fixture))
    result = run(catalog)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            f"E       AssertionError: {header}",
            "E         1. SELECT 1",
            "E         2. SELECT authors.name",
            "E            FROM authors ORDER BY authors.name",
        ],
        consecutive=True,
    )
    result.stdout.fnmatch_lines(["FAILED test_counting.py::test_one_too_many - AssertionError: *"])
    # __tracebackhide__: the failure points at the test's with statement, not at dbtoolkit.
    assert "dbtoolkit/queries.py" not in result.stdout.str()
