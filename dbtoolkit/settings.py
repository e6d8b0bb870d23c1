"""Settings: one name, three spellings, resolved once.

Every setting ``x_y`` is the CLI option ``--dbtoolkit-x-y``, the ini key
``dbtoolkit_x_y`` and the environment variable ``DBTOOLKIT_X_Y``. The first of
CLI, environment, ini and default that is set wins, and ``Settings.sources``
remembers which one it was, for the pytest header.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeGuard

import pytest

from dbtoolkit.errors import ConfigError

if TYPE_CHECKING:  # imported where used: a run without database tests never needs them
    from alembic.config import Config
    from sqlalchemy.engine import URL
    from sqlalchemy.orm import Session

Source = Literal["cli", "env", "ini", "default", "url"]
Kind = Literal["str", "list", "int", "bool", "choice"]

_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


@dataclass(frozen=True)
class Option:
    """One setting's name, help text and default, as text."""

    name: str
    help: str
    default: str
    kind: Kind = "str"
    choices: tuple[str, ...] = ()

    @property
    def cli(self) -> str:
        """The command line spelling, e.g. ``--dbtoolkit-alembic-ini``."""
        return "--dbtoolkit-" + self.name.replace("_", "-")

    @property
    def ini(self) -> str:
        """The ini key, also the argparse ``dest``."""
        return "dbtoolkit_" + self.name

    @property
    def env(self) -> str:
        """The environment variable."""
        return "DBTOOLKIT_" + self.name.upper()


DRIVERS = ("psycopg2", "psycopg")

OPTIONS = (
    Option("alembic_ini", "Path of the alembic.ini that migrates the test database", "alembic.ini"),
    Option(
        "script_location",
        "Alembic's script directory, when it is not the one alembic.ini names",
        "",
    ),
    Option(
        "factories",
        "Modules whose factory_boy factories create through each test's db_session "
        "(comma-separated on the command line and in the environment)",
        "",
        "list",
    ),
    Option(
        "session_class",
        "Dotted path of the Session class of db_session and the seeds, e.g. sqlmodel.Session",
        "sqlalchemy.orm.Session",
    ),
    Option(
        "seed",
        "Base seed for Faker and factory_boy; each test's seed is derived from it and "
        "the test's node id",
        "0",
        "int",
    ),
    Option(
        "url",
        "URL of a running PostgreSQL server to use instead of starting one, e.g. "
        "postgresql://user:password@host:5432/postgres; its database is the maintenance one",
        "",
    ),
    Option(
        "database",
        "With --dbtoolkit-url: a database to migrate and test in as it is, for roles that may "
        "not create databases; its name must contain 'test'",
        "",
    ),
    Option(
        "allow_nontest_database",
        "Allow --dbtoolkit-database to name a database whose name does not contain 'test'",
        "false",
        "bool",
    ),
    Option(
        "driver",
        "DBAPI driver of the engine the tests use: psycopg2, or psycopg (version 3); "
        "by default the one a --dbtoolkit-url names, else psycopg2",
        "psycopg2",
        "choice",
        DRIVERS,
    ),
    Option(
        "async_driver",
        "Driver of the AsyncEngine under async_db_session: asyncpg, or psycopg (version 3)",
        "asyncpg",
        "choice",
        ("asyncpg", "psycopg"),
    ),
    Option(
        "env",
        "Environment variables that point the application at the test database, set before "
        "conftest.py files and test modules are imported: NAME=template lines whose {host}, "
        "{port}, {database}, {user}, {password} and {url} are the run's (or xdist worker's) "
        "database (comma-separated on the command line and in the environment)",
        "",
        "list",
    ),
    Option(
        "migrate_command",
        "Migrate the template with this command (e.g. 'flask db upgrade' or 'alembic upgrade "
        "head'), run in a subprocess with the env setting's variables pointing at the "
        "template, instead of running Alembic in-process",
        "",
    ),
    Option(
        "allow_urls",
        "Database URLs that the run may connect to besides its own databases "
        "(comma-separated on the command line and in the environment)",
        "",
        "list",
    ),
    Option(
        "leaks",
        "What to do when rows were committed outside the test's transaction while it ran: "
        "fail the test at teardown, warn, or not check",
        "fail",
        "choice",
        ("fail", "warn", "off"),
    ),
    Option(
        "check_migrations",
        "Add the migration checks to the run as tests: one head, upgrade, models match, "
        "stairway, downgrade leaves no trace",
        "false",
        "bool",
    ),
    Option(
        "metadata",
        "module:attribute of the models' MetaData (or declarative base) the migration checks "
        "compare with; by default the target_metadata of Alembic's env.py",
        "",
    ),
    Option(
        "irreversible",
        "Revisions whose downgrade the migration checks do not run "
        "(comma-separated on the command line and in the environment)",
        "",
        "list",
    ),
    Option(
        "migration_data",
        "Module whose ROWS ({revision: {table: [row, ...]}}) the stairway check inserts "
        "before each revision's upgrade",
        "",
    ),
)


@dataclass(frozen=True)
class Settings:
    """The resolved settings of one pytest run."""

    alembic_ini: Path
    script_location: Path | None
    factories: tuple[str, ...]
    given_session_class: type[Session] | None  # None: SQLAlchemy's, imported when used
    seed: int
    url: URL | None
    database: str | None
    allow_nontest_database: bool
    driver: str
    async_driver: str
    env: tuple[tuple[str, str], ...]
    migrate_command: str | None
    allow_urls: tuple[URL, ...]
    leaks: str
    sources: Mapping[str, Source]
    root: Path  # where the migration command runs: the ini file's directory, or the rootdir
    check_migrations: bool = False
    metadata: str | None = None
    irreversible: tuple[str, ...] = ()
    migration_data: str | None = None

    def alembic(self, url: URL | None = None) -> Config:
        """The Alembic configuration these settings name, pointed at ``url`` when given."""
        from dbtoolkit.schema import alembic_config

        return alembic_config(self.alembic_ini, url, script_location=self.script_location)

    @property
    def session_class(self) -> type[Session]:
        """The Session class of db_session and the seeds."""
        if self.given_session_class is not None:
            return self.given_session_class
        from sqlalchemy.orm import Session

        return Session

    @property
    def dbapi_name(self) -> str:
        """SQLAlchemy's driver name for the ``driver`` setting, e.g. ``postgresql+psycopg``."""
        return f"postgresql+{self.driver}"

    @property
    def async_dbapi_name(self) -> str:
        """SQLAlchemy's driver name for ``async_driver``, e.g. ``postgresql+asyncpg``."""
        return f"postgresql+{self.async_driver}"

    def describe(self, name: str) -> str:
        """Return ``value (from source)`` for the header; a URL's password is masked."""
        value = getattr(self, name)
        if isinstance(value, type):
            value = f"{value.__module__}.{value.__qualname__}"
        elif _is_url(value):  # before tuple: a URL is a named tuple
            value = value.render_as_string(hide_password=True)
        elif isinstance(value, tuple):
            shown = (
                item.render_as_string(hide_password=True) if _is_url(item) else str(item)
                for item in value
            )
            value = ", ".join(shown) or "none"
        return f"{value} (from {self.sources[name]})"


def add_options(parser: pytest.Parser) -> None:
    """Register every setting as a CLI option and an ini key."""
    group = parser.getgroup("dbtoolkit", "dbtoolkit: isolated PostgreSQL tests")
    for option in OPTIONS:
        group.addoption(
            option.cli, dest=option.ini, default=None, help=f"{option.help} (env {option.env})"
        )
        if option.kind == "list":
            parser.addini(option.ini, option.help, type="linelist", default=None)
        else:
            parser.addini(option.ini, option.help, type="string", default=None)


def resolve(config: pytest.Config, options: Any = None) -> Settings:
    """Resolve every setting once: CLI > environment > ini > default.

    ``options``: the parsed command line, when ``config.option`` is not filled yet
    (before the initial conftest.py files are loaded).
    """
    raw: dict[str, str | list[str]] = {}
    sources: dict[str, Source] = {}
    base: dict[str, Path] = {}
    for option in OPTIONS:
        cli = getattr(options, option.ini) if options is not None else config.getoption(option.ini)
        ini = config.getini(option.ini)
        if cli is not None:
            raw[option.name], sources[option.name] = cli, "cli"
            base[option.name] = config.invocation_params.dir
        elif option.env in os.environ:
            raw[option.name], sources[option.name] = os.environ[option.env], "env"
            base[option.name] = config.invocation_params.dir
        elif ini:
            raw[option.name], sources[option.name] = ini, "ini"
            base[option.name] = config.inipath.parent if config.inipath else config.rootpath
        else:
            raw[option.name], sources[option.name] = option.default, "default"
            base[option.name] = config.rootpath

    values = {
        option.name: _convert(option, raw[option.name], sources[option.name]) for option in OPTIONS
    }
    parsed_url = _url(values["url"], "url", sources) if values["url"] else None
    if values["database"] and parsed_url is None:
        raise ConfigError(
            "--dbtoolkit-database names a database on a running server; give that server "
            "with --dbtoolkit-url (DBTOOLKIT_URL, ini dbtoolkit_url)"
        )
    return Settings(
        alembic_ini=base["alembic_ini"] / values["alembic_ini"],
        script_location=(
            base["script_location"] / values["script_location"]
            if values["script_location"]
            else None
        ),
        factories=values["factories"],
        given_session_class=(
            _session_class(values["session_class"], sources["session_class"])
            if sources["session_class"] != "default"
            else None
        ),
        seed=values["seed"],
        url=parsed_url.set(drivername="postgresql+psycopg2") if parsed_url else None,
        database=values["database"] or None,
        allow_nontest_database=values["allow_nontest_database"],
        driver=_driver(values["driver"], sources, parsed_url),
        async_driver=values["async_driver"],
        env=tuple(_variable(line, sources["env"]) for line in values["env"]),
        migrate_command=values["migrate_command"] or None,
        allow_urls=tuple(_url(text, "allow_urls", sources) for text in values["allow_urls"]),
        leaks=values["leaks"],
        sources=sources,
        root=config.inipath.parent if config.inipath else config.rootpath,
        check_migrations=values["check_migrations"],
        metadata=values["metadata"] or None,
        irreversible=values["irreversible"],
        migration_data=values["migration_data"] or None,
    )


def _session_class(path: str, source: Source) -> type[Session]:
    from sqlalchemy.orm import Session

    module_name, _, name = path.rpartition(".")
    fix = (
        "fix --dbtoolkit-session-class, DBTOOLKIT_SESSION_CLASS or dbtoolkit_session_class, "
        "e.g. sqlmodel.Session"
    )
    try:
        found = getattr(importlib.import_module(module_name), name) if module_name else None
    except Exception as exc:
        raise ConfigError(
            f"dbtoolkit session_class {path!r} (from {source}) could not be imported: "
            f"{type(exc).__name__}: {exc}; {fix}"
        ) from None
    if not (isinstance(found, type) and issubclass(found, Session)):
        raise ConfigError(
            f"dbtoolkit session_class {path!r} (from {source}) is not a SQLAlchemy Session "
            f"class; {fix}"
        )
    return found


def _url(text: str, name: str, sources: Mapping[str, Source]) -> URL:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(text)
    except ArgumentError:
        option = next(option for option in OPTIONS if option.name == name)
        raise ConfigError(
            f"dbtoolkit {name} is not a database URL (from {sources[name]}); fix "
            f"{option.cli}, {option.env} or {option.ini}, "
            "e.g. postgresql://user@localhost:5432/postgres"
        ) from None


def _is_url(value: object) -> TypeGuard[URL]:
    """Whether ``value`` is a SQLAlchemy URL; none exists while SQLAlchemy is not imported."""
    module = sys.modules.get("sqlalchemy.engine.url")
    return module is not None and isinstance(value, module.URL)


_PLACEHOLDERS = {"host", "port", "database", "user", "password", "url"}


def _variable(line: str, source: Source) -> tuple[str, str]:
    """``NAME=template`` as a pair; the template's placeholders are checked now."""
    name, equals, template = line.partition("=")
    fix = "fix --dbtoolkit-env, DBTOOLKIT_ENV or dbtoolkit_env"
    if not equals or not name.strip().isidentifier():
        raise ConfigError(
            f"dbtoolkit env takes NAME=value lines, got {line!r} (from {source}); "
            f"{fix}, e.g. DATABASE_URL={{url}}"
        )
    try:
        template.format(**dict.fromkeys(_PLACEHOLDERS, ""))
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"dbtoolkit env line {line!r} (from {source}) has an unknown placeholder "
            f"{exc}; the placeholders are {{{'}, {'.join(sorted(_PLACEHOLDERS))}}}; {fix}"
        ) from None
    return name.strip(), template.strip()


def _driver(driver: str, sources: dict[str, Source], url: URL | None) -> str:
    """The driver setting, or by default the one ``url`` names (``postgresql+psycopg``)."""
    if sources["driver"] == "default" and url is not None and url.get_driver_name() in DRIVERS:
        sources["driver"] = "url"
        return url.get_driver_name()
    return driver


def _convert(option: Option, value: str | list[str], source: Source) -> Any:
    """Convert one raw value to its kind, or say which spelling to fix."""
    if option.kind == "list":
        items = value.split(",") if isinstance(value, str) else value
        return tuple(item.strip() for item in items if item.strip())
    text = str(value).strip()
    fix = f"fix {option.cli}, {option.env} or {option.ini}"
    if option.kind == "int":
        try:
            return int(text)
        except ValueError:
            raise ConfigError(
                f"dbtoolkit {option.name} must be a whole number, got {text!r} (from {source}); "
                + fix
            ) from None
    if option.kind == "bool":
        try:
            return _BOOLEANS[text.lower()]
        except KeyError:
            raise ConfigError(
                f"dbtoolkit {option.name} must be true or false, got {text!r} (from {source}); "
                + fix
            ) from None
    if option.kind == "choice" and text.lower() not in option.choices:
        raise ConfigError(
            f"dbtoolkit {option.name} must be one of {', '.join(option.choices)}, got {text!r} "
            f"(from {source}); " + fix
        )
    return text.lower() if option.kind == "choice" else text
