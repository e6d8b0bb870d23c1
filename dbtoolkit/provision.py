"""A run's server and migrated template, created once and removed by whoever created them.

``provision`` is what the session fixtures (or, under xdist, the controller for all
workers) enter: it yields the server and the name of the template database that
Alembic brought to head and ``leaks.install`` watches, and on exit removes what it
created.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

from port_for import get_port
from pytest_postgresql.config import PostgreSQLConfig

from dbtoolkit import cache, leaks, schema
from dbtoolkit.errors import ServerError
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


@contextmanager
def provision(
    settings: Settings, pg: PostgreSQLConfig, run: str, cache_root: Path | None
) -> Iterator[tuple[Server, str]]:
    """Yield the run's server and migrated template; remove what was created on exit."""
    head = schema.head_revision(settings.alembic())
    if settings.url is not None:
        server = existing_server(settings.url)
        with _template_on_existing_server(server, settings, run) as template:
            yield server, template
    else:
        with _local_server_and_template(settings, pg, run, cache_root, head) as provided:
            yield provided


@contextmanager
def _template_on_existing_server(server: Server, settings: Settings, run: str) -> Iterator[str]:
    admin = server.url()
    if settings.database:
        # The one database used as it is: migrated in place, one run at a time, never dropped.
        schema.check_test_database(settings.database, settings.allow_nontest_database)
        url = server.url(settings.database)
        with schema.run_lock(admin, f"migrate {settings.database}"):
            schema.upgrade_to_head(settings.alembic(url))
        yield settings.database
        return
    with ExitStack() as stack:
        # A shared server: hold this run's lock, and clean up after runs that were killed.
        stack.enter_context(schema.run_lock(admin, run))
        schema.drop_abandoned(admin)
        name = f"{schema.PREFIX}{run}_tmpl"
        url = stack.enter_context(schema.created_database(admin, name, run=run))
        schema.upgrade_to_head(settings.alembic(url))
        leaks.install(url)
        yield name


@contextmanager
def _local_server_and_template(
    settings: Settings, pg: PostgreSQLConfig, run: str, cache_root: Path | None, head: str
) -> Iterator[tuple[Server, str]]:
    pg_ctl = find_pg_ctl(pg)
    port = get_port(pg.port)
    assert port is not None
    key = cache.key(settings.alembic(), pg_ctl, binary_version(pg_ctl), pg.user, pg.password)
    snapshot = cache.lookup(cache_root, key) if cache_root else None

    def start(snapshot: Path | None) -> AbstractContextManager[LocalServer]:
        return running_server(
            pg_ctl,
            host=pg.host,
            port=port,
            user=pg.user,
            password=pg.password,
            startparams=pg.startparams,
            postgres_options=pg.postgres_options,
            snapshot=snapshot,
        )

    with _started(start, snapshot, head) as local:
        if local.from_snapshot:
            yield local.server, LOCAL_TEMPLATE
            return
        if cache_root is not None:
            cache.discard(cache_root, key)  # whatever was there did not serve
        schema.create_database(local.server.url(), LOCAL_TEMPLATE, run=run)
        template_url = local.server.url(LOCAL_TEMPLATE)
        schema.upgrade_to_head(settings.alembic(template_url))
        leaks.install(template_url)
        if cache_root is not None:
            local.save_on_stop(cache.destination(cache_root, key))
        yield local.server, LOCAL_TEMPLATE


@contextmanager
def _started(
    start: Callable[[Path | None], AbstractContextManager[LocalServer]],
    snapshot: Path | None,
    head: str,
) -> Iterator[LocalServer]:
    """Start from the saved data directory if it works and is at head, else afresh."""
    if snapshot is not None:
        with ExitStack() as stack:
            try:
                local: LocalServer | None = stack.enter_context(start(snapshot))
            except ServerError:
                local = None  # damaged beyond starting
            if local and schema.current_revision(local.server.url(LOCAL_TEMPLATE)) == head:
                yield local
                return
    with start(None) as local:
        yield local
