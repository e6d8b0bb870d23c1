"""A small application service on the sample schema, as a project would have one.

Like real code, it opens its own sessions from module-level session makers and
commits. Its engine reads its URL from the environment and is lazy: in the tests it
must never connect, since ``db_bind`` binds the makers to the test's connection.
``rename_organization`` uses a ``scoped_session``, the way web frameworks often do:
the session is removed at the end of the request, not by the function.
"""

from __future__ import annotations

import os
from collections.abc import Collection

from sqlalchemy import create_engine, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import scoped_session, sessionmaker

from dbtoolkit.models import Organization, User

DATABASE_URL = os.environ.get(
    "SERVICE_DATABASE_URL", "postgresql+psycopg2://service@localhost/service"
)

engine = create_engine(DATABASE_URL)
SessionLocal = sessionmaker(bind=engine, expire_on_commit=False)
Scoped = scoped_session(sessionmaker(bind=engine))


def register_user(name: str, email: str, organization_slug: str | None = None) -> int:
    """Create an active user, in the organization with that slug if one is given."""
    with SessionLocal() as session, session.begin():
        organization = None
        if organization_slug is not None:
            organization = session.scalars(
                select(Organization).where(Organization.slug == organization_slug)
            ).one()
        user = User(name=name, email=email, organization=organization)
        session.add(user)
        session.flush()
        return user.id


def register_or_get(name: str, email: str) -> int:
    """Register a user, or return the id of the user who has that email already."""
    with SessionLocal() as session:
        user = User(name=name, email=email)
        session.add(user)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            return session.scalars(select(User.id).where(User.email == email)).one()
        return user.id


def deactivate_inactive(seen_emails: Collection[str]) -> int:
    """Deactivate every active user not among ``seen_emails``; return how many."""
    with SessionLocal() as session:
        result = session.execute(
            update(User)
            .where(User.active, User.email.not_in(list(seen_emails)))
            .values(active=False)
        )
        session.commit()
        return result.rowcount


def user_emails() -> set[str]:
    """The emails of all users."""
    with SessionLocal() as session:
        return set(session.scalars(select(User.email)))


def rename_organization(slug: str, name: str) -> None:
    """Give the organization with that slug a new name (scoped session, not removed)."""
    session = Scoped()
    organization = session.scalars(select(Organization).where(Organization.slug == slug)).one()
    organization.name = name
    session.commit()
