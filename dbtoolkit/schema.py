"""How the schema gets there: Alembic migrates a template database, tests use copies.

The template is migrated to head once per run; each run (or xdist worker) then works
in a copy made with ``CREATE DATABASE ... TEMPLATE``, which costs milliseconds. Only
databases created here are ever dropped here.
"""

from __future__ import annotations

import hashlib
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from alembic import command
from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from dbtoolkit.errors import ConfigError, MigrationError, ServerError
from dbtoolkit.server import connect

# Every database dbtoolkit creates on a server has this name prefix and this comment.
PREFIX = "dbtoolkit_"
MARK = "created by dbtoolkit run "


def alembic_config(
    ini: Path, url: URL | None = None, *, script_location: Path | None = None
) -> Config:
    """Load ``alembic.ini``, pointing ``sqlalchemy.url`` at ``url`` when given.

    ``script_location`` replaces the ini file's, for projects whose migrations live
    elsewhere than it says.
    """
    if not ini.is_file():
        raise ConfigError(
            f"alembic.ini not found at {ini}; point --dbtoolkit-alembic-ini "
            "(ini key dbtoolkit_alembic_ini) at your project's alembic.ini"
        )
    config = Config(str(ini))
    if script_location is not None:
        config.set_main_option("script_location", str(script_location).replace("%", "%%"))
    # Alembic's env.py reconfigures logging unless told not to; in a test run it must not.
    config.attributes["configure_logger"] = False
    if url is not None:
        # ConfigParser interpolates %; a password may contain it.
        rendered = url.render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def head_revision(config: Config) -> str:
    """Return the single head revision of the migration history."""
    try:
        script = ScriptDirectory.from_config(config)
    except CommandError as exc:
        raise ConfigError(
            f"alembic script_location is unusable ({exc}); fix script_location in "
            f"{config.config_file_name} or set --dbtoolkit-script-location"
        ) from None
    heads = script.get_heads()
    if len(heads) > 1:
        raise MigrationError(
            f"the migration history has {len(heads)} heads ({', '.join(sorted(heads))}); "
            "merge them with 'alembic merge heads'"
        )
    return heads[0] if heads else "base"


def current_revision(url: URL) -> str | None:
    """Return the Alembic revision of the database at ``url``; None if it has none or is gone."""
    try:
        with admin_cursor(url) as cursor:
            cursor.execute("SELECT version_num FROM alembic_version")
            row = cursor.fetchone()
    except (psycopg2.Error, ServerError):
        return None
    return str(row[0]) if row else None


def upgrade_to_head(config: Config) -> None:
    """Run ``alembic upgrade head``; a failure names the revision that raised."""
    head_revision(config)
    try:
        command.upgrade(config, "head")
    except Exception as exc:
        raise MigrationError(_describe_failure(config, exc)) from exc


def _describe_failure(config: Config, exc: BaseException) -> str:
    cause: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc
    lines = str(cause).strip().splitlines()
    error = f"{type(cause).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    script = _failing_script(config, exc.__traceback__)
    if script is None:
        return f"alembic upgrade head failed: {error}"
    return (
        f"alembic upgrade head failed in revision {script.revision} "
        f"({script.doc}; {script.path}): {error}"
    )


def _failing_script(config: Config, tb: types.TracebackType | None) -> Script | None:
    """Find the migration file in the traceback, innermost first."""
    scripts = {
        Path(script.path).resolve(): script
        for script in ScriptDirectory.from_config(config).walk_revisions()
    }
    found = None
    while tb is not None:
        found = scripts.get(Path(tb.tb_frame.f_code.co_filename).resolve(), found)
        tb = tb.tb_next
    return found


@contextmanager
def admin_cursor(url: URL) -> Iterator[psycopg2.extensions.cursor]:
    """A cursor on its own autocommit connection, for work outside any test transaction."""
    connection = connect(url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            yield cursor
    finally:
        connection.close()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def create_database(admin_url: URL, name: str, *, template: str | None = None, run: str) -> None:
    """Create database ``name`` (a copy of ``template``), marked as created by ``run``."""
    statement = f"CREATE DATABASE {_quote(name)}"
    if template is not None:
        statement += f" TEMPLATE {_quote(template)}"
    comment = f"COMMENT ON DATABASE {_quote(name)} IS {_literal(MARK + run)}"
    try:
        with admin_cursor(admin_url) as cursor:
            cursor.execute(statement)
            cursor.execute(comment)
    except psycopg2.errors.InsufficientPrivilege:
        raise ServerError(
            f"role {admin_url.username!r} may not create databases on PostgreSQL at "
            f"{admin_url.host}:{admin_url.port}; grant it CREATEDB (ALTER ROLE ... CREATEDB), "
            "or name a database to test in as it is with --dbtoolkit-database"
        ) from None


def drop_database(admin_url: URL, name: str) -> None:
    """Drop database ``name``, which this toolkit created, closing its connections."""
    with admin_cursor(admin_url) as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {_quote(name)} WITH (FORCE)")


@contextmanager
def created_database(
    admin_url: URL, name: str, *, template: str | None = None, run: str
) -> Iterator[URL]:
    """Create a database for the duration of the block and drop it afterwards."""
    create_database(admin_url, name, template=template, run=run)
    try:
        yield admin_url.set(database=name)
    finally:
        drop_database(admin_url, name)


def _lock_key(run: str) -> int:
    return int.from_bytes(hashlib.sha256(f"dbtoolkit:{run}".encode()).digest()[:8], signed=True)


@contextmanager
def run_lock(admin_url: URL, run: str) -> Iterator[None]:
    """Hold the run's advisory lock: while it is held, the run's databases are not abandoned."""
    with admin_cursor(admin_url) as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", (_lock_key(run),))
        yield


def drop_abandoned(admin_url: URL) -> list[str]:
    """Drop the databases of dbtoolkit runs that ended without cleaning up; return their names.

    A database is only considered when both its name prefix and the comment dbtoolkit
    set on it say dbtoolkit created it, and only dropped when no live run holds its
    run's advisory lock.
    """
    runs: dict[str, list[str]] = {}
    abandoned = []
    with admin_cursor(admin_url) as cursor:
        cursor.execute(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE datname LIKE %s AND shobj_description(oid, 'pg_database') LIKE %s",
            (PREFIX.replace("_", r"\_") + "%", MARK + "%"),
        )
        for name, comment in cursor.fetchall():
            runs.setdefault(comment.removeprefix(MARK), []).append(name)
        for run, names in runs.items():
            cursor.execute("SELECT pg_try_advisory_lock(%s)", (_lock_key(run),))
            if cursor.fetchone() == (True,):
                abandoned += names
                cursor.execute("SELECT pg_advisory_unlock(%s)", (_lock_key(run),))
    dropped = []
    for name in abandoned:
        try:
            drop_database(admin_url, name)
        except (psycopg2.Error, ServerError):
            continue  # another role's run: not ours to drop
        dropped.append(name)
    return dropped


def check_test_database(name: str, allowed: bool) -> None:
    """Refuse to migrate and write to a database not named as a test one, unless allowed."""
    if "test" not in name.lower() and not allowed:
        raise ConfigError(
            f"refusing to migrate and test in database {name!r}: its name does not contain "
            "'test'; name a test database with --dbtoolkit-database, or, if it really is "
            "disposable, allow it with --dbtoolkit-allow-nontest-database=true "
            "(ini dbtoolkit_allow_nontest_database = true)"
        )
