"""A run's server and migrated template, created once and removed by whoever created them.

``provision`` is what the session fixtures (or, under xdist, the controller for all
workers) enter: it yields the server and the name of the template database that
Alembic brought to head and ``leaks.install`` watches, and on exit removes what it
created. Under xdist, ``place.Handoff`` carries it to the workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

from pytest_postgresql.config import PostgreSQLConfig

from dbtoolkit import cache, leaks, schema
from dbtoolkit.errors import ConfigError, ServerError
from dbtoolkit.place import LOCAL_TEMPLATE, PREFIX, Place, Provisioned
from dbtoolkit.server import (
    LocalServer,
    Server,
    binary_version,
    existing_server,
    find_pg_ctl,
    running_server,
)
from dbtoolkit.settings import Settings


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
        name = f"{PREFIX}{place.run}_tmpl"
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
