"""The pytest plugin: options, the header, and the fixture chain.

settings -> dbtoolkit_server -> dbtoolkit_template -> dbtoolkit_database -> engine
-> db_session -> seed fixtures. Each fixture is small and may be overridden by a
project's conftest.py.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack, contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from port_for import get_port
from pytest_postgresql.config import PostgreSQLConfig, get_config
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from dbtoolkit import errors, schema, seeding
from dbtoolkit.errors import ConfigError, DbtoolkitError
from dbtoolkit.isolation import isolated_session
from dbtoolkit.server import Server, existing_server, find_pg_ctl, running_server, service_user
from dbtoolkit.settings import Settings, add_options, resolve

SETTINGS = pytest.StashKey[Settings]()
FACTORIES = pytest.StashKey[tuple[seeding.FactoryClass, ...]]()
RUN = pytest.StashKey[str]()
TEST_SEED = pytest.StashKey[int]()
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
            server = f"pytest-postgresql starts a server with {find_pg_ctl(_pg_config(config))}"
            os_user = service_user()
            if os_user is not None:
                server += f", run as OS user {os_user.pw_name!r} because pytest runs as root"
    except DbtoolkitError as exc:
        server = f"no server: {exc}"
    try:
        head = schema.head_revision(schema.alembic_config(settings.alembic_ini))
    except DbtoolkitError as exc:
        head = str(exc)
    return [
        f"dbtoolkit: {server}",
        f"dbtoolkit: schema {settings.describe('alembic_ini')}, head {head}; "
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
                "node id and --dbtoolkit-seed; the same test reproduces the same data)",
            )
        )
    return report


def _pg_config(config: pytest.Config) -> PostgreSQLConfig:
    # pytest-postgresql reads its options through request.config only.
    return get_config(SimpleNamespace(config=config))  # type: ignore[arg-type]


def _shared(config: pytest.Config) -> dict[str, Any] | None:
    shared: dict[str, Any] | None = getattr(config, "workerinput", {}).get(SHARED)
    if shared is not None and "error" in shared:
        name, message = shared["error"]
        raise getattr(errors, name, DbtoolkitError)(message)
    return shared


@contextmanager
def provide_server(config: pytest.Config) -> Iterator[Server]:
    """Reach the configured server, or start one with pytest-postgresql's settings."""
    settings = config.stash[SETTINGS]
    if settings.url is not None:
        yield existing_server(settings.url)
        return
    pg_config = _pg_config(config)
    port = get_port(pg_config.port)
    assert port is not None
    with running_server(
        find_pg_ctl(pg_config),
        host=pg_config.host,
        port=port,
        user=pg_config.user,
        password=pg_config.password,
        startparams=pg_config.startparams,
        postgres_options=pg_config.postgres_options,
    ) as server:
        yield server


@contextmanager
def provide_template(server: Server, settings: Settings, run: str) -> Iterator[str]:
    """Migrate a new template database to head and drop it afterwards; yield its name.

    With ``--dbtoolkit-database``, migrate that database in place instead (one run at a
    time) and yield its name; it is never dropped.
    """
    admin = server.url()
    config = schema.alembic_config(settings.alembic_ini)
    schema.head_revision(config)
    if settings.database:
        schema.check_test_database(settings.database, settings.allow_nontest_database)
        url = server.url(settings.database)
        with schema.run_lock(admin, f"migrate {settings.database}"):
            schema.upgrade_to_head(schema.alembic_config(settings.alembic_ini, url))
        yield settings.database
        return
    with ExitStack() as stack:
        if settings.url is not None:
            # A shared server: hold this run's lock, and clean up after killed runs.
            stack.enter_context(schema.run_lock(admin, run))
            schema.drop_abandoned(admin)
        name = f"{schema.PREFIX}{run}_tmpl"
        url = stack.enter_context(schema.created_database(admin, name, run=run))
        schema.upgrade_to_head(schema.alembic_config(settings.alembic_ini, url))
        yield name


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
            server = self.resources.enter_context(provide_server(self.config))
            template = self.resources.enter_context(
                provide_template(server, self.config.stash[SETTINGS], run)
            )
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
def dbtoolkit_server(pytestconfig: pytest.Config) -> Iterator[Server]:
    """The PostgreSQL server of this run (session scope).

    Either the one ``--dbtoolkit-url`` names, or one started with pytest-postgresql's
    options (binary, host, port, user, password) and removed at the end. Under xdist,
    the controller starts it once for all workers.
    """
    shared = _shared(pytestconfig)
    if shared is not None:
        yield Server(**shared["server"])
        return
    with provide_server(pytestconfig) as server:
        yield server


@pytest.fixture(scope="session")
def dbtoolkit_template(
    pytestconfig: pytest.Config, dbtoolkit_server: Server, dbtoolkit_settings: Settings
) -> Iterator[str]:
    """The name of the database Alembic migrated to head, once per run (session scope)."""
    shared = _shared(pytestconfig)
    if shared is not None:
        yield shared["template"]
        return
    with provide_template(dbtoolkit_server, dbtoolkit_settings, pytestconfig.stash[RUN]) as name:
        yield name


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


@pytest.fixture
def db_session(engine: Engine, pytestconfig: pytest.Config) -> Iterator[Session]:
    """A Session whose every change is rolled back after the test, even what it commits.

    Function scope. The bound factories create through it. ``commit()`` and
    ``rollback()`` work as usual inside the test; a rollback returns to the state the
    test's seed fixtures committed.
    """
    with (
        isolated_session(engine) as session,
        seeding.activate(session, pytestconfig.stash[FACTORIES]),
    ):
        yield session


@pytest.fixture(autouse=True)
def _dbtoolkit_reseed(request: pytest.FixtureRequest, dbtoolkit_settings: Settings) -> None:
    """Seed Faker and factory_boy from the test's node id, so every run makes the same data."""
    seed = seeding.seed_for(dbtoolkit_settings.seed, request.node.nodeid)
    request.node.stash[TEST_SEED] = seed
    seeding.reseed(seed)


def seed(factory: seeding.FactoryClass, count: int, **attributes: Any) -> Callable[..., Any]:
    """Return a function-scoped fixture that creates ``count`` rows with ``factory``.

    The rows are created through ``db_session`` and committed into the test's outer
    transaction, so a ``rollback()`` in the test keeps them; the fixture yields the
    list of created objects. Assign it to a name in a conftest.py::

        seeded_users = seed(UserFactory, 5)
    """
    if count < 0:
        raise ConfigError(f"seed() needs a count of 0 or more, got {count!r}")

    @pytest.fixture
    def seed_fixture(db_session: Session) -> list[Any]:
        objects: list[Any] = factory.create_batch(count, **attributes)
        db_session.commit()
        return objects

    return seed_fixture
