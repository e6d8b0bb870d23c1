"""The fixture chain, ``seed`` and ``async_seed``: thin pytest glue over the library.

settings -> dbtoolkit_server -> dbtoolkit_template -> dbtoolkit_database -> engine
-> dbtoolkit_connection -> db_session -> seed fixtures. Each fixture calls one library
function and may be overridden by a project's conftest.py. What the chain sets up for
the whole process lives on one ``RunState``, on ``config.stash[STATE]``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from dbtoolkit import reaper, seeding
from dbtoolkit.errors import ConfigError
from dbtoolkit.guard import GUARD, Guard
from dbtoolkit.place import Handoff, Place, Provisioned
from dbtoolkit.server import Server, postgresql_config
from dbtoolkit.settings import Settings

# SQLAlchemy, the drivers, Alembic and the modules that use them are imported in the
# fixtures, once a test asks for the database: every run imports this module.
if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.engine import URL
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
    from sqlalchemy.orm import Session

    from dbtoolkit import aio, isolation, leaks, migrations, queries
    from dbtoolkit.sandbox import Sandbox


@dataclass
class RunState:
    """What one pytest process (the run, or one xdist worker) has set up."""

    settings: Settings
    factories: tuple[seeding.FactoryClass, ...]
    place: Place  # the run's id and server, and this process's database
    handoff: Handoff | None  # under xdist: where the controller provides
    database: isolation.RunDatabase | None = None
    sandbox: Sandbox | None = None  # while the test database exists
    connection: isolation.SharedConnection[seeding.Laid] | None = None
    async_connection: aio.SharedAsyncConnection | None = None  # the async tests'
    test: ItemState | None = None  # the running (or last) test's
    layering: bool = False  # a fixture wider than a test is being set up (``wider_fixture``)
    # The layers that fixtures wider than a test laid through the application, bottom first.
    fixture_layers: list[seeding.LayerKey] = field(default_factory=list)
    history: migrations.History | None = None  # the Alembic history, read once when needed
    checks: migrations.Plan | None = None  # what the migration checks have to do
    sigterm: reaper.SigtermAsInterrupt = field(default_factory=reaper.SigtermAsInterrupt)
    _own_databases: Iterator[int] = field(default_factory=itertools.count)
    _guard_before: tuple[Any, str] | None = None

    def block(self) -> None:
        """From now on, refuse connections outside the run's databases."""
        before = GUARD.block(
            self.place.boundary(self.settings.allow_urls),
            "Point the application at the test database with dbtoolkit_env (e.g. "
            "DATABASE_URL={url}), or, if the tests really need that database, allow it "
            "with dbtoolkit_allow_urls (--dbtoolkit-allow-urls)",
        )
        if self._guard_before is None:
            self._guard_before = before

    def unblock(self) -> None:
        """Guard as before the run (a run inside another's test gives it back its guard)."""
        if self._guard_before is not None:
            GUARD.restore(self._guard_before)
            self._guard_before = None

    def leaked(self) -> list[leaks.Write]:
        """What was committed behind the last test's back; the database is put right first."""
        database = self.database
        if database is None or database.watch is None:
            return []
        from dbtoolkit import leaks

        return leaks.check(database.watch, self.put_right)

    def put_right(self, resetting: object = None) -> None:
        """Recreate the database after a test committed for real, and start over on it.

        The shared connections are closed first and opened again after, but
        ``resetting``, which does that itself.
        """
        shared = [self.connection, self.async_connection]
        others = [connection for connection in shared if connection not in (None, resetting)]
        for connection in others:
            connection.close()
        self.fixture_layers.clear()  # the layers are gone with the committed rows
        if self.database is not None:
            self.database.recreate()
        for connection in others:
            connection.open()

    @contextmanager
    def wider_fixture(self, fixturedef: pytest.FixtureDef[Any]) -> Iterator[None]:
        """A fixture wider than a test is set up: what the application writes in it is kept.

        It becomes a layer of shared seed data below the tests' own seeds, as long as
        the fixture lives (the first superuser, a logged-in client). Only with the
        ``env`` setting, which opens the shared connection before any such fixture.
        """
        shared = self.connection
        ours = fixturedef.func.__module__ == __name__
        if shared is None or not self.settings.env or fixturedef.scope == "function" or ours:
            yield
            return
        seeding.prepare_fixture_layers(shared, self.fixture_layers)
        self.layering = True
        try:
            yield
        finally:
            self.layering = False
        if shared.written:
            key = seeding.fixture_layer(shared, fixturedef.argname)
            self.fixture_layers.append(key)

            def forget() -> None:  # the fixture is gone: so is its layer, at the next test
                if key in self.fixture_layers:
                    self.fixture_layers.remove(key)

            fixturedef.addfinalizer(forget)

    def own_database_name(self) -> str:
        """A new name for a database of one test's own."""
        return f"{self.place.database}_{next(self._own_databases) + 1}"

    def migration_history(
        self, server_version: str, index: Path | None = None
    ) -> migrations.History:
        """The Alembic history, read once, keyed for a server of ``server_version``."""
        from dbtoolkit import migrations

        if self.history is None:
            server = migrations.server_id(self.settings, server_version)
            self.history = migrations.History.load(self.settings, server, index)
        return self.history

    def migration_workspace(self, server: Server) -> migrations.Workspace:
        """Where the migration checks and ``at_revision`` make their databases."""
        if self.settings.database:
            raise ConfigError(
                "the migration checks and at_revision create databases of their own, which "
                "--dbtoolkit-database (testing in one database as it is) rules out; run them "
                "without --dbtoolkit-database, on a role that may create databases"
            )
        from dbtoolkit import migrations

        # Copies at revisions are kept only where they are saved: in a server we started.
        keep = self.settings.url is None
        return migrations.Workspace(server.url(), self.place.run, self.own_database_name, keep)


@dataclass
class ItemState:
    """What dbtoolkit knows of one test: its Faker seed and the seed layers it was given."""

    seed: int
    seeds: dict[seeding.SeedSpec, seeding.Laid] = field(default_factory=dict)
    async_seeds: dict[seeding.SeedSpec, seeding.Laid] = field(default_factory=dict)
    bound: bool = False  # the test used db_bind


STATE = pytest.StashKey[RunState]()
TEST = pytest.StashKey[ItemState]()
ISOLATIONS = ("transaction", "database")


@pytest.fixture(scope="session")
def dbtoolkit_settings(pytestconfig: pytest.Config) -> Settings:
    """The resolved settings of this run (session scope)."""
    return pytestconfig.stash[STATE].settings


@pytest.fixture(scope="session")
def dbtoolkit_guard() -> Guard:
    """The guard that refuses connections outside the run's databases (session scope).

    For a test that must reach another server or database on purpose::

        def test_reads_the_reference_data(db_session, dbtoolkit_guard):
            with dbtoolkit_guard.unblocked():
                rows = fetch_reference_data(REFERENCE_URL)
    """
    return GUARD


@pytest.fixture(scope="session")
def _dbtoolkit_provisioned(pytestconfig: pytest.Config) -> Iterator[Provisioned]:
    from dbtoolkit import provision

    state = pytestconfig.stash[STATE]
    state.block()
    place = state.place
    if state.handoff is not None:
        given = state.handoff.receive()
        if given is not None:
            yield given
            return
        # No worker's collected tests asked: this one asked through getfixturevalue().
        # It gets a server of its own, and the application learns of it late.
        pg = postgresql_config(pytestconfig)
        place = Place.plan(state.settings, pg, f"{place.run}_{place.worker}", "own")
        os.environ.update(place.environment(state.settings.env))
        state.place = place
        state.block()
    cache = getattr(pytestconfig, "cache", None)  # absent with -p no:cacheprovider
    with provision.provision(
        state.settings,
        postgresql_config(pytestconfig),
        place,
        cache.mkdir("dbtoolkit") if cache is not None else None,
    ) as provided:
        yield provided


@pytest.fixture(scope="session")
def dbtoolkit_server(_dbtoolkit_provisioned: Provisioned) -> Server:
    """The PostgreSQL server of this run (session scope).

    Either the one ``--dbtoolkit-url`` names, or one started with pytest-postgresql's
    options (binary, host, port, user, password) and removed at the end. Under xdist,
    the controller starts it once for all workers.
    """
    return _dbtoolkit_provisioned.server


@pytest.fixture(scope="session")
def dbtoolkit_template(_dbtoolkit_provisioned: Provisioned) -> str:
    """The name of the database Alembic migrated to head, once per run (session scope).

    In a server dbtoolkit starts, the migrated data directory is saved in pytest's
    cache and the next run with the same migrations starts from it.
    """
    return _dbtoolkit_provisioned.template


@pytest.fixture(scope="session")
def dbtoolkit_database(
    pytestconfig: pytest.Config, dbtoolkit_server: Server, dbtoolkit_template: str
) -> Iterator[URL]:
    """The URL of this run's (or xdist worker's) copy of the template, dropped at the end.

    With ``--dbtoolkit-database``, that database itself. From the moment it exists,
    every test is checked for rows committed outside its transaction (leaks).
    """
    from dbtoolkit import isolation, leaks
    from dbtoolkit.sandbox import Sandbox

    state = pytestconfig.stash[STATE]
    with ExitStack() as stack:
        state.sandbox = Sandbox(state.place.host, state.place.port, state.place.database)
        state.sandbox.install()
        stack.callback(state.sandbox.uninstall)
        stack.callback(setattr, state, "sandbox", None)
        if state.settings.database:  # used as it is: neither watched nor recreated
            yield dbtoolkit_server.url(state.settings.database)
            return
        watched = state.settings.leaks != "off"
        with isolation.RunDatabase(
            dbtoolkit_server.url(),
            state.place.database,
            template=dbtoolkit_template,
            run=state.place.run,
            watched=watched,
        ) as database:
            database.engines.append(state.sandbox)  # the application's go on recreate too
            state.database = database
            try:
                yield database.url
            finally:
                state.database = None
            # The last test's teardown is under way: its leaks are checked before the drop.
            writes = leaks.check(database.watch, lambda: None) if database.watch else []
    if writes:  # the last test's: its teardown is under way
        leaks.report(writes, state.settings.leaks, bound=bool(state.test and state.test.bound))


@pytest.fixture(scope="session")
def engine(pytestconfig: pytest.Config, dbtoolkit_database: URL) -> Iterator[Engine]:
    """A SQLAlchemy Engine on the test database (session scope), disposed at the end.

    Its driver is the ``driver`` setting (psycopg2 or psycopg).
    """
    from sqlalchemy import create_engine

    from dbtoolkit.sandbox import own

    state = pytestconfig.stash[STATE]
    engine = own(create_engine(dbtoolkit_database.set(drivername=state.settings.dbapi_name)))
    if state.database is not None:  # its pool goes when the database is recreated
        state.database.engines.append(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def dbtoolkit_connection(
    engine: Engine, pytestconfig: pytest.Config
) -> Iterator[isolation.SharedConnection[seeding.Laid]]:
    """The connection every db_session of this run (or xdist worker) works on.

    Session scope. Its outer transaction is never committed; seed data lies in
    savepoint layers that tests asking for the same seeds share. If a test commits
    for real (a raw COMMIT, or code with a connection of its own), the database is
    recreated from the template.
    """
    from dbtoolkit import isolation

    state = pytestconfig.stash[STATE]
    with isolation.SharedConnection[seeding.Laid](
        engine, on_escape=lambda: state.put_right(state.connection)
    ) as shared:
        state.connection = shared
        sandbox = state.sandbox
        if sandbox is not None:  # the application's engines join the test on it
            sandbox.current = (
                engine.dialect.driver,
                lambda: (
                    None
                    if shared.connection.closed
                    else shared.connection.connection.dbapi_connection
                ),
            )
            # Only while a test runs on it, or a wider fixture lays a layer: whether an
            # engine joins must not depend on which tests ran before.
            sandbox.active = lambda: shared.in_test or state.layering
            sandbox.note = shared.note
            shared.after_rollback = sandbox.forget
            shared.before_building = sandbox.settle
        try:
            yield shared
        finally:
            state.connection = None
            if sandbox is not None:
                sandbox.current = ("", lambda: None)


@pytest.fixture
def _dbtoolkit_test(
    request: pytest.FixtureRequest,
    dbtoolkit_connection: isolation.SharedConnection[seeding.Laid],
) -> Iterator[list[Session]]:
    """The running test on the shared connection: its layers below, its rollback after.

    Yields the list in which the test's Sessions go, closed after the test.
    """
    state, test = request.config.stash[STATE], request.node.stash[TEST]
    keys = list(state.fixture_layers)
    if isolation_of(request.node) == "transaction":  # else seeds go to its own database
        keys += requested_seeds(request)
    test.seeds = seeding.prepare(
        dbtoolkit_connection,
        keys,
        factories=state.factories,
        base_seed=state.settings.seed,
        test_seed=test.seed,
    )
    with dbtoolkit_connection.test() as sessions:
        yield sessions


@pytest.fixture
def db_session(request: pytest.FixtureRequest, _dbtoolkit_test: list[Session]) -> Iterator[Session]:
    """A Session whose every change is rolled back after the test, even what it commits.

    Function scope. The bound factories create through it. ``commit()`` and
    ``rollback()`` work as usual inside the test; a rollback returns to the state the
    test's seed fixtures laid. Seed fixtures are laid before the test's other fixtures
    run: session-scoped seeds first, then module-scoped ones, then the rest, each in
    the order the test requests them. Before the rollback, deferred constraints are
    checked: a test that leaves one violated fails, as its COMMIT would have. Its
    class is the ``session_class`` setting's (``sqlmodel.Session``, say).

    A test marked ``@pytest.mark.dbtoolkit(isolation="database")`` gets instead a
    Session on a database of its own, cloned from the template, where commits are
    real and other connections see them (``db_session.get_bind()`` is its Engine);
    the database is dropped after the test.
    """
    state = request.config.stash[STATE]
    if isolation_of(request.node) == "database":
        yield from _own_database(request, state)
        return
    assert state.connection is not None
    session = state.settings.session_class(
        bind=state.connection.connection, join_transaction_mode="create_savepoint"
    )
    _dbtoolkit_test.append(session)
    with seeding.activate(session):
        yield session


def _own_database(request: pytest.FixtureRequest, state: RunState) -> Iterator[Session]:
    from dbtoolkit import isolation

    if state.settings.database:
        raise ConfigError(
            'isolation="database" clones the template into a new database, which '
            "--dbtoolkit-database (testing in one database as it is) rules out; run "
            "this test without --dbtoolkit-database, on a role that may create databases"
        )
    server: Server = request.getfixturevalue("dbtoolkit_server")
    template: str = request.getfixturevalue("dbtoolkit_template")
    with (
        isolation.own_database(
            server.url(),
            state.own_database_name(),
            template=template,
            run=state.place.run,
            drivername=state.settings.dbapi_name,
            session_class=state.settings.session_class,
        ) as session,
        seeding.activate(session),
    ):
        yield session  # seed fixtures create and commit in the test itself


def isolation_of(item: pytest.Item) -> str:
    """The isolation the test's ``dbtoolkit`` marker asks for; a bad marker is an error."""
    marker = item.get_closest_marker("dbtoolkit")
    if marker is None:
        return "transaction"
    isolation_ = marker.kwargs.get("isolation")
    if marker.args or set(marker.kwargs) != {"isolation"} or isolation_ not in ISOLATIONS:
        raise ConfigError(
            '@pytest.mark.dbtoolkit takes isolation="transaction" (the default) or '
            f'isolation="database", got {marker.args or marker.kwargs}; '
            f"fix the marker on {item.nodeid}"
        )
    return str(isolation_)


def requested_seeds(
    request: pytest.FixtureRequest, kind: str = "dbtoolkit_seed"
) -> list[seeding.LayerKey]:
    """The layer keys of the seed fixtures this test requests, widest scope first.

    ``kind``: ``seed``'s fixtures, or ``async_seed``'s (``"dbtoolkit_async_seed"``).

    A module-scoped seed's key names the module, so each module lays its own. pytest
    offers no public way to find the function behind a fixture name; the test's
    ``_fixtureinfo`` knows which one applies, overrides included.
    """
    definitions = getattr(request.node, "_fixtureinfo", None)
    if definitions is None:
        return []
    specs = []
    for name in request.fixturenames:
        fixturedefs = definitions.name2fixturedefs.get(name)
        spec = getattr(fixturedefs[-1].func, kind, None) if fixturedefs else None
        if isinstance(spec, seeding.SeedSpec):
            specs.append(spec)
    module = request.node.nodeid.split("::")[0]
    return [
        (spec, module if spec.scope == "module" else "")
        for spec in sorted(specs, key=lambda spec: seeding.SCOPES.index(spec.scope))
    ]


@pytest.fixture
def at_revision(
    pytestconfig: pytest.Config, dbtoolkit_server: Server
) -> Iterator[Callable[[str], migrations.RevisionDatabase]]:
    """A function that gives a new database migrated to a revision: ``at_revision("0003")``.

    Function scope, for tests of data migrations: insert rows as the schema was then
    (``db.insert(table, rows)``, ``db.execute(sql)``), ``db.upgrade("0004")``, and look
    at the result. Each database is a clone of a saved copy at that revision where the
    server has one, else migrated from empty by the project's env.py; all are dropped
    after the test. The template the other tests use is never touched.
    """
    from dbtoolkit import migrations

    state = pytestconfig.stash[STATE]
    history = state.migration_history(dbtoolkit_server.version)
    workspace = state.migration_workspace(dbtoolkit_server)
    with migrations.Databases(history, workspace, state.settings.dbapi_name) as databases:
        yield databases.at


@pytest.fixture
def db_bind(request: pytest.FixtureRequest, db_session: Session) -> Iterator[Callable[..., None]]:
    """A function that makes the application's session makers open sessions in the test.

    Function scope. ``db_bind(SessionLocal)`` (a ``sessionmaker`` or ``scoped_session``)
    makes every session the code under test opens from it, in this thread or another,
    join the test's transaction: what it commits is rolled back with the test, and it
    sees the test's seed rows and factory objects. The makers are restored afterwards.
    """
    from dbtoolkit import isolation

    with ExitStack() as stack:

        def bind(*makers: Any) -> None:
            request.node.stash[TEST].bound = True
            stack.enter_context(isolation.joined(db_session.get_bind(), *makers))

        yield bind


@pytest.fixture(autouse=True)
def _dbtoolkit_autouse(request: pytest.FixtureRequest) -> None:
    """Seed Faker and factory_boy from the test's node id before its fixtures run.

    With the ``env`` setting, the application may reach the test database in any
    test: every test then runs in a transaction of its own.
    """
    state = request.config.stash[STATE]
    test = ItemState(seeding.seed_for(state.settings.seed, request.node.nodeid))
    request.node.stash[TEST] = state.test = test
    seeding.reseed(test.seed)
    seeding.set_sequences(state.factories, {})
    if state.settings.env:
        request.getfixturevalue("_dbtoolkit_test")


@pytest.fixture(scope="session", autouse=True)
def _dbtoolkit_session_autouse(pytestconfig: pytest.Config, request: pytest.FixtureRequest) -> None:
    """With the ``env`` setting, open the shared connection before the project's fixtures.

    What the application writes in fixtures wider than a test is then shared seed data.
    """
    if pytestconfig.stash[STATE].settings.env:
        request.getfixturevalue("dbtoolkit_connection")


def seed(
    factory: seeding.FactoryClass, count: int, *, scope: str = "function", **attributes: Any
) -> Any:
    """Return a function-scoped fixture that yields ``count`` rows made with ``factory``.

    The rows are laid on db_session's connection before the test's other fixtures,
    flushed together (one INSERT per table) and committed into the outer transaction,
    so a ``rollback()`` in the test keeps them. Consecutive tests that ask for the same
    seeds share them: they are laid once and each test is rolled back to them. The
    fixture yields the created objects, attached to the test's ``db_session``. Assign
    it to a name in a conftest.py::

        seeded_users = seed(UserFactory, 5)

    ``scope="module"`` or ``"session"`` lays the rows below the function-scoped seeds,
    so that tests of the module (or the run) that ask for them share one laying, even
    when their other seeds differ. A test that does not ask for a seed never sees its
    rows: its database is rolled back below them, and they are laid again after it.
    """
    spec = seeding.SeedSpec.checked(factory, count, attributes, scope)

    def seed_fixture(request: pytest.FixtureRequest, db_session: Session) -> list[Any]:
        laid = request.node.stash[TEST].seeds.get(spec)
        if laid is None:  # a database of its own, or asked for through getfixturevalue()
            factories = request.config.stash[STATE].factories
            return seeding.create_now(spec, db_session, factories)
        return [db_session.merge(obj, load=False) for obj in laid.objects]

    seed_fixture.dbtoolkit_seed = spec  # type: ignore[attr-defined]
    return pytest.fixture(seed_fixture)


def _query_assertion(
    session: Session,
    assertion: Callable[[int, queries.Bind], AbstractContextManager[queries.Queries]],
) -> queries.QueryAssertion:
    def check(
        count: int, *, bind: queries.Bind | None = None
    ) -> AbstractContextManager[queries.Queries]:
        return assertion(count, session if bind is None else bind)

    return check


@pytest.fixture
def assert_num_queries(db_session: Session) -> queries.QueryAssertion:
    """A function ``(n, *, bind=None)`` whose block fails unless it runs exactly ``n`` queries.

    Function scope; it brings db_session with it. The context manager it returns counts
    the statements run on what db_session is bound to (the run's shared connection, or
    the test's own Engine under ``isolation="database"``) or on ``bind`` (an Engine,
    Connection or Session), savepoints left out, and yields the ``Queries`` it records.
    When the block ends without an error and the count differs, it raises
    ``AssertionError`` listing every statement. Its event listener goes with the block::

        def test_users_page_has_no_n_plus_one(db_session, seeded_users, assert_num_queries):
            with assert_num_queries(2):
                render_users_page(db_session)
    """
    from dbtoolkit import queries

    return _query_assertion(db_session, queries.assert_num_queries)


@pytest.fixture
def assert_max_num_queries(db_session: Session) -> queries.QueryAssertion:
    """A function ``(n, *, bind=None)`` whose block fails if it runs more than ``n`` queries.

    Function scope; otherwise as ``assert_num_queries``, but any count up to ``n`` passes::

        def test_users_page_stays_cheap(db_session, seeded_users, assert_max_num_queries):
            with assert_max_num_queries(3):
                render_users_page(db_session)
    """
    from dbtoolkit import queries

    return _query_assertion(db_session, queries.assert_max_num_queries)


# --- Async: AsyncSession tests (the "async" extra) ------------------------------------
# Nothing here imports SQLAlchemy's asyncio extension (dbtoolkit.aio) before a test asks
# for an async fixture: it needs greenlet, which only the async extra installs. The
# fixtures are sync ones: what they set up belongs to no event loop, so tests may run in
# any (pytest-asyncio's loop scopes, anyio's asyncio backend).


@pytest.fixture(scope="session")
def dbtoolkit_async_engine(
    dbtoolkit_database: URL, dbtoolkit_settings: Settings
) -> Iterator[AsyncEngine]:
    """The AsyncEngine under async_db_session (session scope), without a pool.

    Its driver is the ``async_driver`` setting (asyncpg, or psycopg).
    """
    from dbtoolkit import aio
    from dbtoolkit.sandbox import own

    engine = aio.unpooled_engine(
        dbtoolkit_database.set(drivername=dbtoolkit_settings.async_dbapi_name)
    )
    own(engine.sync_engine)
    yield engine
    engine.sync_engine.dispose()


@pytest.fixture(scope="session")
def dbtoolkit_async_connection(
    pytestconfig: pytest.Config, dbtoolkit_async_engine: AsyncEngine
) -> Iterator[aio.SharedAsyncConnection]:
    """The connection every async_db_session of this run (or xdist worker) works on.

    Session scope: ``dbtoolkit_connection`` for the async driver, in an event loop of
    its own (a thread), so that tests in any loop share it.
    """
    from dbtoolkit import aio

    state = pytestconfig.stash[STATE]
    with aio.SharedAsyncConnection(
        dbtoolkit_async_engine, on_escape=lambda: state.put_right(state.async_connection)
    ) as shared:
        state.async_connection = shared
        try:
            yield shared
        finally:
            state.async_connection = None


@pytest.fixture
def async_db_session(
    request: pytest.FixtureRequest, dbtoolkit_async_connection: aio.SharedAsyncConnection
) -> Iterator[AsyncSession]:
    """An AsyncSession whose every change is rolled back after the test, even commits.

    Function scope; ``db_session`` for async tests, in whatever event loop the test runs.
    Its connection is the run's one async connection (driver: the ``async_driver``
    setting, asyncpg by default): the ``async_seed`` fixtures the test requests are laid
    on it first, shared with the tests before it that asked for the same, and the test
    is rolled back to them afterwards, after the deferred-constraint check.
    ``create_async`` and ``create_batch_async`` create through it.
    """
    from dbtoolkit import aio

    _check_backend(request)
    state, test = request.config.stash[STATE], request.node.stash[TEST]
    with (
        dbtoolkit_async_connection.test(
            requested_seeds(request, "dbtoolkit_async_seed"),
            factories=state.factories,
            base_seed=state.settings.seed,
            test_seed=test.seed,
        ) as (session, test.async_seeds),
        aio.activate(session),
    ):
        yield session


def _check_backend(request: pytest.FixtureRequest) -> None:
    """Refuse anyio's trio backend: SQLAlchemy's asyncio extension needs asyncio."""
    if "anyio_backend" in request.fixturenames:
        backend = request.getfixturevalue("anyio_backend")
        name = backend if isinstance(backend, str) else backend[0]
        if name != "asyncio":
            raise ConfigError(
                f"async_db_session runs on asyncio, but anyio runs {request.node.nodeid} on "
                f"{name}; give it the asyncio backend (an anyio_backend fixture that returns "
                '"asyncio")'
            )


@pytest.fixture
def async_db_bind(async_db_session: AsyncSession) -> Iterator[Callable[..., None]]:
    """``db_bind`` for async code: ``async_db_bind(async_sessionmaker)``, function scope.

    The application's ``async_sessionmaker`` (or ``async_scoped_session``) opens
    its sessions on the test's connection, in SAVEPOINTs, until the test ends.
    """
    from dbtoolkit import isolation

    with ExitStack() as stack:

        def bind(*makers: Any) -> None:
            connection = async_db_session.bind
            assert connection is not None
            stack.enter_context(isolation.joined(connection, *makers))

        yield bind


def async_seed(
    factory: seeding.FactoryClass, count: int, *, scope: str = "function", **attributes: Any
) -> Any:
    """Return a function-scoped fixture that yields ``count`` objects from ``factory``.

    ``seed``'s counterpart for ``async_db_session``, with the same ``scope``: the rows
    are laid on its connection before the test, shared by the tests that ask for the
    same seeds, and committed into the outer transaction, so a ``rollback()`` in the
    test keeps them. The objects are attached to the test's ``async_db_session``::

        async_seeded_users = async_seed(UserFactory, 5)
    """
    spec = seeding.SeedSpec.checked(factory, count, attributes, scope)

    def seed_fixture(
        request: pytest.FixtureRequest,
        async_db_session: AsyncSession,
        dbtoolkit_async_connection: aio.SharedAsyncConnection,
    ) -> list[Any]:
        session = async_db_session.sync_session
        laid = request.node.stash[TEST].async_seeds.get(spec)
        if laid is None:  # asked for through getfixturevalue(): created in the test itself
            factories = request.config.stash[STATE].factories
            return dbtoolkit_async_connection.portal.call(
                seeding.create_now, spec, session, factories
            )
        return [session.merge(obj, load=False) for obj in laid.objects]

    seed_fixture.dbtoolkit_async_seed = spec  # type: ignore[attr-defined]
    return pytest.fixture(seed_fixture)
