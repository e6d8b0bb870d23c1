"""How the schema gets there: Alembic migrates a template database, tests use copies.

The template is migrated to head once per run; each run (or xdist worker) then works
in a copy made with ``CREATE DATABASE ... TEMPLATE``, which costs milliseconds. Only
databases created here are ever dropped here.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from alembic import command
from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import create_engine
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from dbtoolkit.errors import ConfigError, MigrationError, OutsideDatabaseError, ServerError
from dbtoolkit.guard import GUARD
from dbtoolkit.place import PREFIX
from dbtoolkit.server import connect

# Every database dbtoolkit creates on a server has PREFIX and this comment.
MARK = "created by dbtoolkit run "
# The name of a run's database: the prefix, the run (12 hex digits), "_" and the rest.
RUN_DATABASE = re.compile(rf"^{PREFIX}([0-9a-f]{{12}})_")


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


def script_directory(config: Config) -> ScriptDirectory:
    """Alembic's script directory of ``config``; an unusable one is a ConfigError."""
    try:
        return ScriptDirectory.from_config(config)
    except CommandError as exc:
        raise ConfigError(
            f"alembic script_location is unusable ({exc}); fix script_location in "
            f"{config.config_file_name} or set --dbtoolkit-script-location"
        ) from None


def head_revision(config: Config) -> str:
    """Return the single head revision of the migration history."""
    heads = script_directory(config).get_heads()
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


# How to migrate with an env.py that does not take the URL dbtoolkit gives it.
ENV_PY_FIXES = (
    "make env.py use the sqlalchemy.url or the connection (config.attributes['connection']) "
    "dbtoolkit hands it, or set dbtoolkit_migrate_command (e.g. 'alembic upgrade head', "
    "'flask db upgrade') to migrate in a process of its own, with dbtoolkit_env pointing "
    "the application's settings at the template"
)


def migrate(
    config: Config,
    url: URL,
    *,
    async_url: URL,
    command_line: str | None = None,
    environment: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> None:
    """Bring the template at ``url`` to head, and check that the migrations landed there.

    In-process, env.py finds the template both in ``sqlalchemy.url`` (``async_url``
    when env.py is async) and as ``config.attributes["connection"]``, Alembic's recipe
    for sharing a connection; only the template may be reached meanwhile. Or
    ``command_line`` runs in a subprocess with ``environment`` pointing the
    application at the template. Either way, the template must then be at head.
    """
    head = head_revision(config)
    env_py = (Path(ScriptDirectory.from_config(config).dir) / "env.py").resolve()
    if command_line is not None:
        what = f"the migration command {command_line!r}"
        _run(command_line, environment or {}, cwd)
        seen: list[str] = []
    else:
        what = f"alembic upgrade head ({env_py})"
        seen = _upgrade(config, url, async_url, env_py)
    revision = current_revision(url)
    if revision != head:
        went = f" (it connected to {', '.join(seen)})" if seen else ""
        raise MigrationError(
            f"{what} finished, but the template {url.database!r} is at "
            f"{revision or 'no revision'}, not at head {head}: the migrations went to "
            f"another database{went}; " + ENV_PY_FIXES
        )


def _upgrade(config: Config, url: URL, async_url: URL, env_py: Path) -> list[str]:
    """Run ``alembic upgrade head`` in-process; return the other databases env.py reached."""
    if env_py.is_file() and _ASYNC_ENV_PY.search(env_py.read_text(errors="replace")):
        config.set_main_option(
            "sqlalchemy.url", async_url.render_as_string(hide_password=False).replace("%", "%%")
        )
    engine = create_engine(url, poolclass=NullPool)
    try:
        with (
            GUARD.only(url.database or "") as seen,
            GUARD.doing(f"alembic's env.py ({env_py})"),
            engine.begin() as connection,
        ):
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except Exception as exc:
        raise MigrationError(_describe_failure(config, exc, env_py)) from exc
    finally:
        config.attributes.pop("connection", None)
        engine.dispose()
    return seen


# An env.py written from Alembic's async template migrates through an AsyncEngine.
_ASYNC_ENV_PY = re.compile(r"\basync_engine_from_config\b|\bcreate_async_engine\b")


def _run(command_line: str, environment: Mapping[str, str], cwd: Path | None) -> None:
    fix = "fix the command or dbtoolkit_migrate_command (--dbtoolkit-migrate-command)"
    try:
        result = subprocess.run(
            shlex.split(command_line),
            cwd=cwd,
            env={**os.environ, **environment},
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise MigrationError(
            f"the migration command {command_line!r} could not start: {exc.strerror}; {fix}"
        ) from None
    if result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise MigrationError(
            f"the migration command {command_line!r} failed with exit status "
            f"{result.returncode}: {output[-1] if output else 'no output'}; {fix}"
        )


def error_line(exc: BaseException) -> str:
    """``Type: first line`` of an error, the driver's own error for a database one."""
    cause: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _describe_failure(
    config: Config, exc: BaseException, env_py: Path, action: str = "alembic upgrade head"
) -> str:
    cause: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc
    if isinstance(cause, OutsideDatabaseError):
        return (
            f"{action} failed: env.py ({env_py}) connected to {cause.target} "
            "instead of the template dbtoolkit migrates, so it takes its URL from elsewhere "
            "(the application's settings, .env); nothing was sent there; " + ENV_PY_FIXES
        )
    error = error_line(exc)
    script = _failing_script(config, exc.__traceback__)
    if script is not None:
        return (
            f"{action} failed in revision {script.revision} ({script.doc}; {script.path}): {error}"
        )
    if not _in_traceback(env_py, exc.__traceback__):
        return f"{action} failed: {error}"
    cause_hint = (
        "env.py needs the application (a Flask app context)"
        if "application context" in error
        else "env.py may need the application or its settings (.env)"
    )
    return f"{action} failed in env.py ({env_py}): {error}; {cause_hint}: " + ENV_PY_FIXES


def _in_traceback(path: Path, tb: types.TracebackType | None) -> bool:
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == path.resolve():
            return True
        tb = tb.tb_next
    return False


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

    A database is only considered when its name prefix and the comment dbtoolkit set on
    it say dbtoolkit created it, or, when a kill came between ``CREATE DATABASE`` and
    that comment, when it has no comment and a run's name (``RUN_DATABASE``). It is only
    dropped when no live run holds its run's advisory lock.
    """
    runs: dict[str, list[str]] = {}
    abandoned = []
    with admin_cursor(admin_url) as cursor:
        cursor.execute(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE datname LIKE %s AND (shobj_description(oid, 'pg_database') LIKE %s "
            "OR (shobj_description(oid, 'pg_database') IS NULL AND datname ~ %s))",
            (PREFIX.replace("_", r"\_") + "%", MARK + "%", RUN_DATABASE.pattern),
        )
        for name, comment in cursor.fetchall():
            unmarked = RUN_DATABASE.match(name) if comment is None else None
            run = unmarked[1] if unmarked else comment.removeprefix(MARK)
            runs.setdefault(run, []).append(name)
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
