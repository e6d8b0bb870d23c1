"""organizations.owner_id is checked at commit, not at each statement.

The key is DEFERRABLE INITIALLY DEFERRED, so inside db_session a row may point at a
user that does not exist yet. The outer transaction is rolled back, never committed,
so these tests ask Postgres for the check at once with SET CONSTRAINTS ALL IMMEDIATE.
"""

import pytest
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
