"""A run's server and migrated template, created once and removed by whoever created them.

``provision`` is what the session fixtures (or, under xdist, the controller for all
workers) enter: it yields the server and the name of the template database that
Alembic brought to head and ``leaks.install`` watches, and on exit removes what it
created. ``Handoff`` carries what the xdist controller provisioned to its workers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from port_for import get_port
from pytest_postgresql.config import PostgreSQLConfig
from sqlalchemy.engine import URL

from dbtoolkit import cache, errors, leaks, reaper, schema
from dbtoolkit.errors import ConfigError, DbtoolkitError, ServerError
from dbtoolkit.guard import Boundary, endpoint
from dbtoolkit.server import (
    LocalServer,
    Server,
    binary_version,
    existing_server,
    find_pg_ctl,
    running_server,
)
from dbtoolkit.settings import Settings

# The template's name in a server dbtoolkit started (and may have saved and restored).
LOCAL_TEMPLATE = f"{schema.PREFIX}template"


@dataclass(frozen=True)
class Place:
    """Where one process's databases are, known before any server starts.

    The run's server (``started``: one dbtoolkit starts, on a port chosen now; else the
    one ``--dbtoolkit-url`` names), the role, and this process's own database: a copy
    of the template named for the run and the xdist worker, or ``--dbtoolkit-database``.
    """

    run: str
    worker: str
    host: str
    port: int
    user: str
    password: str | None
    started: bool
    as_is: str | None = None

    @classmethod
    def plan(
        cls, settings: Settings, pg: PostgreSQLConfig, run: str, worker: str, port: int = 0
    ) -> Place:
        """The place of ``run``'s databases, on ``port``, or ``pg.port``, or a free port."""
        if settings.url is not None:
            url = settings.url
            return cls(
                run,
                worker,
                host=url.host or "localhost",
                port=url.port or 5432,
                user=url.username or pwd.getpwuid(os.geteuid()).pw_name,
                password=url.password,
                started=False,
                as_is=settings.database,
            )
        chosen = port or get_port(pg.port)
        assert chosen is not None
        return cls(run, worker, pg.host, chosen, pg.user, pg.password, started=True)

    @property
    def database(self) -> str:
        """The database this process tests in."""
        return self.as_is or f"{schema.PREFIX}{self.run}_{self.worker}"

    def owns(self, database: str) -> bool:
        """Whether ``database`` is one of the run's own."""
        return (
            database.startswith(f"{schema.PREFIX}{self.run}_")
            or database == self.as_is
            or (self.started and database == LOCAL_TEMPLATE)
        )

    def url(self, database: str | None = None, drivername: str = "postgresql") -> URL:
        """The URL of ``database`` (by default this process's own) on the run's server."""
        return URL.create(
            drivername,
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=database or self.database,
        )

    def environment(
        self,
        variables: Iterable[tuple[str, str]],
        database: str | None = None,
        *,
        mask: bool = False,
    ) -> dict[str, str]:
        """The ``env`` setting's variables, filled in for ``database``.

        By default this process's own database; ``mask`` hides the password, for display.
        """
        url = self.url(database)
        values = {
            "host": self.host,
            "port": str(self.port),
            "database": url.database,
            "user": self.user,
            "password": "***" if mask and self.password else self.password or "",
            "url": url.render_as_string(hide_password=mask),
        }
        return {name: template.format(**values) for name, template in variables}

    def boundary(self, allowed: Iterable[URL]) -> Boundary:
        """What the guard lets through: the run's databases, and the ``allowed`` URLs."""
        return Boundary(
            server=endpoint(self.host, self.port),
            owns=self.owns,
            allowed=frozenset(
                (endpoint(url.host, url.port), url.database or "") for url in allowed
            ),
        )


class Provisioned(NamedTuple):
    """The run's server, and the name of its template database, migrated to head."""

    server: Server
    template: str


@contextmanager
def provision(
    settings: Settings, pg: PostgreSQLConfig, place: Place, cache_root: Path | None
) -> Iterator[Provisioned]:
    """Yield the run's server and migrated template; remove what was created on exit."""
    head = schema.head_revision(settings.alembic())
    if settings.url is not None:
        server = existing_server(settings.url)
        with _template_on_existing_server(server, settings, place) as template:
            yield Provisioned(server, template)
    else:
        with _local_server_and_template(settings, pg, place, cache_root, head) as provided:
            yield Provisioned(*provided)


def _migrate(settings: Settings, place: Place, template: str, server: Server) -> None:
    """Bring ``template`` to head: in-process, or with the project's migration command."""
    if settings.migrate_command is not None and not settings.env:
        raise ConfigError(
            "dbtoolkit_migrate_command runs your command with the env setting's variables "
            "pointing the application at the template; set dbtoolkit_env too "
            "(e.g. DATABASE_URL={url})"
        )
    url = server.url(template, drivername=settings.dbapi_name)
    schema.migrate(
        settings.alembic(url),
        url,
        async_url=url.set(drivername=settings.async_dbapi_name),
        command_line=settings.migrate_command,
        environment=place.environment(settings.env, template),
        cwd=settings.root,
    )


class Handoff:
    """Under xdist, the controller provisions once for all workers, if one needs it.

    Through files in a private directory: a worker whose collected tests use the
    database ``ask``s before it reports its collection; the controller hears of that
    collection before it schedules any test, provisions, and writes what it
    ``give``s (or the error) for every worker to ``receive``.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._resources = ExitStack()
        self._given = directory / "provisioned.json"

    @classmethod
    def create(cls) -> Handoff:
        """A new handoff, in a directory of its own (the controller's side).

        Recorded as the controller's, so that a run started after a kill removes it.
        """
        directory = Path(tempfile.mkdtemp(prefix="dbtoolkit-xdist-"))
        reaper.write_record(directory, [directory])
        return cls(directory)

    def ask(self, worker: str) -> None:
        """Say that ``worker``'s tests need the database (a worker's side)."""
        (self.directory / f"asks-{worker}").touch()

    def asked(self, worker: str) -> bool:
        """Whether ``worker`` asked for the database."""
        return (self.directory / f"asks-{worker}").exists()

    def give(self, provide: Callable[[], AbstractContextManager[Provisioned]]) -> None:
        """Provision, once, and write what was provided for the workers."""
        if self._given.exists():
            return
        try:
            server, template = self._resources.enter_context(provide())
            given: dict[str, object] = {"server": dataclasses.asdict(server), "template": template}
        except DbtoolkitError as exc:
            given = {"error": [type(exc).__name__, str(exc)]}
        partial = self._given.with_suffix(".partial")
        partial.write_text(json.dumps(given))
        partial.rename(self._given)  # whole or not at all

    def receive(self) -> Provisioned | None:
        """What the controller provided, None if nothing; its error raised again."""
        try:
            given = json.loads(self._given.read_text())
        except FileNotFoundError:
            return None
        if "error" in given:
            name, message = given["error"]
            raise getattr(errors, name, DbtoolkitError)(message)
        return Provisioned(Server(**given["server"]), given["template"])

    def close(self) -> None:
        """Remove what was provisioned, and the directory (the controller's side)."""
        try:
            self._resources.close()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


@contextmanager
def _template_on_existing_server(server: Server, settings: Settings, place: Place) -> Iterator[str]:
    admin = server.url()
    if settings.database:
        # The one database used as it is: migrated in place, one run at a time, never dropped.
        schema.check_test_database(settings.database, settings.allow_nontest_database)
        with schema.run_lock(admin, f"migrate {settings.database}"):
            _migrate(settings, place, settings.database, server)
        yield settings.database
        return
    with ExitStack() as stack:
        # A shared server: hold this run's lock, and clean up after runs that were killed.
        stack.enter_context(schema.run_lock(admin, place.run))
        schema.drop_abandoned(admin)
        name = f"{schema.PREFIX}{place.run}_tmpl"
        url = stack.enter_context(schema.created_database(admin, name, run=place.run))
        _migrate(settings, place, name, server)
        leaks.install(url)
        yield name


@contextmanager
def _local_server_and_template(
    settings: Settings, pg: PostgreSQLConfig, place: Place, cache_root: Path | None, head: str
) -> Iterator[tuple[Server, str]]:
    pg_ctl = find_pg_ctl(pg)
    version = binary_version(pg_ctl)
    key = cache.key(settings.alembic(), pg_ctl, version, pg.user, pg.password)
    cluster_key = cache.cluster_key(pg_ctl, version, pg.user, pg.password)
    clusters = cache_root / cache.INITDB if cache_root else None
    # Keep initdb's result too once the migrations have changed since a saved run: they
    # will change again. A first run (a CI job) does not pay for saving it.
    changed = cache_root is not None and any(
        entry.parent.name != key for entry in cache.saved(cache_root)
    )

    def start(snapshot: Path | None) -> AbstractContextManager[LocalServer]:
        save_initdb_to = None
        if snapshot is None and clusters is not None:
            cache.discard(clusters, cluster_key)  # whatever was there did not serve
            if changed:
                save_initdb_to = cache.destination(clusters, cluster_key)
        return running_server(
            pg_ctl,
            host=place.host,
            port=place.port,
            user=pg.user,
            password=pg.password,
            startparams=pg.startparams,
            postgres_options=pg.postgres_options,
            snapshot=snapshot,
            save_initdb_to=save_initdb_to,
        )

    migrated = cache.lookup(cache_root, key) if cache_root else None
    initialised = cache.lookup(clusters, cluster_key) if clusters else None
    if cache_root is not None and settings.check_migrations:
        # The migration checks keep copies at revisions in the data directory; the last
        # one saved has those of the history before this change.
        initialised = cache.newest(cache_root, other_than=key) or initialised
    with _started(start, migrated, initialised, head) as (local, at_head):
        if at_head:
            yield local.server, LOCAL_TEMPLATE
            return
        if cache_root is not None:
            cache.discard(cache_root, key)  # whatever was there did not serve
        if settings.check_migrations:  # started from an older history's data directory
            schema.drop_database(local.server.url(), LOCAL_TEMPLATE)
        schema.create_database(local.server.url(), LOCAL_TEMPLATE, run=place.run)
        _migrate(settings, place, LOCAL_TEMPLATE, local.server)
        leaks.install(local.server.url(LOCAL_TEMPLATE))
        if cache_root is not None:
            local.save_on_stop(cache.destination(cache_root, key))
        yield local.server, LOCAL_TEMPLATE


@contextmanager
def _started(
    start: Callable[[Path | None], AbstractContextManager[LocalServer]],
    migrated: Path | None,
    initialised: Path | None,
    head: str,
) -> Iterator[tuple[LocalServer, bool]]:
    """Start a server and say whether its template is already at head.

    From the saved migrated data directory if it starts and is at head; else from the
    saved initialised one if it starts; else from initdb.
    """
    for snapshot, at_head in ((migrated, True), (initialised, False)):
        if snapshot is None:
            continue
        with ExitStack() as stack:
            try:
                local: LocalServer | None = stack.enter_context(start(snapshot))
            except ServerError:
                local = None  # damaged beyond starting
            if local and (
                not at_head or schema.current_revision(local.server.url(LOCAL_TEMPLATE)) == head
            ):
                yield local, at_head
                return
    with start(None) as local:
        yield local, False
