"""The isolation promises of async_db_session, its factories, async_db_bind, loops and drivers.

As in test_isolation.py, every test here must hold whatever order the tests run in
(forward, reversed, random, spread over xdist workers): the tests that change the
database are parametrized so that several copies run, and each copy first checks
that it starts from exactly the template plus its own async seed rows, then leaves
changes behind that the next copy would see if isolation were broken. Ids are never
compared: sequences do not roll back. Objects are not touched after a rollback (that
expires them, and an async session cannot load lazily): the rows are queried instead.

Every test here runs in whatever event loop scope the run gives (CI runs the file in
function, module and session loops); tests/test_async_runs.py holds the inner runs.
"""

import asyncio
import importlib.util

import async_service
import factory
import pytest
import pytest_asyncio
from sqlalchemy import delete, event, func, insert, inspect, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from dbtoolkit import async_seed, count_queries
from dbtoolkit.aio import (
    create_async,
    create_batch_async,
    current_async_session,
    isolated_async_session,
)
from dbtoolkit.errors import NoSessionError
from dbtoolkit.isolation import joined
from dbtoolkit.models import Organization, Project, User
from factories import OrganizationFactory, ProjectFactory, UserFactory

SCHEMA_TABLES = {"alembic_version", "organizations", "projects", "users"}
USER_COLUMNS = {"id", "name", "email", "active", "created_at", "organization_id"}
TEMPLATE = (SCHEMA_TABLES, USER_COLUMNS)
NOTHING = {"User": 0, "Organization": 0, "Project": 0}
LEAKED_EMAIL = "leaked.user@example.com"
LEAKED_NAME = "Leaked Name"
LEAKED_TABLE = "leaked_table"
LEAKED_COLUMN = "leaked_column"
NEW_NAME = "Grace Hopper"
NEW_EMAIL = "grace.hopper@example.com"
ADMIN_NAME = "Ada Admin"
NO_SESSION = (
    "an async factory helper ran outside an async database test; request the "
    "async_db_session fixture in this test, or pass session="
)
RUNS = range(3)

async_seeded_users = async_seed(UserFactory, 5)

# The service's maker as the service defined it, before any test bound it.
SESSION_LOCAL_KW = dict(async_service.SessionLocal.kw)


@event.listens_for(async_service.engine.sync_engine, "connect")
def _refuse(*args: object) -> None:
    raise AssertionError("the service connected its own engine: its maker was not bound")


async def count(connectable, model) -> int:
    return await connectable.scalar(select(func.count()).select_from(model))


async def counts(connectable) -> dict[str, int]:
    return {
        model.__name__: await count(connectable, model) for model in (User, Organization, Project)
    }


async def emails(connectable) -> set[str]:
    return set(await connectable.scalars(select(User.email)))


async def users(connectable) -> set[tuple[str, str, bool]]:
    """Each user's email, name and whether active."""
    return set((await connectable.execute(select(User.email, User.name, User.active))).all())


def _schema(connection) -> tuple[set[str], set[str]]:
    inspector = inspect(connection)
    return set(inspector.get_table_names()), {c["name"] for c in inspector.get_columns("users")}


async def schema_of(connection: AsyncConnection) -> tuple[set[str], set[str]]:
    """Return the table names and the columns of users, as the catalog says now."""
    return await connection.run_sync(_schema)


async def seen_elsewhere(session: AsyncSession) -> tuple[tuple[set[str], set[str]], dict[str, int]]:
    """The schema and the row counts that an AsyncEngine of its own sees on the test database."""
    other = create_async_engine(session.bind.engine.url, poolclass=NullPool)
    try:
        async with other.connect() as connection:
            return await schema_of(connection), await counts(connection)
    finally:
        await other.dispose()


async def assert_starts_from_the_seed(session: AsyncSession, seeded: list[User]) -> None:
    """Exactly the template plus the 5 async seed users, untouched, and nothing elsewhere."""
    assert await users(session) == {(user.email, user.name, True) for user in seeded}
    assert await counts(session) == {"User": 5, "Organization": 5, "Project": 0}
    assert await schema_of(await session.connection()) == TEMPLATE
    assert await seen_elsewhere(session) == (TEMPLATE, NOTHING)


# (g) Nothing an async test did persists: checked by the sync engine's own connection.
# This copy sits first in the file and its twin last, so that in every order some copy
# runs after the tests below have committed, failed and run DDL.
def assert_nothing_persisted(engine) -> None:
    with engine.connect() as connection:
        assert _schema(connection) == TEMPLATE
        assert {
            model.__name__: connection.scalar(select(func.count()).select_from(model))
            for model in (User, Organization, Project)
        } == NOTHING


def test_a_fresh_connection_sees_an_empty_migrated_database_first(engine):
    assert_nothing_persisted(engine)


# (a) Committed rows do not reach the next test.
@pytest.mark.asyncio
@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("change", ["insert", "update", "delete", "raw_sql"])
async def test_what_an_async_test_commits_is_gone_in_the_next_test(
    async_db_session, async_seeded_users, change, run
):
    await assert_starts_from_the_seed(async_db_session, async_seeded_users)

    if change == "insert":
        await create_async(UserFactory, email=LEAKED_EMAIL)
        expected = 6
    elif change == "update":
        await async_db_session.execute(update(User).values(name=LEAKED_NAME, active=False))
        expected = 5
    elif change == "delete":
        await async_db_session.execute(delete(User))
        await async_db_session.execute(delete(Organization))
        expected = 0
    else:
        org_id = await async_db_session.scalar(
            insert(Organization).values(name="Raw Corp", slug="raw-corp").returning(Organization.id)
        )
        await async_db_session.execute(
            text("INSERT INTO users (name, email, organization_id) VALUES (:name, :email, :org)"),
            {"name": LEAKED_NAME, "email": LEAKED_EMAIL, "org": org_id},
        )
        expected = 6
    await async_db_session.commit()

    assert await count(async_db_session, User) == expected
    if change == "update":
        assert set(await async_db_session.scalars(select(User.name))) == {LEAKED_NAME}
    assert await seen_elsewhere(async_db_session) == (TEMPLATE, NOTHING)


@pytest.mark.asyncio
@pytest.mark.parametrize("run", RUNS)
async def test_what_an_async_test_without_seeds_commits_is_gone_in_the_next_test(
    async_db_session, run
):
    assert await counts(async_db_session) == NOTHING
    projects = await create_batch_async(ProjectFactory, 2)
    await async_db_session.commit()
    assert all(project.owner.organization.id is not None for project in projects)
    assert await counts(async_db_session) == {"User": 2, "Organization": 2, "Project": 2}


# (b) rollback() returns to what the async seed committed, not to an empty database.
@pytest.mark.asyncio
@pytest.mark.parametrize("run", RUNS)
async def test_rollback_returns_to_the_async_seed_and_the_test_goes_on(
    async_db_session, async_seeded_users, run
):
    await assert_starts_from_the_seed(async_db_session, async_seeded_users)
    before = await users(async_db_session)
    first = async_seeded_users[0]

    await create_batch_async(UserFactory, 3)
    first.name = LEAKED_NAME
    await async_db_session.delete(async_seeded_users[1])
    await async_db_session.flush()
    assert await count(async_db_session, User) == 7

    await async_db_session.rollback()

    assert await users(async_db_session) == before
    await async_db_session.refresh(first)
    assert first.name != LEAKED_NAME
    # What the test commits after its rollback is kept in it, and gone in the next one.
    await create_async(UserFactory, email=LEAKED_EMAIL)
    await async_db_session.commit()
    assert await count(async_db_session, User) == 6


@pytest.mark.asyncio
async def test_rollback_keeps_what_the_async_test_itself_committed(
    async_db_session, async_seeded_users
):
    kept = (await create_async(UserFactory)).email
    await async_db_session.commit()
    dropped = (await create_async(UserFactory)).email

    await async_db_session.rollback()

    assert await count(async_db_session, User) == 6
    assert kept in await emails(async_db_session)
    assert dropped not in await emails(async_db_session)


# (c) A failed statement is recovered from with rollback(), and the session keeps working.
@pytest.mark.asyncio
@pytest.mark.parametrize("run", RUNS)
async def test_duplicate_email_can_be_rolled_back_and_the_async_session_keeps_working(
    async_db_session, async_seeded_users, run
):
    await assert_starts_from_the_seed(async_db_session, async_seeded_users)
    seed_emails = {user.email for user in async_seeded_users}
    uncommitted = (await create_async(UserFactory)).email
    async_db_session.add(User(name="Dupli Cate", email=async_seeded_users[0].email))
    with pytest.raises(IntegrityError) as excinfo:
        await async_db_session.flush()
    assert "users_email_key" in str(excinfo.value.orig)

    await async_db_session.rollback()

    assert await emails(async_db_session) == seed_emails
    assert uncommitted not in await emails(async_db_session)
    newcomer = (await create_async(UserFactory, email=LEAKED_EMAIL)).email
    await async_db_session.commit()
    assert await emails(async_db_session) == seed_emails | {newcomer}


@pytest.mark.asyncio
@pytest.mark.parametrize("run", RUNS)
async def test_an_async_test_that_ends_inside_a_failed_statement_leaves_nothing_behind(
    async_db_session, async_seeded_users, run
):
    await assert_starts_from_the_seed(async_db_session, async_seeded_users)
    await create_async(UserFactory, email=LEAKED_EMAIL)
    await async_db_session.commit()
    async_db_session.add(User(name="Dupli Cate", email=LEAKED_EMAIL))
    with pytest.raises(IntegrityError):
        await async_db_session.flush()
    # No rollback: the test ends with the session in a failed transaction.


# (d) Savepoints nest: an inner rollback keeps the outer changes.
@pytest.mark.asyncio
@pytest.mark.parametrize("run", RUNS)
async def test_inner_async_savepoint_rollback_keeps_the_outer_changes(
    async_db_session, async_seeded_users, run
):
    await assert_starts_from_the_seed(async_db_session, async_seeded_users)
    outer = (await create_async(UserFactory)).email

    async with async_db_session.begin_nested() as savepoint:
        inner = (await create_async(UserFactory)).email
        await async_db_session.execute(update(User).values(name=LEAKED_NAME))
        assert await count(async_db_session, User) == 7
        await savepoint.rollback()

    assert await count(async_db_session, User) == 6
    assert outer in await emails(async_db_session)
    assert inner not in await emails(async_db_session)
    assert LEAKED_NAME not in set(await async_db_session.scalars(select(User.name)))
    await async_db_session.commit()
    assert outer in await emails(async_db_session)


@pytest.mark.asyncio
@pytest.mark.parametrize("run", RUNS)
async def test_committed_inner_async_savepoints_are_undone_by_the_outer_rollback(
    async_db_session, async_seeded_users, run
):
    await assert_starts_from_the_seed(async_db_session, async_seeded_users)
    seed_emails = {user.email for user in async_seeded_users}
    async with async_db_session.begin_nested():
        outer = (await create_async(UserFactory)).email
        async with async_db_session.begin_nested():
            inner = (await create_async(UserFactory)).email
        assert {outer, inner} <= await emails(async_db_session)

    await async_db_session.rollback()

    assert await emails(async_db_session) == seed_emails
    # A committed savepoint, then a commit: kept in the test, gone in the next one.
    async with async_db_session.begin_nested():
        await create_async(UserFactory, email=LEAKED_EMAIL)
    await async_db_session.commit()
    assert await emails(async_db_session) == seed_emails | {LEAKED_EMAIL}


# (e) DDL is undone: the next test sees neither the table nor the column.
@pytest.mark.asyncio
@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("ddl", ["create_table", "add_column"])
async def test_async_ddl_is_gone_in_the_next_test(async_db_session, async_seeded_users, ddl, run):
    await assert_starts_from_the_seed(async_db_session, async_seeded_users)

    if ddl == "create_table":
        await async_db_session.execute(
            text(f"CREATE TABLE {LEAKED_TABLE} (id serial PRIMARY KEY, note text)")
        )
        await async_db_session.execute(
            text(f"INSERT INTO {LEAKED_TABLE} (note) VALUES ('left behind')")
        )
    else:
        await async_db_session.execute(text(f"ALTER TABLE users ADD COLUMN {LEAKED_COLUMN} text"))
        await async_db_session.execute(text(f"UPDATE users SET {LEAKED_COLUMN} = 'left behind'"))
    await async_db_session.commit()

    # No other connection looks now: it would wait for the test's lock on the table.
    tables, columns = await schema_of(await async_db_session.connection())
    assert (LEAKED_TABLE in tables) == (ddl == "create_table")
    assert (LEAKED_COLUMN in columns) == (ddl == "add_column")


# (f) Another connection never sees the test's rows: added, flushed or committed.
@pytest.mark.asyncio
@pytest.mark.parametrize("run", RUNS)
async def test_another_connection_never_sees_the_async_tests_rows(
    async_db_session, async_seeded_users, engine, run
):
    def sync_sees() -> dict[str, int]:
        with engine.connect() as other:
            return {
                model.__name__: other.scalar(select(func.count()).select_from(model))
                for model in (User, Organization, Project)
            }

    # Even the seed rows are only in the test's uncommitted outer transaction.
    await assert_starts_from_the_seed(async_db_session, async_seeded_users)
    assert sync_sees() == NOTHING

    async_db_session.add(UserFactory.build(email=LEAKED_EMAIL))
    assert await seen_elsewhere(async_db_session) == (TEMPLATE, NOTHING)
    await async_db_session.flush()
    assert await seen_elsewhere(async_db_session) == (TEMPLATE, NOTHING)
    await async_db_session.commit()
    assert await seen_elsewhere(async_db_session) == (TEMPLATE, NOTHING)
    await async_db_session.execute(
        text("INSERT INTO users (name, email) VALUES ('Raw Row', 'raw.row@example.com')")
    )
    await async_db_session.commit()
    assert await seen_elsewhere(async_db_session) == (TEMPLATE, NOTHING)
    assert sync_sees() == NOTHING

    assert await count(async_db_session, User) == 7
    assert {LEAKED_EMAIL, "raw.row@example.com"} <= await emails(async_db_session)


# --- Async factories: through the active session, or the one passed ------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("run", RUNS)
async def test_create_async_creates_the_user_and_its_organization_in_the_active_session(
    async_db_session, run
):
    assert await counts(async_db_session) == NOTHING
    assert current_async_session() is async_db_session

    user = await create_async(UserFactory, name="Ada")

    assert user in async_db_session
    assert user.organization in async_db_session
    assert None not in (user.id, user.organization_id, user.organization.id)
    assert user.organization_id == user.organization.id
    row = (
        await async_db_session.execute(select(User.name, User.email).where(User.id == user.id))
    ).one()
    assert tuple(row) == ("Ada", user.email)
    assert await counts(async_db_session) == {"User": 1, "Organization": 1, "Project": 0}
    await async_db_session.commit()
    assert await seen_elsewhere(async_db_session) == (TEMPLATE, NOTHING)


@pytest.mark.asyncio
@pytest.mark.parametrize("run", RUNS)
async def test_create_batch_async_creates_users_each_with_an_organization(
    async_db_session, async_seeded_users, run
):
    await assert_starts_from_the_seed(async_db_session, async_seeded_users)

    batch = await create_batch_async(UserFactory, 3)

    assert len(batch) == 3
    assert all(user in async_db_session for user in batch)
    assert len({user.id for user in batch}) == 3
    assert None not in {user.id for user in batch}
    assert len({user.organization.id for user in batch}) == 3
    assert {user.organization_id for user in batch} == {user.organization.id for user in batch}
    assert await emails(async_db_session) >= {user.email for user in batch}
    await async_db_session.commit()
    assert await counts(async_db_session) == {"User": 8, "Organization": 8, "Project": 0}


@pytest.mark.asyncio
@pytest.mark.parametrize("run", RUNS)
async def test_the_async_factories_create_through_the_session_passed(
    async_db_session, async_seeded_users, run
):
    await assert_starts_from_the_seed(async_db_session, async_seeded_users)
    other_engine = create_async_engine(async_db_session.bind.engine.url, poolclass=NullPool)
    try:
        async with isolated_async_session(other_engine) as other:
            one = await create_async(UserFactory, session=other, name="Ada")
            batch = await create_batch_async(UserFactory, 2, session=other)
            await other.commit()

            assert all(user in other for user in (one, *batch))
            assert not any(user in async_db_session for user in (one, *batch))
            assert await counts(other) == {"User": 3, "Organization": 3, "Project": 0}
            assert await count(async_db_session, User) == 5
            assert current_async_session() is async_db_session
    finally:
        await other_engine.dispose()
    assert await seen_elsewhere(async_db_session) == (TEMPLATE, NOTHING)


def test_the_async_factories_outside_an_async_test_raise_no_session_error():
    # A sync test: no async_db_session (it could not request one), so no active session.
    with pytest.raises(NoSessionError) as excinfo:
        asyncio.run(create_batch_async(UserFactory, 3))
    assert str(excinfo.value) == NO_SESSION
    with pytest.raises(NoSessionError, match=r"^an async factory helper ran outside"):
        asyncio.run(create_async(UserFactory, name="Ada"))
    with pytest.raises(NoSessionError):
        current_async_session()


@pytest.mark.asyncio
async def test_count_queries_counts_what_an_async_session_runs(
    async_db_session, async_seeded_users
):
    with count_queries(async_db_session) as counted:
        users = (await async_db_session.scalars(select(User))).all()
        await async_db_session.commit()  # its SAVEPOINT statements are not counted
        await async_db_session.scalar(select(func.count()).select_from(User))
    assert len(users) == 5
    assert [statement.split()[0] for statement in counted.statements] == ["SELECT", "SELECT"]
    with count_queries(async_db_session.bind) as on_connection:
        await async_db_session.execute(text("SELECT 1"))
    assert on_connection.statements == ["SELECT 1"]


# --- The application's async service joins the test: async_db_bind and joined --------


def assert_the_service_as_defined() -> None:
    assert async_service.SessionLocal.kw == SESSION_LOCAL_KW
    assert async_service.SessionLocal.kw["bind"] is async_service.engine


@pytest.mark.asyncio
@pytest.mark.parametrize("run", RUNS)
async def test_what_the_async_service_commits_is_seen_by_the_test_and_by_no_other_connection(
    async_db_session, async_db_bind, async_seeded_users, run
):
    assert_the_service_as_defined()
    await assert_starts_from_the_seed(async_db_session, async_seeded_users)
    async_db_bind(async_service.SessionLocal)
    kept = async_seeded_users[0].email

    # The service sees the test's seed, and the test sees what the service committed.
    assert await async_service.count_users() == 5
    user_id = await async_service.register_user(NEW_NAME, NEW_EMAIL)
    registered = await async_db_session.get(User, user_id)
    assert (registered.name, registered.email, registered.active) == (NEW_NAME, NEW_EMAIL, True)
    assert await async_service.deactivate(kept) == 1

    assert set(await async_db_session.scalars(select(User.email).where(~User.active))) == {kept}
    assert await async_service.count_users() == await count(async_db_session, User) == 6
    assert await seen_elsewhere(async_db_session) == (TEMPLATE, NOTHING)


@pytest.mark.asyncio
async def test_joined_binds_the_async_maker_for_the_block_and_restores_it(
    async_db_session, async_seeded_users
):
    assert_the_service_as_defined()
    connection = async_db_session.bind
    assert isinstance(connection, AsyncConnection)

    with joined(connection, async_service.SessionLocal):
        bound = {"bind": connection, "join_transaction_mode": "create_savepoint"}
        assert async_service.SessionLocal.kw == {**SESSION_LOCAL_KW, **bound}
        await async_service.register_user(NEW_NAME, NEW_EMAIL)
        assert await async_service.count_users() == 6

    assert async_service.SessionLocal.kw == SESSION_LOCAL_KW
    # What the service committed in the block stays in the test until the test ends.
    assert NEW_EMAIL in await emails(async_db_session)
    assert await seen_elsewhere(async_db_session) == (TEMPLATE, NOTHING)


# --- As a FastAPI user writes it: fixtures of their own, factories, the service --------


@pytest_asyncio.fixture
async def admin(async_db_session: AsyncSession) -> User:
    return await create_async(UserFactory, name=ADMIN_NAME)


@pytest_asyncio.fixture
async def bound_service(async_db_bind) -> None:
    """What a FastAPI project does with its get_session dependency in its conftest."""
    async_db_bind(async_service.SessionLocal)


@pytest.mark.asyncio
@pytest.mark.parametrize("run", RUNS)
async def test_an_admin_deactivates_a_user_the_service_registered(
    async_db_session, async_seeded_users, admin, bound_service, run
):
    # Exactly the seed and the admin: nothing a copy of this test committed is left.
    assert await async_service.count_users() == 6
    assert await emails(async_db_session) == {user.email for user in async_seeded_users} | {
        admin.email
    }
    assert admin.id is not None

    await async_service.register_user(NEW_NAME, NEW_EMAIL)
    staff = await create_batch_async(UserFactory, 2, organization=admin.organization)
    await async_db_session.commit()
    assert await async_service.deactivate(NEW_EMAIL) == 1

    assert await async_service.count_users() == 9
    assert {user.organization_id for user in staff} == {admin.organization_id}
    assert set(await async_db_session.scalars(select(User.email).where(~User.active))) == {
        NEW_EMAIL
    }


@pytest.mark.asyncio
@pytest.mark.parametrize("run", RUNS)
async def test_after_the_fastapi_style_tests_only_the_seed_is_left(
    async_db_session, async_seeded_users, run
):
    assert_the_service_as_defined()
    await assert_starts_from_the_seed(async_db_session, async_seeded_users)
    assert ADMIN_NAME not in set(await async_db_session.scalars(select(User.name)))


# --- One connection for every async test, whatever its loop ---------------------------

BACKENDS = set()
MODULE_SEED = []

async_seeded_projects = async_seed(ProjectFactory, 2, scope="module")


@pytest.mark.asyncio
@pytest.mark.parametrize("run", RUNS)
async def test_every_async_test_of_a_worker_works_on_one_connection(async_db_session, run):
    # Each test runs in a new event loop (pytest-asyncio's default), on the same connection.
    BACKENDS.add(await async_db_session.scalar(text("SELECT pg_backend_pid()")))
    assert len(BACKENDS) == 1
    assert await counts(async_db_session) == NOTHING


@pytest.mark.asyncio
@pytest.mark.parametrize("run", RUNS)
async def test_a_module_scoped_async_seed_lies_below_the_function_scoped_one(
    async_db_session, async_seeded_users, async_seeded_projects, run
):
    # The projects' owners and their organizations come with them: 2 + 5 users.
    assert await counts(async_db_session) == {"User": 7, "Organization": 7, "Project": 2}
    titles = sorted(project.title for project in async_seeded_projects)
    MODULE_SEED.append(titles)
    assert MODULE_SEED[0] == titles  # the same rows, whichever seeds lie on top
    assert await seen_elsewhere(async_db_session) == (TEMPLATE, NOTHING)


class OrganizationWithStaffFactory(OrganizationFactory):
    """An organization, two users (RelatedFactoryList) and a project a hook makes."""

    class Meta:  # factory_boy 3.3.0's check of a subclass of a bound factory needs these
        model = Organization
        sqlalchemy_session = None

    staff = factory.RelatedFactoryList(UserFactory, factory_related_name="organization", size=2)

    @factory.post_generation
    def project(organization, create, extracted, **kwargs):
        if create:
            ProjectFactory(owner=UserFactory(organization=organization, name=ADMIN_NAME))


@pytest.mark.asyncio
@pytest.mark.parametrize("run", RUNS)
async def test_create_async_runs_related_factories_and_post_generation_hooks(async_db_session, run):
    flushes: list[object] = []
    count_flush = lambda *args: flushes.append(args)  # noqa: E731
    event.listen(async_db_session.sync_session, "after_flush", count_flush)
    with count_queries(async_db_session) as counted:
        organization = await create_async(OrganizationWithStaffFactory)
    event.remove(async_db_session.sync_session, "after_flush", count_flush)

    assert organization.id is not None
    assert await counts(async_db_session) == {"User": 3, "Organization": 1, "Project": 1}
    owners = select(User.name).join(Project, Project.owner_id == User.id)
    assert set(await async_db_session.scalars(owners)) == {ADMIN_NAME}
    organizations = select(func.count(func.distinct(User.organization_id)))
    assert await async_db_session.scalar(organizations) == 1
    # One flush of INSERTs. How many per table is SQLAlchemy's to choose: organizations
    # and users reference each other, so it may order their rows one by one.
    assert len(flushes) == 1
    assert {tuple(statement.split()[:3]) for statement in counted.statements} == {
        ("INSERT", "INTO", "organizations"),
        ("INSERT", "INTO", "users"),
        ("INSERT", "INTO", "projects"),
    }


@pytest.mark.asyncio
async def test_assert_num_queries_counts_what_the_async_session_runs(
    async_db_session, async_seeded_users, assert_num_queries
):
    with assert_num_queries(2, bind=async_db_session) as counted:
        await async_db_session.commit()  # SAVEPOINT statements are not counted
        await async_db_session.scalar(select(func.count()).select_from(User))
        await create_async(UserFactory, organization=None)
    assert [statement.split()[0] for statement in counted.statements] == ["SELECT", "INSERT"]


@pytest.mark.skipif(not importlib.util.find_spec("anyio"), reason="anyio is in [test], not [async]")
@pytest.mark.anyio
async def test_async_db_session_works_under_anyio(async_db_session, async_seeded_users):
    assert await count(async_db_session, User) == 5
    await create_async(UserFactory)
    await async_db_session.commit()
    assert await seen_elsewhere(async_db_session) == (TEMPLATE, NOTHING)


def test_a_fresh_connection_sees_an_empty_migrated_database_last(engine):
    assert_nothing_persisted(engine)
