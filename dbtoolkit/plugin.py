"""The pytest plugin: options, the header, and the fixture chain.

settings -> dbtoolkit_server -> dbtoolkit_template -> dbtoolkit_database -> engine
-> dbtoolkit_connection -> db_session -> seed fixtures. Each fixture is small and may
be overridden by a project's conftest.py.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Generator, Iterator
from contextlib import AbstractContextManager, ExitStack
from types import SimpleNamespace
from typing import Any

import pytest
from pytest_postgresql.config import PostgreSQLConfig, get_config
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from dbtoolkit import errors, queries, schema, seeding
from dbtoolkit.errors import ConfigError, DbtoolkitError
from dbtoolkit.isolation import SharedConnection
from dbtoolkit.provision import provision
from dbtoolkit.server import (
    Server,
    binary_version,
    existing_server,
    find_pg_ctl,
    service_user,
)
from dbtoolkit.settings import Settings, add_options, resolve

SETTINGS = pytest.StashKey[Settings]()
FACTORIES = pytest.StashKey[tuple[seeding.FactoryClass, ...]]()
RUN = pytest.StashKey[str]()
TEST_SEED = pytest.StashKey[int]()
SEEDS = pytest.StashKey[dict[seeding.SeedSpec, seeding.Laid]]()
CONNECTION = pytest.StashKey[SharedConnection[seeding.Laid]]()
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
        f"seed {settings.describe('seed')}",
    ]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Report dbtoolkit's errors as their message alone, and a failed test's seed."""
    report = yield
    if call.excinfo is not None and call.excinfo.errisinstance(DbtoolkitError):
        report.longrepr = f"{call.excinfo.typename}: {call.excinfo.value}"
    if report.failed and TEST_SEED in item.stash:
        report.sections.append(
            (
                "dbtoolkit",
                f"Faker/factory_boy seed of this test: {item.stash[TEST_SEED]} (derived from its "
                "node id and --dbtoolkit-seed; its fixtures draw from it, its body from the "
                "seed + 1, on every run and in any order)",
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

    With ``--dbtoolkit-database``, that database itself.
    """
    if dbtoolkit_settings.database:
        yield dbtoolkit_server.url(dbtoolkit_settings.database)
        return
    run = pytestconfig.stash[RUN]
    worker = getattr(pytestconfig, "workerinput", {}).get("workerid", "main")
    with schema.created_database(
        dbtoolkit_server.url(),
        f"{schema.PREFIX}{run}_{worker}",
        template=dbtoolkit_template,
        run=run,
    ) as url:
        yield url


@pytest.fixture(scope="session")
def engine(dbtoolkit_database: URL) -> Iterator[Engine]:
    """A SQLAlchemy Engine on the test database (session scope), disposed at the end."""
    engine = create_engine(dbtoolkit_database)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def dbtoolkit_connection(
    engine: Engine,
    pytestconfig: pytest.Config,
    dbtoolkit_server: Server,
    dbtoolkit_template: str,
    dbtoolkit_database: URL,
) -> Iterator[SharedConnection[seeding.Laid]]:
    """The connection every db_session of this run (or xdist worker) works on.

    Session scope. Its outer transaction is never committed; seed data lies in
    savepoint layers that tests asking for the same seeds share. If a test commits
    for real (a raw COMMIT), the database is recreated from the template.
    """

    def recreate() -> None:
        if pytestconfig.stash[SETTINGS].database:
            return  # a database used as it is is not ours to recreate
        engine.dispose()
        admin, name = dbtoolkit_server.url(), str(dbtoolkit_database.database)
        schema.drop_database(admin, name)
        schema.create_database(
            admin, name, template=dbtoolkit_template, run=pytestconfig.stash[RUN]
        )

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
    run, in the order the test requests them.
    """
    factories = request.config.stash[FACTORIES]
    specs = _requested_seeds(request)
    laid_now = []

    def lay(spec: seeding.SeedSpec, *args: Any) -> seeding.Laid:
        laid_now.append(spec)
        base_seed = request.config.stash[SETTINGS].seed
        return seeding.lay(spec, *args, factories=factories, base_seed=base_seed)

    laid = dbtoolkit_connection.prepare(specs, lay)  # type: ignore[arg-type]
    if laid:  # the test's own values continue the sequences after its seeds
        seeding.set_sequences(factories, laid[-1].sequences)
    if laid_now:  # laying drew from Faker: back to the test's own seed
        seeding.reseed(request.node.stash[TEST_SEED])
    request.node.stash[SEEDS] = dict(zip(specs, laid, strict=True))
    with dbtoolkit_connection.session() as session, seeding.activate(session):
        yield session


def _requested_seeds(request: pytest.FixtureRequest) -> list[seeding.SeedSpec]:
    """The seeds of the seed fixtures this test requests, in the order it requests them."""
    definitions = getattr(request.node, "_fixtureinfo", None)
    if definitions is None:
        return []
    specs = []
    for name in request.fixturenames:
        fixturedefs = definitions.name2fixturedefs.get(name)
        spec = getattr(fixturedefs[-1].func, "dbtoolkit_seed", None) if fixturedefs else None
        if isinstance(spec, seeding.SeedSpec):
            specs.append(spec)
    return specs


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before a test without db_session, drop the seed layers so no rows stay locked."""
    shared = item.config.stash.get(CONNECTION, None)
    if shared is not None and "db_session" not in getattr(item, "fixturenames", ()):
        shared.prepare([], seeding.lay)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _dbtoolkit_reseed(request: pytest.FixtureRequest, dbtoolkit_settings: Settings) -> None:
    """Seed Faker and factory_boy from the test's node id before its fixtures run."""
    seed = seeding.seed_for(dbtoolkit_settings.seed, request.node.nodeid)
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


def seed(factory: seeding.FactoryClass, count: int, **attributes: Any) -> Any:
    """Return a function-scoped fixture that yields ``count`` rows made with ``factory``.

    The rows are laid on db_session's connection before the test's other fixtures,
    flushed together (one INSERT per table) and committed into the outer transaction,
    so a ``rollback()`` in the test keeps them. Consecutive tests that ask for the same
    seeds share them: they are laid once and each test is rolled back to them. The
    fixture yields the created objects, attached to the test's ``db_session``. Assign
    it to a name in a conftest.py::

        seeded_users = seed(UserFactory, 5)
    """
    if count < 0:
        raise ConfigError(f"seed() needs a count of 0 or more, got {count!r}")
    spec = seeding.SeedSpec(factory, count, attributes)

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
