"""The pytest plugin: options, the header, and the fixture chain.

settings -> dbtoolkit_server -> dbtoolkit_template -> dbtoolkit_database -> engine
-> dbtoolkit_connection -> db_session -> seed fixtures. Each fixture is small and may
be overridden by a project's conftest.py.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from contextlib import AbstractContextManager, ExitStack
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from pytest_postgresql.config import PostgreSQLConfig, get_config
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from dbtoolkit import errors, queries, schema, seeding
from dbtoolkit.errors import ASYNC_EXTRA, ConfigError, DbtoolkitError, LeakError, LeakWarning
from dbtoolkit.isolation import SharedConnection, joined
from dbtoolkit.leaks import LeakWatch, Write, describe
from dbtoolkit.provision import provision
from dbtoolkit.server import (
    Server,
    binary_version,
    existing_server,
    find_pg_ctl,
    service_user,
)
from dbtoolkit.settings import Settings, add_options, resolve

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

SETTINGS = pytest.StashKey[Settings]()
FACTORIES = pytest.StashKey[tuple[seeding.FactoryClass, ...]]()
RUN = pytest.StashKey[str]()
TEST_SEED = pytest.StashKey[int]()
SEEDS = pytest.StashKey[dict[seeding.SeedSpec, seeding.Laid]]()
CONNECTION = pytest.StashKey[SharedConnection[seeding.Laid]]()
WATCH = pytest.StashKey[LeakWatch]()
# Put the test database back as the template made it (after a leak or a raw COMMIT).
RECREATE = pytest.StashKey[Callable[[], None]]()
ENGINES = pytest.StashKey[list[Engine]]()  # disposed before the database is recreated
# The key of what the xdist controller hands its workers in ``workerinput``.
SHARED = "dbtoolkit"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register dbtoolkit's options and ini keys."""
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    """Resolve the settings and bind the factories before test modules import them."""
    try:
        settings = resolve(config)
        factories = seeding.factory_classes(settings.factories)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    seeding.bind(factories)
    config.addinivalue_line(
        "markers",
        'dbtoolkit(isolation="database"): give the test a database of its own, cloned from '
        "the migrated template and dropped afterwards, in which db_session commits for real",
    )
    config.stash[SETTINGS] = settings
    config.stash[FACTORIES] = factories
    shared = getattr(config, "workerinput", {}).get(SHARED, {})
    config.stash[RUN] = shared.get("run") or uuid.uuid4().hex[:12]
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_XdistController(config), "dbtoolkit-xdist-controller")


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say which server, schema, factories and seed this run uses, and where each came from."""
    settings = config.stash[SETTINGS]
    try:
        if settings.url is not None:
            version = existing_server(settings.url).version
            server = f"server {settings.describe('url')}, PostgreSQL {version}"
            if settings.database:
                server += f", testing in database {settings.database!r} as it is"
        else:
            pg_ctl = find_pg_ctl(postgresql_config(config))
            server = f"pytest-postgresql starts PostgreSQL {binary_version(pg_ctl)} with {pg_ctl}"
            os_user = service_user()
            if os_user is not None:
                server += f", run as OS user {os_user.pw_name!r} because pytest runs as root"
    except DbtoolkitError as exc:
        server = f"no server: {exc}"
    try:
        head = schema.head_revision(settings.alembic())
    except DbtoolkitError as exc:
        head = f"unknown ({exc})"
    scripts = ""
    if settings.script_location is not None:
        scripts = f", scripts {settings.describe('script_location')}"
    return [
        f"dbtoolkit: {server}",
        f"dbtoolkit: schema {settings.describe('alembic_ini')}{scripts}, head {head}; "
        f"factories {settings.describe('factories')}, {len(config.stash[FACTORIES])} bound; "
        f"seed {settings.describe('seed')}; leaks {settings.describe('leaks')}; "
        f"driver {settings.describe('driver')}",
    ]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Report dbtoolkit's errors as their message alone, and a failed test's seed."""
    report = yield
    if call.excinfo is not None and call.excinfo.errisinstance((DbtoolkitError, LeakWarning)):
        report.longrepr = f"{call.excinfo.typename}: {call.excinfo.value}"
    if report.failed and TEST_SEED in item.stash:
        report.sections.append(
            (
                "dbtoolkit",
                f"Faker/factory_boy seed of this test: {item.stash[TEST_SEED]} (derived from its "
                "node id and --dbtoolkit-seed; its fixtures draw from it, its body from the "
                "seed + 1, on every run and in any order); rerun it with the same data: "
                f"pytest {item.nodeid!r} --dbtoolkit-seed={item.config.stash[SETTINGS].seed}",
            )
        )
    return report


def postgresql_config(config: pytest.Config) -> PostgreSQLConfig:
    """pytest-postgresql's settings (its --postgresql-* options and ini keys) for this run."""
    # pytest-postgresql reads its options through request.config only.
    return get_config(SimpleNamespace(config=config))  # type: ignore[arg-type]


def _shared(config: pytest.Config) -> dict[str, Any] | None:
    shared: dict[str, Any] | None = getattr(config, "workerinput", {}).get(SHARED)
    if shared is not None and "error" in shared:
        name, message = shared["error"]
        raise getattr(errors, name, DbtoolkitError)(message)
    return shared


def _provision(config: pytest.Config) -> AbstractContextManager[tuple[Server, str]]:
    cache = getattr(config, "cache", None)  # absent with -p no:cacheprovider
    return provision(
        config.stash[SETTINGS],
        postgresql_config(config),
        config.stash[RUN],
        cache.mkdir("dbtoolkit") if cache is not None else None,
    )


class _XdistController:
    """Under xdist, start the server and migrate the template once, for all workers."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.resources = ExitStack()
        self.shared: dict[str, Any] | None = None

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        if self.shared is None:
            self.shared = self._provide()
        node.workerinput[SHARED] = self.shared

    def _provide(self) -> dict[str, Any]:
        run = self.config.stash[RUN]
        try:
            server, template = self.resources.enter_context(_provision(self.config))
        except DbtoolkitError as exc:
            return {"error": [type(exc).__name__, str(exc)], "run": run}
        return {"server": dataclasses.asdict(server), "template": template, "run": run}

    def pytest_unconfigure(self) -> None:
        self.resources.close()


@pytest.fixture(scope="session")
def dbtoolkit_settings(pytestconfig: pytest.Config) -> Settings:
    """The resolved settings of this run (session scope)."""
    return pytestconfig.stash[SETTINGS]


@pytest.fixture(scope="session")
def _dbtoolkit_provisioned(pytestconfig: pytest.Config) -> Iterator[tuple[Server, str]]:
    shared = _shared(pytestconfig)
    if shared is not None:
        yield Server(**shared["server"]), shared["template"]
        return
    with _provision(pytestconfig) as provided:
        yield provided


@pytest.fixture(scope="session")
def dbtoolkit_server(_dbtoolkit_provisioned: tuple[Server, str]) -> Server:
    """The PostgreSQL server of this run (session scope).

    Either the one ``--dbtoolkit-url`` names, or one started with pytest-postgresql's
    options (binary, host, port, user, password) and removed at the end. Under xdist,
    the controller starts it once for all workers.
    """
    return _dbtoolkit_provisioned[0]


@pytest.fixture(scope="session")
def dbtoolkit_template(_dbtoolkit_provisioned: tuple[Server, str]) -> str:
    """The name of the database Alembic migrated to head, once per run (session scope).

    In a server dbtoolkit starts, the migrated data directory is saved in pytest's
    cache and the next run with the same migrations starts from it.
    """
    return _dbtoolkit_provisioned[1]


@pytest.fixture(scope="session")
def dbtoolkit_database(
    pytestconfig: pytest.Config,
    dbtoolkit_server: Server,
    dbtoolkit_template: str,
    dbtoolkit_settings: Settings,
) -> Iterator[URL]:
    """The URL of this run's (or xdist worker's) copy of the template, dropped at the end.

    With ``--dbtoolkit-database``, that database itself. From the moment it exists,
    every test is checked for rows committed outside its transaction (leaks).
    """
    if dbtoolkit_settings.database:  # used as it is: neither watched nor recreated
        yield dbtoolkit_server.url(dbtoolkit_settings.database)
        return
    run = pytestconfig.stash[RUN]
    worker = getattr(pytestconfig, "workerinput", {}).get("workerid", "main")
    admin, name = dbtoolkit_server.url(), f"{schema.PREFIX}{run}_{worker}"
    with schema.created_database(admin, name, template=dbtoolkit_template, run=run) as url:
        watch = LeakWatch(url)

        def recreate() -> None:
            watch.close()
            for engine in pytestconfig.stash.get(ENGINES, []):
                engine.dispose()
            schema.drop_database(admin, name)
            schema.create_database(admin, name, template=dbtoolkit_template, run=run)

        pytestconfig.stash[RECREATE] = recreate
        if dbtoolkit_settings.leaks != "off":
            pytestconfig.stash[WATCH] = watch
        yield url
        del pytestconfig.stash[RECREATE]
        # The last test's teardown is under way: its leaks are checked here, before the drop.
        writes: list[Write] = []
        if WATCH in pytestconfig.stash:
            del pytestconfig.stash[WATCH]
            writes = watch.writes()
        watch.close()
        if writes:
            _report_leak(pytestconfig, writes)


@pytest.fixture(scope="session")
def engine(
    pytestconfig: pytest.Config, dbtoolkit_database: URL, dbtoolkit_settings: Settings
) -> Iterator[Engine]:
    """A SQLAlchemy Engine on the test database (session scope), disposed at the end.

    Its driver is the ``driver`` setting (psycopg2 or psycopg).
    """
    engine = create_engine(dbtoolkit_database.set(drivername=dbtoolkit_settings.dbapi_name))
    pytestconfig.stash.setdefault(ENGINES, []).append(engine)
    yield engine
    pytestconfig.stash[ENGINES].remove(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def dbtoolkit_connection(
    engine: Engine, pytestconfig: pytest.Config
) -> Iterator[SharedConnection[seeding.Laid]]:
    """The connection every db_session of this run (or xdist worker) works on.

    Session scope. Its outer transaction is never committed; seed data lies in
    savepoint layers that tests asking for the same seeds share. If a test commits
    for real (a raw COMMIT, or code with a connection of its own), the database is
    recreated from the template.
    """
    recreate = pytestconfig.stash.get(RECREATE, lambda: None)
    shared: SharedConnection[seeding.Laid] = SharedConnection(engine, on_escape=recreate)
    pytestconfig.stash[CONNECTION] = shared
    yield shared
    del pytestconfig.stash[CONNECTION]
    shared.close()


@pytest.fixture
def db_session(
    request: pytest.FixtureRequest, dbtoolkit_connection: SharedConnection[seeding.Laid]
) -> Iterator[Session]:
    """A Session whose every change is rolled back after the test, even what it commits.

    Function scope. The bound factories create through it. ``commit()`` and
    ``rollback()`` work as usual inside the test; a rollback returns to the state the
    test's seed fixtures laid. Seed fixtures are laid before the test's other fixtures
    run: session-scoped seeds first, then module-scoped ones, then the rest, each in
    the order the test requests them. Before the rollback, deferred constraints are
    checked: a test that leaves one violated fails, as its COMMIT would have.

    A test marked ``@pytest.mark.dbtoolkit(isolation="database")`` gets instead a
    Session on a database of its own, cloned from the template, where commits are
    real and other connections see them (``db_session.get_bind()`` is its Engine);
    the database is dropped after the test.
    """
    if _isolation(request.node) == "database":
        yield from _own_database(request)
        return
    factories = request.config.stash[FACTORIES]
    keys = _requested_seeds(request)
    laid_now = []

    def lay(key: tuple[seeding.SeedSpec, str], *args: Any) -> seeding.Laid:
        laid_now.append(key)
        base_seed = request.config.stash[SETTINGS].seed
        return seeding.lay(key[0], *args, factories=factories, base_seed=base_seed)

    laid = dbtoolkit_connection.prepare(keys, lay)  # type: ignore[arg-type]
    if laid:  # the test's own values continue the sequences after its seeds
        seeding.set_sequences(factories, laid[-1].sequences)
    if laid_now:  # laying drew from Faker: back to the test's own seed
        seeding.reseed(request.node.stash[TEST_SEED])
    request.node.stash[SEEDS] = {spec: layer for (spec, _), layer in zip(keys, laid, strict=True)}
    with dbtoolkit_connection.session() as session, seeding.activate(session):
        yield session


def _isolation(item: pytest.Item) -> str:
    marker = item.get_closest_marker("dbtoolkit")
    if marker is None:
        return "transaction"
    isolation = marker.kwargs.get("isolation")
    if marker.args or set(marker.kwargs) != {"isolation"} or isolation not in ISOLATIONS:
        raise ConfigError(
            '@pytest.mark.dbtoolkit takes isolation="transaction" (the default) or '
            f'isolation="database", got {marker.args or marker.kwargs}; '
            f"fix the marker on {item.nodeid}"
        )
    return str(isolation)


ISOLATIONS = ("transaction", "database")
_DATABASES = itertools.count(1)


def _own_database(request: pytest.FixtureRequest) -> Iterator[Session]:
    config = request.config
    if config.stash[SETTINGS].database:
        raise ConfigError(
            'isolation="database" clones the template into a new database, which '
            "--dbtoolkit-database (testing in one database as it is) rules out; run "
            "this test without --dbtoolkit-database, on a role that may create databases"
        )
    server: Server = request.getfixturevalue("dbtoolkit_server")
    run, worker = config.stash[RUN], getattr(config, "workerinput", {}).get("workerid", "main")
    name = f"{schema.PREFIX}{run}_{worker}_{next(_DATABASES)}"
    template = request.getfixturevalue("dbtoolkit_template")
    request.node.stash[SEEDS] = {}  # seed fixtures create and commit in the test itself
    with schema.created_database(server.url(), name, template=template, run=run) as url:
        engine = create_engine(url.set(drivername=config.stash[SETTINGS].dbapi_name))
        try:
            with Session(engine) as session, seeding.activate(session):
                yield session
        finally:
            engine.dispose()


def _requested_seeds(request: pytest.FixtureRequest) -> list[tuple[seeding.SeedSpec, str]]:
    """The layer keys of the seed fixtures this test requests, widest scope first.

    A module-scoped seed's key names the module, so each module lays its own.
    """
    definitions = getattr(request.node, "_fixtureinfo", None)
    if definitions is None:
        return []
    keys = []
    for name in request.fixturenames:
        fixturedefs = definitions.name2fixturedefs.get(name)
        spec = getattr(fixturedefs[-1].func, "dbtoolkit_seed", None) if fixturedefs else None
        if isinstance(spec, seeding.SeedSpec):
            module = request.node.nodeid.split("::")[0] if spec.scope == "module" else ""
            keys.append((spec, module))
    return sorted(keys, key=lambda key: seeding.SCOPES.index(key[0].scope))


@pytest.fixture
def db_bind(db_session: Session) -> Iterator[Callable[..., None]]:
    """A function that makes the application's session makers open sessions in the test.

    Function scope. ``db_bind(SessionLocal)`` (a ``sessionmaker`` or ``scoped_session``)
    makes every session the code under test opens from it, in this thread or another,
    join the test's transaction: what it commits is rolled back with the test, and it
    sees the test's seed rows and factory objects. The makers are restored afterwards.
    """
    with ExitStack() as stack:

        def bind(*makers: Any) -> None:
            stack.enter_context(joined(db_session.get_bind(), *makers))

        yield bind


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before a test without db_session, drop the seed layers so no rows stay locked."""
    _isolation(item)  # a bad marker is an error, with or without db_session
    shared = item.config.stash.get(CONNECTION, None)
    if shared is not None and "db_session" not in getattr(item, "fixturenames", ()):
        shared.prepare([], seeding.lay)  # type: ignore[arg-type]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    """After every test and its fixtures' teardown, report rows committed behind its back.

    Leaked rows are removed by recreating the database from the template, and the
    test fails at teardown, or warns with --dbtoolkit-leaks=warn. After the last
    test, ``dbtoolkit_database`` checks before it drops the database.
    """
    try:
        return (yield)
    finally:
        watch = item.config.stash.get(WATCH, None)
        writes = watch.writes() if watch is not None else []
        if writes:
            shared = item.config.stash.get(CONNECTION, None)
            if shared is not None:
                shared.reset()
            else:
                item.config.stash[RECREATE]()
            if sys.exc_info()[1] is None:  # else the teardown's own error is the report
                _report_leak(item.config, writes)


def _report_leak(config: pytest.Config, writes: list[Write]) -> None:
    if config.stash[SETTINGS].leaks == "warn":
        warnings.warn(LeakWarning(describe(writes)), stacklevel=1)
    else:
        raise LeakError(describe(writes))


@pytest.fixture(autouse=True)
def _dbtoolkit_reseed(request: pytest.FixtureRequest) -> None:
    """Seed Faker and factory_boy from the test's node id before its fixtures run."""
    seed = seeding.seed_for(request.config.stash[SETTINGS].seed, request.node.nodeid)
    request.node.stash[TEST_SEED] = seed
    seeding.reseed(seed)
    factories = request.config.stash[FACTORIES]
    seeding.set_sequences(factories, {})


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """Reseed right before the test body, after plugins such as pytest-randomly reseeded.

    The body draws from seed + 1, so that it does not repeat its fixtures' values.
    """
    if TEST_SEED in pyfuncitem.stash:
        seeding.reseed(pyfuncitem.stash[TEST_SEED] + 1)
    return (yield)


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
    if count < 0:
        raise ConfigError(f"seed() needs a count of 0 or more, got {count!r}")
    if scope not in seeding.SCOPES:
        raise ConfigError(f"seed() takes scope {', '.join(seeding.SCOPES)}, got {scope!r}")
    spec = seeding.SeedSpec(factory, count, attributes, scope)

    def seed_fixture(request: pytest.FixtureRequest, db_session: Session) -> list[Any]:
        laid = request.node.stash[SEEDS].get(spec)
        if laid is None:  # requested through getfixturevalue(): lay it in the test itself
            factories = request.config.stash[FACTORIES]
            with seeding.one_flush((*factories, factory)):
                objects: list[Any] = factory.create_batch(count, **attributes)
            db_session.commit()
            return objects
        return [db_session.merge(obj, load=False) for obj in laid.objects]

    seed_fixture.dbtoolkit_seed = spec  # type: ignore[attr-defined]
    return pytest.fixture(seed_fixture)


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

    def check(
        count: int, *, bind: queries.Bind | None = None
    ) -> AbstractContextManager[queries.Queries]:
        return queries.assert_num_queries(count, db_session if bind is None else bind)

    return check


@pytest.fixture
def assert_max_num_queries(db_session: Session) -> queries.QueryAssertion:
    """A function ``(n, *, bind=None)`` whose block fails if it runs more than ``n`` queries.

    Function scope; otherwise as ``assert_num_queries``, but any count up to ``n`` passes::

        def test_users_page_stays_cheap(db_session, seeded_users, assert_max_num_queries):
            with assert_max_num_queries(3):
                render_users_page(db_session)
    """

    def check(
        count: int, *, bind: queries.Bind | None = None
    ) -> AbstractContextManager[queries.Queries]:
        return queries.assert_max_num_queries(count, db_session if bind is None else bind)

    return check


# --- Async: AsyncSession tests, with pytest-asyncio (the "async" extra) ---------------
# Nothing here imports SQLAlchemy's asyncio extension (dbtoolkit.aio) before a test asks
# for an async fixture: it needs greenlet, which only the async extra installs.

try:
    import pytest_asyncio
except ImportError:  # without the extra, the async fixtures say how to get it
    pytest_asyncio = None  # type: ignore[assignment]

if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def async_db_session(dbtoolkit_async_engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
        """An AsyncSession whose every change is rolled back after the test, even commits.

        Function scope, in the event loop pytest-asyncio gives function-scoped
        fixtures (``asyncio_default_fixture_loop_scope``): run the test in that loop.
        It has its own connection (driver: the ``async_driver`` setting, asyncpg by
        default), opened and closed in that loop, so no connection crosses loops.
        ``create_async`` and ``create_batch_async`` create through it.
        """
        from dbtoolkit import aio

        async with aio.isolated_async_session(dbtoolkit_async_engine) as session:
            with aio.activate(session):
                yield session

    @pytest.fixture(scope="session")
    def dbtoolkit_async_engine(
        dbtoolkit_database: URL, dbtoolkit_settings: Settings
    ) -> Iterator[AsyncEngine]:
        """The AsyncEngine under async_db_session (session scope), without a pool.

        Each test opens its connection in its own event loop and closes it there, so no
        connection outlives a loop; the engine itself belongs to no loop.
        """
        from dbtoolkit import aio

        engine = aio.unpooled_engine(
            dbtoolkit_database.set(drivername=dbtoolkit_settings.async_dbapi_name)
        )
        yield engine
        engine.sync_engine.dispose()

    @pytest_asyncio.fixture
    async def async_db_bind(async_db_session: AsyncSession) -> AsyncIterator[Callable[..., None]]:
        """``db_bind`` for async code: ``async_db_bind(async_sessionmaker)``, function scope.

        The application's ``async_sessionmaker`` (or ``async_scoped_session``) opens
        its sessions on the test's connection, in SAVEPOINTs, until the test ends.
        """
        with ExitStack() as stack:

            def bind(*makers: Any) -> None:
                connection = async_db_session.bind
                assert connection is not None
                stack.enter_context(joined(connection, *makers))

            yield bind

else:

    @pytest.fixture(name="async_db_session")
    def _no_async_db_session() -> None:
        """Without the async extra: says how to install it."""
        raise ConfigError(ASYNC_EXTRA)

    @pytest.fixture(name="dbtoolkit_async_engine", scope="session")
    def _no_async_engine() -> None:
        """Without the async extra: says how to install it."""
        raise ConfigError(ASYNC_EXTRA)

    @pytest.fixture(name="async_db_bind")
    def _no_async_db_bind() -> None:
        """Without the async extra: says how to install it."""
        raise ConfigError(ASYNC_EXTRA)


def async_seed(factory: seeding.FactoryClass, count: int, **attributes: Any) -> Any:
    """Return a function-scoped async fixture that yields ``count`` objects from ``factory``.

    The async counterpart of ``seed``: the rows are created through async_db_session
    with ``create_batch_async`` and committed into its outer transaction, so a
    ``rollback()`` in the test keeps them::

        async_seeded_users = async_seed(UserFactory, 5)
    """
    if pytest_asyncio is None:
        raise ConfigError(ASYNC_EXTRA)

    async def seed_fixture(async_db_session: AsyncSession) -> list[Any]:
        from dbtoolkit import aio

        objects = await aio.create_batch_async(
            factory, count, session=async_db_session, **attributes
        )
        await async_db_session.commit()
        return objects

    return pytest_asyncio.fixture(seed_fixture)
