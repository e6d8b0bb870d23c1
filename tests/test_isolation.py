"""The isolation promises of db_session, checked against the real test database.

Every test here must hold whatever order the tests run in (forward, reversed, random,
spread over xdist workers): the tests that change the database are parametrized so
that several copies run, and each copy first checks that it starts from exactly the
template plus its own seed rows, then leaves changes behind that the next copy would
see if isolation were broken. Ids are never compared: sequences do not roll back.
"""

import pytest
from sqlalchemy import delete, func, insert, inspect, select, text, update
from sqlalchemy.exc import IntegrityError, ProgrammingError

from dbtoolkit import isolated_session
from dbtoolkit.models import Organization, Project, User
from factories import ProjectFactory, UserFactory

SCHEMA_TABLES = {"alembic_version", "organizations", "projects", "users"}
USER_COLUMNS = {"id", "name", "email", "active", "created_at", "organization_id"}
LEAKED_EMAIL = "leaked.user@example.com"
LEAKED_NAME = "Leaked Name"
LEAKED_TABLE = "leaked_table"
LEAKED_COLUMN = "leaked_column"
RUNS = range(3)


def count(connectable, model) -> int:
    return connectable.scalar(select(func.count()).select_from(model))


def emails(connectable) -> set[str]:
    return set(connectable.scalars(select(User.email)))


def schema_of(connection) -> tuple[set[str], set[str]]:
    """Return the table names and the columns of users, as the catalog says now."""
    inspector = inspect(connection)
    return set(inspector.get_table_names()), {c["name"] for c in inspector.get_columns("users")}


def assert_nothing_persisted(engine) -> None:
    """A connection of its own sees the migrated template and no rows at all."""
    with engine.connect() as connection:
        assert schema_of(connection) == (SCHEMA_TABLES, USER_COLUMNS)
        assert {
            model.__name__: count(connection, model) for model in (User, Organization, Project)
        } == {
            "User": 0,
            "Organization": 0,
            "Project": 0,
        }


def assert_starts_from_the_seed(db_session, engine, seeded_users) -> None:
    assert count(db_session, User) == 5
    assert emails(db_session) == {user.email for user in seeded_users}
    assert db_session.scalar(select(func.count()).where(User.name == LEAKED_NAME)) == 0
    assert schema_of(db_session.connection()) == (SCHEMA_TABLES, USER_COLUMNS)
    with engine.connect() as fresh:
        assert schema_of(fresh) == (SCHEMA_TABLES, USER_COLUMNS)


# (g) Nothing a test did persists: checked without db_session, by a connection of its own.
# This copy sits first in the file and its twin last, so that in every order some
# copy runs after the tests below have committed, failed and run DDL.
def test_a_fresh_connection_sees_an_empty_migrated_database_first(engine):
    assert_nothing_persisted(engine)


def test_isolated_session_leaves_nothing_behind_even_what_it_committed(engine):
    with isolated_session(engine) as session:
        organization = Organization(name="Persisted Ltd", slug="persisted-ltd")
        session.add(User(name="Per Sisted", email=LEAKED_EMAIL, organization=organization))
        session.commit()
        session.execute(text(f"CREATE TABLE {LEAKED_TABLE} (id int)"))
        session.execute(text(f"ALTER TABLE users ADD COLUMN {LEAKED_COLUMN} int"))
        session.commit()
        assert count(session, User) == 1
        assert LEAKED_TABLE in schema_of(session.connection())[0]
    assert_nothing_persisted(engine)


# (a) Committed rows do not reach the next test.
@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("change", ["insert", "update", "delete", "raw_sql"])
def test_what_a_test_commits_is_gone_in_the_next_test(
    db_session, engine, seeded_users, change, run
):
    assert_starts_from_the_seed(db_session, engine, seeded_users)

    if change == "insert":
        UserFactory.create(email=LEAKED_EMAIL)
        expected = 6
    elif change == "update":
        db_session.execute(update(User).values(name=LEAKED_NAME))
        expected = 5
    elif change == "delete":
        db_session.execute(delete(Project))
        db_session.execute(delete(User))
        db_session.execute(delete(Organization))
        expected = 0
    else:
        org_id = db_session.scalar(
            insert(Organization).values(name="Raw Corp", slug="raw-corp").returning(Organization.id)
        )
        db_session.execute(
            text("INSERT INTO users (name, email, organization_id) VALUES (:name, :email, :org)"),
            {"name": LEAKED_NAME, "email": LEAKED_EMAIL, "org": org_id},
        )
        expected = 6
    db_session.commit()

    assert count(db_session, User) == expected
    if change == "update":
        assert set(db_session.scalars(select(User.name))) == {LEAKED_NAME}


@pytest.mark.parametrize("run", RUNS)
def test_what_a_test_without_seeds_commits_is_gone_in_the_next_test(db_session, run):
    assert {
        model.__name__: count(db_session, model) for model in (User, Organization, Project)
    } == {
        "User": 0,
        "Organization": 0,
        "Project": 0,
    }
    ProjectFactory.create_batch(2)
    db_session.commit()
    assert (count(db_session, User), count(db_session, Project)) == (2, 2)


# (b) rollback() returns to what the seed fixtures committed, not to an empty database.
def test_rollback_returns_to_the_seeded_users(db_session, seeded_users):
    before = dict(db_session.execute(select(User.email, User.name)).all())
    assert len(before) == 5

    UserFactory.create_batch(3)
    seeded_users[0].name = LEAKED_NAME
    db_session.delete(seeded_users[1])
    db_session.flush()
    assert count(db_session, User) == 7

    db_session.rollback()

    assert dict(db_session.execute(select(User.email, User.name)).all()) == before
    assert seeded_users[0].name == before[seeded_users[0].email]


def test_rollback_keeps_what_the_test_itself_committed(db_session, seeded_users):
    kept = UserFactory.create().email
    db_session.commit()
    dropped = UserFactory.create().email
    db_session.flush()

    db_session.rollback()

    assert count(db_session, User) == 6
    assert kept in emails(db_session)
    assert dropped not in emails(db_session)


# (c) A failed statement is recovered from with rollback(), and the session keeps working.
def test_duplicate_email_can_be_rolled_back_and_the_session_keeps_working(db_session, seeded_users):
    uncommitted = UserFactory.create().email
    db_session.add(User(name="Dupli Cate", email=seeded_users[0].email))
    with pytest.raises(IntegrityError) as excinfo:
        db_session.flush()
    assert excinfo.value.orig.diag.constraint_name == "users_email_key"

    db_session.rollback()

    assert emails(db_session) == {user.email for user in seeded_users}
    assert uncommitted not in emails(db_session)
    newcomer = UserFactory.create().email
    db_session.commit()
    assert count(db_session, User) == 6
    assert newcomer in emails(db_session)


def test_failed_raw_statement_can_be_rolled_back_and_the_session_keeps_working(
    db_session, seeded_users
):
    with pytest.raises(ProgrammingError):
        db_session.execute(text("SELECT * FROM no_such_table"))
    db_session.rollback()
    UserFactory.create()
    db_session.commit()
    assert count(db_session, User) == 6


@pytest.mark.parametrize("run", RUNS)
def test_a_test_that_ends_inside_a_failed_statement_leaves_nothing_behind(
    db_session, engine, seeded_users, run
):
    assert_starts_from_the_seed(db_session, engine, seeded_users)
    UserFactory.create(email=LEAKED_EMAIL)
    db_session.commit()
    db_session.add(User(name="Dupli Cate", email=LEAKED_EMAIL))
    with pytest.raises(IntegrityError):
        db_session.flush()
    # No rollback: the test ends with the session in a failed transaction.


# (d) Savepoints nest: an inner rollback keeps the outer changes.
def test_inner_savepoint_rollback_keeps_the_outer_changes(db_session, seeded_users):
    original_name = seeded_users[0].name
    outer = UserFactory.create().email

    nested = db_session.begin_nested()
    inner = UserFactory.create().email
    seeded_users[0].name = LEAKED_NAME
    db_session.flush()
    assert count(db_session, User) == 7
    nested.rollback()

    assert count(db_session, User) == 6
    assert outer in emails(db_session)
    assert inner not in emails(db_session)
    assert seeded_users[0].name == original_name
    db_session.commit()
    assert outer in emails(db_session)


def test_committed_inner_savepoint_is_undone_by_the_outer_rollback(db_session, seeded_users):
    with db_session.begin_nested():
        outer = UserFactory.create().email
        with db_session.begin_nested():
            inner = UserFactory.create().email
        assert {outer, inner} <= emails(db_session)

    db_session.rollback()

    assert emails(db_session) == {user.email for user in seeded_users}


# (e) DDL is undone: the next test sees neither the table nor the column.
@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("ddl", ["create_table", "add_column"])
def test_ddl_is_gone_in_the_next_test(db_session, engine, seeded_users, ddl, run):
    assert_starts_from_the_seed(db_session, engine, seeded_users)

    if ddl == "create_table":
        db_session.execute(text(f"CREATE TABLE {LEAKED_TABLE} (id serial PRIMARY KEY, note text)"))
        db_session.execute(text(f"INSERT INTO {LEAKED_TABLE} (note) VALUES ('left behind')"))
    else:
        db_session.execute(text(f"ALTER TABLE users ADD COLUMN {LEAKED_COLUMN} text"))
        db_session.execute(text(f"UPDATE users SET {LEAKED_COLUMN} = 'left behind'"))
    db_session.commit()

    tables, columns = schema_of(db_session.connection())
    assert (LEAKED_TABLE in tables) == (ddl == "create_table")
    assert (LEAKED_COLUMN in columns) == (ddl == "add_column")


# (f) Another connection never sees the test's rows: added, flushed or committed.
def test_another_connection_never_sees_the_tests_rows(db_session, engine, seeded_users):
    def seen_elsewhere() -> tuple[int, int, set[str]]:
        with engine.connect() as other:
            return count(other, User), count(other, Organization), emails(other)

    # Even the seed rows are only in the test's uncommitted outer transaction.
    assert seen_elsewhere() == (0, 0, set())

    db_session.add(UserFactory.build(email=LEAKED_EMAIL))
    assert seen_elsewhere() == (0, 0, set())
    db_session.flush()
    assert seen_elsewhere() == (0, 0, set())
    db_session.commit()
    assert seen_elsewhere() == (0, 0, set())
    db_session.execute(
        text("INSERT INTO users (name, email) VALUES ('Raw Row', 'raw.row@example.com')")
    )
    db_session.commit()
    assert seen_elsewhere() == (0, 0, set())

    assert count(db_session, User) == 7
    assert {LEAKED_EMAIL, "raw.row@example.com"} <= emails(db_session)


def test_a_fresh_connection_sees_an_empty_migrated_database_last(engine):
    assert_nothing_persisted(engine)
