"""The pytest plugin: options, the header, and the fixture chain.

settings -> dbtoolkit_server -> dbtoolkit_template -> dbtoolkit_database -> engine
-> db_session -> seed fixtures. Each fixture is small and may be overridden by a
project's conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from port_for import get_port
from pytest_postgresql.config import get_config
from pytest_postgresql.exceptions import ExecutableMissingException
from pytest_postgresql.factories._pg import _pg_exe
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from dbtoolkit import schema, seeding
from dbtoolkit.errors import ConfigError, DbtoolkitError, ServerError
from dbtoolkit.isolation import isolated_session
from dbtoolkit.server import Server, running_server, service_user
from dbtoolkit.settings import Settings, add_options, resolve

SETTINGS = pytest.StashKey[Settings]()
FACTORIES = pytest.StashKey[tuple[seeding.FactoryClass, ...]]()
TEST_SEED = pytest.StashKey[int]()


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


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say which server, schema, factories and seed this run uses, and where each came from."""
    settings = config.stash[SETTINGS]
    try:
        os_user = service_user()
        server = f"pytest-postgresql starts a server with {_pg_ctl(config)}"
        if os_user is not None:
            server += f", run as OS user {os_user.pw_name!r} because pytest runs as root"
    except (DbtoolkitError, ExecutableMissingException) as exc:
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


def _pg_ctl(config: pytest.Config) -> str:
    # pytest-postgresql's own discovery: --postgresql-exec, pg_config, PATH.
    return _pg_exe(None, get_config(SimpleNamespace(config=config)))  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def dbtoolkit_settings(pytestconfig: pytest.Config) -> Settings:
    """The resolved settings of this run (session scope)."""
    return pytestconfig.stash[SETTINGS]


@pytest.fixture(scope="session")
def dbtoolkit_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """A PostgreSQL server started for this run and stopped, with its files removed, at the end.

    pytest-postgresql's options choose the binary, host, port, user and password.
    """
    pg_config = get_config(request)
    try:
        pg_ctl = _pg_ctl(request.config)
    except ExecutableMissingException as exc:
        raise ServerError(
            f"{exc}; install PostgreSQL or point --postgresql-exec at pg_ctl"
        ) from None
    port = get_port(pg_config.port)
    assert port is not None
    with running_server(
        pg_ctl,
        host=pg_config.host,
        port=port,
        user=pg_config.user,
        password=pg_config.password,
        startparams=pg_config.startparams,
        postgres_options=pg_config.postgres_options,
    ) as server:
        yield server


@pytest.fixture(scope="session")
def dbtoolkit_template(
    request: pytest.FixtureRequest, dbtoolkit_server: Server, dbtoolkit_settings: Settings
) -> Iterator[str]:
    """The name of a database migrated to head by Alembic, once per run; dropped at the end."""
    name = f"{get_config(request).dbname}_tmpl"
    admin = dbtoolkit_server.url("postgres")
    with schema.created_database(admin, name) as url:
        schema.upgrade_to_head(schema.alembic_config(dbtoolkit_settings.alembic_ini, url))
        yield name


@pytest.fixture(scope="session")
def dbtoolkit_database(
    request: pytest.FixtureRequest, dbtoolkit_server: Server, dbtoolkit_template: str
) -> Iterator[URL]:
    """The URL of this run's (or xdist worker's) copy of the template; dropped at the end."""
    worker = getattr(request.config, "workerinput", {}).get("workerid", "main")
    name = f"{get_config(request).dbname}_{worker}"
    admin = dbtoolkit_server.url("postgres")
    with schema.created_database(admin, name, template=dbtoolkit_template) as url:
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
