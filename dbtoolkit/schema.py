"""How the schema gets there: Alembic migrates a template database, tests use copies.

The template is migrated to head once per run; each run (or xdist worker) then works
in a copy made with ``CREATE DATABASE ... TEMPLATE``, which costs milliseconds. Only
databases created here are ever dropped here.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import create_engine
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from dbtoolkit.errors import ConfigError, MigrationError


def alembic_config(ini: Path, url: URL | None = None) -> Config:
    """Load ``alembic.ini``, pointing ``sqlalchemy.url`` at ``url`` when given."""
    if not ini.is_file():
        raise ConfigError(
            f"alembic.ini not found at {ini}; point --dbtoolkit-alembic-ini "
            "(ini key dbtoolkit_alembic_ini) at your project's alembic.ini"
        )
    config = Config(str(ini))
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
        head = ScriptDirectory.from_config(config).get_current_head()
    except CommandError as exc:
        raise MigrationError(f"{exc}; merge the heads with 'alembic merge heads'") from None
    return head or "base"


def upgrade_to_head(config: Config) -> None:
    """Run ``alembic upgrade head``; a failure names the revision that raised."""
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


def _execute_autocommit(url: URL, statement: str) -> None:
    engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(statement)
    finally:
        engine.dispose()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def create_database(admin_url: URL, name: str, template: str | None = None) -> None:
    """Create database ``name`` (as a copy of ``template``) through ``admin_url``."""
    statement = f"CREATE DATABASE {_quote(name)}"
    if template is not None:
        statement += f" TEMPLATE {_quote(template)}"
    _execute_autocommit(admin_url, statement)


def drop_database(admin_url: URL, name: str) -> None:
    """Drop database ``name``, which this toolkit created, closing its connections."""
    _execute_autocommit(admin_url, f"DROP DATABASE IF EXISTS {_quote(name)} WITH (FORCE)")


@contextmanager
def created_database(admin_url: URL, name: str, template: str | None = None) -> Iterator[URL]:
    """Create a database for the duration of the block and drop it afterwards."""
    create_database(admin_url, name, template)
    try:
        yield admin_url.set(database=name)
    finally:
        drop_database(admin_url, name)
