"""organizations.owner_id is checked at commit, not at each statement.

The key is DEFERRABLE INITIALLY DEFERRED, so inside db_session a row may point at a
user that does not exist yet. The outer transaction is rolled back, never committed,
so these tests ask Postgres for the check at once with SET CONSTRAINTS ALL IMMEDIATE.

dbtoolkit does the same after every test that wrote anything, before rolling it back:
the inner runs at the end give the catalog project a deferred foreign key and show
that a test leaving it violated errors at teardown, naming it, as its COMMIT would
have failed, while a violation fixed or rolled back in time passes.
"""

import pytest
from catalog import run, sep_line
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from dbtoolkit.models import Organization, User
from factories import OrganizationFactory, UserFactory

OWNER_FK = "fk_organizations_owner_id_users"


def owner_id_in_database(session, organization: Organization) -> int | None:
    return session.scalar(
        text("SELECT owner_id FROM organizations WHERE id = :id"), {"id": organization.id}
    )


def users_with_id(session, user_id: int) -> int:
    return session.scalar(select(func.count()).select_from(User).where(User.id == user_id))


def test_an_organization_is_inserted_before_the_owner_it_names(db_session):
    owner_id = db_session.scalar(text("SELECT nextval(pg_get_serial_sequence('users', 'id'))"))

    organization = OrganizationFactory.create(owner_id=owner_id)
    # Flushed while the key points at no row: only a deferred check lets that through.
    assert owner_id_in_database(db_session, organization) == owner_id
    assert users_with_id(db_session, owner_id) == 0

    owner = UserFactory.create(id=owner_id, organization=organization)
    db_session.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))  # the check, passed

    db_session.expire(organization)
    assert organization.owner is owner
    assert owner.organization is organization
    assert owner in organization.users


def test_a_missing_owner_flushes_and_fails_once_the_check_runs(db_session):
    organization = OrganizationFactory.create(owner_id=-1)
    assert owner_id_in_database(db_session, organization) == -1

    with pytest.raises(IntegrityError, match=OWNER_FK) as excinfo:
        db_session.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))
    assert excinfo.value.orig.diag.constraint_name == OWNER_FK
    db_session.rollback()

    assert db_session.scalar(select(func.count()).where(Organization.owner_id == -1)) == 0


# --- dbtoolkit's own check, seen from a project's run ------------------------------

# The catalog's books.author_id, made a foreign key checked at commit only.
DEFERRED_AUTHOR_FK = (
    'op.execute("ALTER TABLE books DROP CONSTRAINT books_author_id_fkey, '
    "ADD CONSTRAINT fk_books_author_deferred FOREIGN KEY (author_id) REFERENCES authors(id) "
    'DEFERRABLE INITIALLY DEFERRED")'
)

DEFERRED_TESTS = """
    from sqlalchemy import func, select, text

    from catalog_models import Author, Book


    def flush_orphan(db_session, author_id=-1):
        # Without an author: the flush passes only while the check is deferred.
        assert db_session.scalar(select(func.count()).select_from(Book)) == 0
        book = Book(title="Orphan", author_id=author_id)
        db_session.add(book)
        db_session.flush()
        return book


    def test_left_flushed(db_session):
        flush_orphan(db_session)


    def test_fixed_before_the_end(db_session):
        next_id = text("SELECT nextval(pg_get_serial_sequence('authors', 'id'))")
        author_id = db_session.scalar(next_id)
        flush_orphan(db_session, author_id)
        db_session.add(Author(id=author_id, name="Late Author"))
        db_session.commit()


    def test_committed(db_session):
        flush_orphan(db_session)
        db_session.commit()


    def test_the_next_test_still_defers_the_check(db_session):
        book = flush_orphan(db_session)
        db_session.delete(book)
        db_session.commit()


    def test_rolled_back(db_session):
        flush_orphan(db_session)
        db_session.rollback()
        assert db_session.scalar(select(func.count()).select_from(Book)) == 0
"""

VIOLATED = (
    "DeferredConstraintError: the test left deferred constraint 'fk_books_author_deferred' "
    'violated, so its COMMIT would have failed: insert or update on table "books" violates '
    'foreign key constraint "fk_books_author_deferred" '
    '(Key (author_id)=(-1) is not present in table "authors".)'
)


@pytest.mark.catalog(second_revision=DEFERRED_AUTHOR_FK)
def test_a_deferred_constraint_left_violated_errors_the_test_at_teardown(
    catalog: pytest.Pytester,
) -> None:
    catalog.makepyfile(test_deferred=DEFERRED_TESTS)
    result = run(catalog, "-v")
    # Every body passes; the two tests that leave the orphan behind error at teardown.
    result.assert_outcomes(passed=5, errors=2)
    result.stdout.fnmatch_lines(
        [
            "test_deferred.py::test_left_flushed PASSED*",
            "test_deferred.py::test_left_flushed ERROR*",
            "test_deferred.py::test_fixed_before_the_end PASSED*",
            "test_deferred.py::test_committed PASSED*",
            "test_deferred.py::test_committed ERROR*",
            "test_deferred.py::test_the_next_test_still_defers_the_check PASSED*",
            "test_deferred.py::test_rolled_back PASSED*",
        ]
    )
    for name in ("test_left_flushed", "test_committed"):
        error = sep_line(result, f"ERROR at teardown of {name}")
        assert result.outlines[result.outlines.index(error) + 1] == VIOLATED
    assert result.outlines.count(VIOLATED) == 2
    assert "Traceback" not in result.stdout.str()
