"""The pytest plugin: options, markers, the header, reports and the hooks around each test.

The fixtures live in ``dbtoolkit.fixtures`` and are registered from here; the work
itself is done by the library modules they call. Every run loads this, database tests
or not: it and the modules it imports import neither SQLAlchemy, Alembic nor a driver
until a collected test needs the database.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from dbtoolkit import collect, reaper, seeding
from dbtoolkit.errors import ConfigError, DbtoolkitError, LeakWarning
from dbtoolkit.fixtures import (  # noqa: F401 (registered as the plugin's fixtures)
    STATE,
    TEST,
    RunState,
    _dbtoolkit_autouse,
    _dbtoolkit_provisioned,
    _dbtoolkit_session_autouse,
    _dbtoolkit_test,
    assert_max_num_queries,
    assert_num_queries,
    async_db_bind,
    async_db_session,
    at_revision,
    db_bind,
    db_session,
    dbtoolkit_async_connection,
    dbtoolkit_async_engine,
    dbtoolkit_connection,
    dbtoolkit_database,
    dbtoolkit_guard,
    dbtoolkit_server,
    dbtoolkit_settings,
    dbtoolkit_template,
    engine,
    isolation_of,
)
from dbtoolkit.guard import GUARD
from dbtoolkit.place import Handoff, Place
from dbtoolkit.server import binary_version, find_pg_ctl, postgresql_config, service_user
from dbtoolkit.settings import Settings, add_options, resolve

# The key of what the xdist controller hands its workers in ``workerinput``.
SHARED = "dbtoolkit"
# Its run and port, for its workers before they load their conftest.py files.
XDIST_PLACE = "_DBTOOLKIT_XDIST_PLACE"
# The fixture every fixture that needs the server depends on.
PROVISIONED = "_dbtoolkit_provisioned"
# The settings, where the databases will be, and the environment variables they
# replaced, from before the conftest.py files.
EARLY = pytest.StashKey[tuple[Settings, Place, dict[str, str | None]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register dbtoolkit's options and ini keys."""
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Point the application at the test database before conftest.py files import it.

    The settings are resolved here, once, and the place of the run's databases is
    chosen (the port of a server dbtoolkit will start, this process's database), so
    the ``env`` setting's variables hold the values the run will use.
    """
    options = early_config.known_args_namespace
    try:
        settings = resolve(early_config, options)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    pg = postgresql_config(early_config, options)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    given = os.environ.pop(XDIST_PLACE, None) if worker else None  # children don't inherit
    if worker and given:
        run, port = json.loads(given)
        place = Place.plan(settings, pg, run, worker, port)
    else:
        place = Place.plan(settings, pg, uuid.uuid4().hex[:12], "main")
    early_config.stash[EARLY] = settings, place, _export(place.environment(settings.env))


def _export(variables: dict[str, str]) -> dict[str, str | None]:
    """Set ``variables`` in the environment; return the values they replaced."""
    replaced = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    return replaced


def pytest_configure(config: pytest.Config) -> None:
    """Bind the factories before test modules import them; set up the run's state."""
    settings, place, _ = config.stash[EARLY]
    try:
        factories = seeding.factory_classes(settings.factories)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    seeding.bind(factories)
    collect.add_alembic_ini(config, settings)
    config.addinivalue_line(
        "markers",
        'dbtoolkit(isolation="database"): give the test a database of its own, cloned from '
        "the migrated template and dropped afterwards, in which db_session commits for real",
    )
    workerinput = getattr(config, "workerinput", None)
    handoff = None
    if workerinput is not None:  # an xdist worker
        shared = workerinput[SHARED]
        handoff = Handoff(Path(shared["handoff"]))
        if place.run != shared["run"]:  # its environment did not say: set it again, late
            pg = postgresql_config(config)
            place = Place.plan(settings, pg, shared["run"], workerinput["workerid"], shared["port"])
            _export(place.environment(settings.env))
    config.stash[STATE] = state = RunState(settings, factories, place, handoff)
    state.sigterm.install()  # SIGTERM ends the run as Ctrl-C does: teardown runs
    if workerinput is None and config.getoption("dist", "no") != "no":
        os.environ[XDIST_PLACE] = json.dumps([place.run, place.port])
        config.pluginmanager.register(_XdistController(config), "dbtoolkit-xdist-controller")


def pytest_unconfigure(config: pytest.Config) -> None:
    """The run is over: the guard and the environment are as before it.

    As before it, not off: pytester runs pytest inside a test of another run.
    """
    if STATE in config.stash:
        config.stash[STATE].unblock()
        config.stash[STATE].sigterm.restore()
    if EARLY in config.stash:
        for name, value in config.stash[EARLY][2].items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    os.environ.pop(XDIST_PLACE, None)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A run that SIGTERM ended exits with the status a shell gives a terminated process."""
    state = session.config.stash.get(STATE, None)
    if state is not None and state.sigterm.received:
        session.exitstatus = reaper.TERMINATED


class _XdistController:
    """Under xdist, start the server and migrate the template once, for all workers.

    Only if a worker's collected tests need them: told of each worker's collection
    before any test is scheduled, it provisions when that worker asked.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.handoff = Handoff.create()

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        place = self.config.stash[STATE].place
        node.workerinput[SHARED] = {
            "run": place.run,
            "port": place.port,
            "handoff": str(self.handoff.directory),
        }

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        if self.handoff.asked(node.gateway.id):
            from dbtoolkit.provision import provision

            state = self.config.stash[STATE]
            state.block()
            cache = getattr(self.config, "cache", None)  # absent with -p no:cacheprovider
            self.handoff.give(
                lambda: provision(
                    state.settings,
                    postgresql_config(self.config),
                    state.place,
                    cache.mkdir("dbtoolkit") if cache is not None else None,
                )
            )

    def pytest_unconfigure(self) -> None:
        self.handoff.close()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """With --dbtoolkit-check-migrations, alembic.ini's items are the migration checks."""
    return collect.checks_file(file_path, parent)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """When the collected tests use the database, the guard blocks from now on.

    An xdist worker asks the controller for the database too.
    """
    state = session.config.stash[STATE]
    if uses_database(state.settings, session.items):
        state.block()
        if state.handoff is not None:
            state.handoff.ask(state.place.worker)


def uses_database(settings: Settings, items: list[pytest.Item]) -> bool:
    """Whether any of the collected tests will use the database."""
    # With the env setting, every test may reach the database through the application.
    return bool(settings.env and items) or any(
        PROVISIONED in getattr(item, "fixturenames", ()) or collect.needs_server(item)
        for item in items
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say which server, schema, factories and seed this run uses, and where each came from.

    Without connecting anywhere, and without reading the migrations: a run whose
    tests use no database pays for neither (the head is said after collection).
    """
    state = config.stash[STATE]
    settings = state.settings
    if settings.url is not None:
        server = f"server {settings.describe('url')}"
        if settings.database:
            server += f", testing in database {settings.database!r} as it is"
    else:
        try:
            pg_ctl = find_pg_ctl(postgresql_config(config))
            server = f"pytest-postgresql starts PostgreSQL {binary_version(pg_ctl)} with {pg_ctl}"
            os_user = service_user()
            if os_user is not None:
                server += f", run as OS user {os_user.pw_name!r} because pytest runs as root"
        except DbtoolkitError as exc:
            server = f"no server: {exc}"
    scripts = ""
    if settings.script_location is not None:
        scripts = f", scripts {settings.describe('script_location')}"
    lines = [
        f"dbtoolkit: {server}",
        f"dbtoolkit: schema {settings.describe('alembic_ini')}{scripts}; "
        f"factories {settings.describe('factories')}, {len(state.factories)} bound; "
        f"seed {settings.describe('seed')}; leaks {settings.describe('leaks')}; "
        f"driver {settings.describe('driver')}"
        + (
            f"; session {settings.describe('session_class')}"
            if settings.sources["session_class"] != "default"
            else ""
        ),
    ]
    if settings.env:
        variables = state.place.environment(settings.env, mask=True)
        listed = ", ".join(f"{name}={value}" for name, value in variables.items())
        lines.append(f"dbtoolkit: env {listed} (from {settings.sources['env']})")
    if settings.migrate_command:
        lines.append(f"dbtoolkit: migrate with {settings.describe('migrate_command')}")
    if settings.allow_urls:
        lines.append(f"dbtoolkit: may also connect to {settings.describe('allow_urls')}")
    if settings.check_migrations:
        lines.append(collect.header(config))
    return lines


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]) -> list[str]:
    """Under the header, once the tests are known to use the database: its head revision."""
    state = config.stash[STATE]
    if config.get_verbosity() < 0 or config.option.no_header:
        return []
    if not uses_database(state.settings, items):
        return []
    from dbtoolkit import schema

    try:
        head = schema.head_revision(state.settings.alembic())
    except DbtoolkitError as exc:
        head = f"unknown ({exc})"
    return [f"dbtoolkit: migrations head {head}"]


@contextlib.contextmanager
def _last_frame_only(excinfo: pytest.ExceptionInfo[BaseException]) -> Iterator[None]:
    """Show pytest only the last frame of ``excinfo``, without its cause, within the block.

    pytest renders a failure's traceback before the report replaces it with the message.
    A failed migration's chain runs through SQLAlchemy's and Alembic's largest modules,
    whose source pytest parses for each frame: a quarter of a second for each test that
    the migration errors. Afterwards ``--pdb`` and other plugins see the whole error.
    """
    error = excinfo.value
    kept = excinfo.traceback, error.__cause__, error.__suppress_context__
    excinfo.traceback, error.__cause__ = excinfo.traceback[-1:], None
    try:
        yield
    finally:
        excinfo.traceback, error.__cause__, error.__suppress_context__ = kept


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Report dbtoolkit's errors as their message alone, and a failed test's seed."""
    excinfo = call.excinfo
    if excinfo is not None and excinfo.errisinstance((DbtoolkitError, LeakWarning)):
        with _last_frame_only(excinfo):
            report = yield
        report.longrepr = f"{excinfo.typename}: {excinfo.value}"
    else:
        report = yield
    if excinfo is not None and any(words in str(excinfo.value) for words in _OTHER_LOOP):
        report.sections.append(("dbtoolkit", loop_mismatch(item)))
    if report.failed and TEST in item.stash and not isinstance(item, collect.MigrationCheck):
        settings = item.config.stash[STATE].settings
        report.sections.append(
            (
                "dbtoolkit",
                f"Faker/factory_boy seed of this test: {item.stash[TEST].seed} (derived from "
                "its node id and --dbtoolkit-seed; its fixtures draw from it, its body from the "
                "seed + 1, on every run and in any order); rerun it with the same data: "
                f"pytest {item.nodeid!r} --dbtoolkit-seed={settings.seed}",
            )
        )
    return report


# How asyncio and asyncpg say that an object of one event loop was used in another.
_OTHER_LOOP = ("attached to a different loop", "is bound to a different event loop")


def loop_mismatch(item: pytest.Item) -> str:
    """Say which loop the test ran in and how to give its fixtures the same one."""
    marker = item.get_closest_marker("asyncio")
    scope = marker.kwargs.get("loop_scope") if marker else None
    if scope is None:
        try:
            scope = item.config.getini("asyncio_default_test_loop_scope") or "function"
        except ValueError:  # pytest-asyncio is not there: anyio's, or another runner
            scope = "function"
    return (
        f"the test ran in pytest-asyncio's {scope}-scoped event loop and used an object "
        "that belongs to another loop, made by a fixture set up in another loop scope; "
        f"run the async fixtures in the test's loop: asyncio_default_fixture_loop_scope = "
        f'{scope} in the ini, or @pytest_asyncio.fixture(loop_scope="{scope}") on the '
        "fixture (dbtoolkit's own fixtures work in any loop)"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    """Before a test without db_session (or async_db_session), drop the seed layers.

    No rows then stay locked: another connection writing the same keys would wait.
    """
    isolation_of(item)  # a bad marker is an error, with or without db_session
    state = item.config.stash[STATE]
    fixtures = getattr(item, "fixturenames", ())
    if state.connection is not None and "_dbtoolkit_test" not in fixtures:
        seeding.prepare_fixture_layers(state.connection, state.fixture_layers)
    if state.async_connection is not None and "async_db_session" not in fixtures:
        state.async_connection.clear()
    with GUARD.doing(f"the setup of {item.nodeid}"):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, Any, Any]:
    """Name the fixture being set up, for the guard; keep what a wider one writes."""
    state = request.config.stash[STATE]
    where = f"fixture {fixturedef.argname!r}"
    if request.node.nodeid:  # not the session
        where += f" (in the setup of {request.node.nodeid})"
    with GUARD.doing(where), state.wider_fixture(fixturedef):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Name the test being run, for the guard's refusal."""
    with GUARD.doing(f"test {item.nodeid}"):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    """After every test and its fixtures' teardown, report rows committed behind its back.

    Leaked rows are removed by recreating the database from the template, and the
    test fails at teardown, or warns with --dbtoolkit-leaks=warn. After the last
    test, ``dbtoolkit_database`` checks before it drops the database.
    """
    try:
        with GUARD.doing(f"the teardown of {item.nodeid}"):
            return (yield)
    finally:
        state = item.config.stash[STATE]
        writes = state.leaked()
        if writes and sys.exc_info()[1] is None:  # else the teardown's own error is the report
            bound = TEST in item.stash and item.stash[TEST].bound
            from dbtoolkit import leaks

            leaks.report(writes, state.settings.leaks, bound=bound)


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """Reseed right before the test body, after plugins such as pytest-randomly reseeded.

    The body draws from seed + 1, so that it does not repeat its fixtures' values.
    """
    if TEST in pyfuncitem.stash:
        seeding.reseed(pyfuncitem.stash[TEST].seed + 1)
    return (yield)
