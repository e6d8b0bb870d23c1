"""The application's own sessions join the test: db_bind and ``isolation.joined``.

``tests/service.py`` opens sessions from module-level makers and commits, as real
code does. Bound with ``db_bind``, what it commits is seen by the test's db_session
(one transaction) and by no other connection, and is gone in the next test. The
tests that let it commit are parametrized so that several copies run, each first
checking that it starts from exactly the 5 seeded users, untouched, with the makers
as the service defined them: a leak would fail some copy in any order. The inner
runs at the end show that without db_bind the same commit is a real leak.
"""

import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest
import service
from catalog import run
from sqlalchemy import event, func, select

from dbtoolkit.isolation import joined
from dbtoolkit.models import Organization, User
from factories import UserFactory

NEW_NAME = "Grace Hopper"
NEW_EMAIL = "grace.hopper@example.com"
NEW_ORGANIZATION_NAME = "Renamed By The Service"
RUNS = range(3)

# The makers' settings as the service defined them, before any test bound them.
SESSION_LOCAL_KW = dict(service.SessionLocal.kw)
SCOPED_KW = dict(service.Scoped.session_factory.kw)


@event.listens_for(service.engine, "connect")
def _refuse(*args: object) -> None:
    raise AssertionError("the service connected its own engine: its maker was not bound")


def count(connectable, model) -> int:
    return connectable.scalar(select(func.count()).select_from(model))


def users(connectable) -> set[tuple[str, bool, str]]:
    """Each user's email, whether active, and organization name."""
    return set(
        connectable.execute(
            select(User.email, User.active, Organization.name).join(User.organization)
        ).all()
    )


def assert_starts_from_the_seed(db_session, engine, seeded_users) -> None:
    assert_makers_as_defined()
    assert_only_the_seed(db_session, engine, seeded_users)


def assert_makers_as_defined() -> None:
    assert service.SessionLocal.kw == SESSION_LOCAL_KW
    assert service.Scoped.session_factory.kw == SCOPED_KW
    assert not service.Scoped.registry.has()


def assert_only_the_seed(db_session, engine, seeded_users) -> None:
    assert users(db_session) == {
        (user.email, True, user.organization.name) for user in seeded_users
    }
    assert count(db_session, User) == 5
    assert_nothing_elsewhere(engine)


def assert_nothing_elsewhere(engine) -> None:
    """A connection of its own sees no users and no organizations at all."""
    with engine.connect() as fresh:
        assert (count(fresh, User), count(fresh, Organization)) == (0, 0)


@pytest.mark.parametrize("run", RUNS)
def test_what_the_service_commits_is_seen_by_the_test_and_by_no_other_connection(
    db_session, db_bind, engine, seeded_users, run
):
    assert_starts_from_the_seed(db_session, engine, seeded_users)
    db_bind(service.SessionLocal)
    organization = seeded_users[0].organization

    # The service finds the seeded organization: it sees the test's rows.
    user_id = service.register_user(NEW_NAME, NEW_EMAIL, organization_slug=organization.slug)

    registered = db_session.get(User, user_id)
    assert (registered.email, registered.organization_id) == (NEW_EMAIL, organization.id)
    assert count(db_session, User) == 6
    assert service.user_emails() == {user.email for user in seeded_users} | {NEW_EMAIL}
    assert_nothing_elsewhere(engine)


@pytest.mark.parametrize("run", RUNS)
def test_what_the_service_updates_is_undone_in_the_next_test(
    db_session, db_bind, engine, seeded_users, run
):
    assert_starts_from_the_seed(db_session, engine, seeded_users)
    db_bind(service.SessionLocal)
    kept = seeded_users[0].email

    assert service.deactivate_inactive({kept}) == 4

    assert set(db_session.scalars(select(User.email).where(User.active))) == {kept}
    assert_nothing_elsewhere(engine)


@pytest.mark.parametrize("run", RUNS)
def test_a_service_rollback_undoes_its_own_work_only(
    db_session, db_bind, engine, seeded_users, run
):
    assert_makers_as_defined()
    db_bind(service.SessionLocal)
    existing = seeded_users[0]

    # Before the test's session sent anything, and again after it flushed a row: the
    # service's rollback after its failed INSERT ends its own SAVEPOINT, nothing more.
    assert service.register_or_get(NEW_NAME, existing.email) == existing.id
    assert_only_the_seed(db_session, engine, seeded_users)
    flushed = UserFactory.create(email=NEW_EMAIL)
    assert service.register_or_get(NEW_NAME, NEW_EMAIL) == flushed.id

    assert count(db_session, User) == 6
    assert service.user_emails() == {user.email for user in seeded_users} | {NEW_EMAIL}
    assert_nothing_elsewhere(engine)


@pytest.mark.parametrize("run", RUNS)
def test_the_service_in_another_thread_joins_the_test_too(
    db_session, db_bind, engine, seeded_users, run
):
    assert_makers_as_defined()
    db_bind(service.SessionLocal)

    with ThreadPoolExecutor(max_workers=1) as pool:
        # The test's session has sent nothing yet: the service starts right on the seed.
        seen = pool.submit(service.user_emails).result()
        assert seen == {user.email for user in seeded_users}
        user_id = pool.submit(service.register_user, NEW_NAME, NEW_EMAIL).result()
        deactivated = pool.submit(service.deactivate_inactive, {NEW_EMAIL}).result()

    assert deactivated == 5
    assert db_session.scalar(select(User.id).where(User.active)) == user_id
    assert count(db_session, User) == 6
    assert_nothing_elsewhere(engine)


@pytest.mark.parametrize("run", RUNS)
def test_a_scoped_session_joins_the_test_and_is_removed_after_it(
    db_session, db_bind, engine, seeded_users, run
):
    assert_starts_from_the_seed(db_session, engine, seeded_users)
    db_bind(service.Scoped)
    organization = seeded_users[0].organization

    service.rename_organization(organization.slug, NEW_ORGANIZATION_NAME)

    # The service leaves its session to the end of the request; db_bind removes it.
    assert service.Scoped.registry.has()
    assert service.Scoped().get_bind() is db_session.get_bind()
    assert (
        db_session.scalar(select(Organization.name).where(Organization.id == organization.id))
        == NEW_ORGANIZATION_NAME
    )
    assert_nothing_elsewhere(engine)


def test_joined_binds_the_makers_for_the_block_and_restores_them(db_session, engine, seeded_users):
    assert_starts_from_the_seed(db_session, engine, seeded_users)
    connection = db_session.get_bind()
    organization = seeded_users[0].organization

    with joined(connection, service.SessionLocal, service.Scoped):
        bound = {"bind": connection, "join_transaction_mode": "create_savepoint"}
        assert service.SessionLocal.kw == {**SESSION_LOCAL_KW, **bound}
        assert service.Scoped.session_factory.kw == {**SCOPED_KW, **bound}
        assert service.user_emails() == {user.email for user in seeded_users}
        service.rename_organization(organization.slug, NEW_ORGANIZATION_NAME)
        assert service.Scoped.registry.has()

    assert service.SessionLocal.kw == SESSION_LOCAL_KW
    assert service.Scoped.session_factory.kw == SCOPED_KW
    assert not service.Scoped.registry.has()
    # What the service committed in the block stays in the test until the test ends.
    assert NEW_ORGANIZATION_NAME in {name for _, _, name in users(db_session)}
    assert_nothing_elsewhere(engine)


def test_db_bind_refuses_an_engine_with_what_to_pass_instead(db_session, db_bind):
    with pytest.raises(TypeError) as excinfo:
        db_bind(service.engine)
    assert str(excinfo.value) == (
        f"db_bind takes sessionmaker or scoped_session objects, got {service.engine!r}; pass "
        "the sessionmaker the code under test opens its sessions with, or mark the test "
        '@pytest.mark.dbtoolkit(isolation="database") to let it commit for real'
    )
    assert service.SessionLocal.kw == SESSION_LOCAL_KW


def test_a_refused_maker_leaves_the_makers_before_it_as_they_were(db_session, db_bind):
    saved = service.SessionLocal.kw
    try:
        with pytest.raises(TypeError, match="got Engine"):
            db_bind(service.SessionLocal, service.engine)
        assert service.SessionLocal.kw == SESSION_LOCAL_KW
    finally:  # should it fail, the tests after it still start from the service's makers
        service.SessionLocal.kw = saved


def test_a_scoped_session_is_removed_in_a_worker_thread_that_outlives_the_block(
    db_session, seeded_users
):
    slug = seeded_users[0].organization.slug
    with ThreadPoolExecutor(max_workers=1) as worker:
        try:
            with joined(db_session.get_bind(), service.Scoped):
                worker.submit(service.rename_organization, slug, NEW_ORGANIZATION_NAME).result()
            # The worker thread lives on, as an executor does, with no session left.
            assert not worker.submit(service.Scoped.registry.has).result()
        finally:  # should it fail, the tests after it still find no session there
            worker.submit(service.Scoped.remove).result()


# --- Without db_bind, the same commit is a leak: seen from a project's own run -------

INNER_SERVICE = """
    from sqlalchemy import func, select
    from sqlalchemy.orm import sessionmaker

    from catalog_models import Author

    # Bound at startup to the application's engine; the conftest does it for the tests.
    SessionLocal = sessionmaker()


    def add_author(name):
        with SessionLocal.begin() as session:
            session.add(Author(name=name))


    def count_authors():
        with SessionLocal() as session:
            return session.scalar(select(func.count()).select_from(Author))
"""

# Added to the catalog's conftest.
APP_ENGINE = """
    import pytest
    from sqlalchemy import create_engine, pool

    import catalog_service


    @pytest.fixture(scope="session", autouse=True)
    def app_engine(dbtoolkit_database):
        # What DATABASE_URL does in a real project: the service's own engine, on the
        # test database. NullPool: no idle connection keeps the database from being dropped.
        app_engine = create_engine(dbtoolkit_database, poolclass=pool.NullPool)
        catalog_service.SessionLocal.configure(bind=app_engine)
        yield app_engine
        app_engine.dispose()
"""

INNER_SERVICE_TESTS = """
    from sqlalchemy import func, select

    import catalog_service
    from catalog_models import Author

    NAME = "Ada Lovelace"


    def authors(connectable):
        return connectable.scalar(select(func.count()).select_from(Author))


    def test_without_db_bind_the_commit_joins_the_test_too(db_session, engine, seeded_authors):
        # The service's own engine points at the test database: it joins the test.
        catalog_service.add_author(NAME)
        assert catalog_service.count_authors() == authors(db_session) == 4
        with engine.connect() as fresh:
            assert authors(fresh) == 0


    def test_with_db_bind_the_commit_joins_the_test(db_session, db_bind, engine, seeded_authors):
        db_bind(catalog_service.SessionLocal)
        catalog_service.add_author(NAME)
        assert catalog_service.count_authors() == authors(db_session) == 4
        with engine.connect() as fresh:
            assert authors(fresh) == 0


    def test_the_next_test_starts_from_the_seed(db_session, engine, seeded_authors):
        assert authors(db_session) == 3
        with engine.connect() as fresh:
            assert authors(fresh) == 0
"""


def test_the_service_engine_on_the_test_database_joins_the_test_with_or_without_db_bind(
    catalog: pytest.Pytester,
) -> None:
    catalog.makepyfile(
        conftest=(catalog.path / "conftest.py").read_text() + textwrap.dedent(APP_ENGINE),
        catalog_service=INNER_SERVICE,
        test_service=INNER_SERVICE_TESTS,
    )
    result = run(catalog, "-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "test_service.py::test_without_db_bind_the_commit_joins_the_test_too PASSED*",
            "test_service.py::test_with_db_bind_the_commit_joins_the_test PASSED*",
            "test_service.py::test_the_next_test_starts_from_the_seed PASSED*",
        ]
    )
