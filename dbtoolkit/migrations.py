"""Checks of the Alembic history itself, and scratch databases at a given revision.

The checks are plain functions of a ``History`` (the project's revisions in order, each
with the key of the history up to it) and a ``Workspace`` (the run's server, on which
they create scratch databases of their own; the template the tests use is never
touched):

- ``single_head``: the history has one head;
- ``walk_up``: upgrade an empty database one revision at a time (the ``upgrade``
  check), then compare the models with what it built (``models_match``);
- ``walk_stairs``: for each revision, upgrade, downgrade and upgrade again
  (``stairway``), and compare the schema after the downgrade with the one before the
  upgrade (``downgrade_leaves_no_trace``), with the rows ``migration_data`` gives for
  the revision in its tables.

Each walk is one run of the project's env.py: a generator hands Alembic one step at a
time and looks at the database in between. What passed is noted in the cache under its
key (``cache.record_pass``). On a server dbtoolkit started, ``walk_up`` leaves copies of
its database at the last two revisions there, saved with the data directory, so that
after the last revision changes the next run starts from the one before it.
``Databases`` gives tests of data migrations a database at a revision.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import re
import sys
import sysconfig
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2.errors
from alembic import command
from alembic.autogenerate import produce_migrations, render_python_code
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext, RevisionStep
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from psycopg2 import sql
from sqlalchemy import Engine, MetaData, Row, Table, create_engine, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.pool import NullPool

from dbtoolkit import cache, schema
from dbtoolkit.errors import ConfigError, HistoryError
from dbtoolkit.place import PREFIX
from dbtoolkit.settings import Settings

# The checks, in the order they run.
CHECKS = ("single_head", "upgrade", "models_match", "stairway", "downgrade_leaves_no_trace")
# Copies of a database at a revision are named this, followed by the revision's key.
COPY = f"{PREFIX}rev_"
# Bump when what a key stands for changes meaning.
FORMAT = "1"
IRREVERSIBLE = "--dbtoolkit-irreversible (ini dbtoolkit_irreversible)"


@dataclass(frozen=True)
class Revision:
    """One revision: its id, first docstring line, file, and the key of the history to it."""

    id: str
    doc: str
    path: Path
    key: str

    def __str__(self) -> str:
        return f"{self.id} ({self.doc}; {self.path})"


@dataclass
class History:
    """The project's Alembic history, as the checks see it."""

    settings: Settings
    script: ScriptDirectory
    revisions: list[Revision]  # base to head, in the order upgrades apply them
    heads: tuple[str, ...]
    base_key: str  # of the server and the files around the revisions (ini, env.py)

    @classmethod
    def load(cls, settings: Settings, server_id: str, index: Path | None = None) -> History:
        """Read the history the settings name; ``server_id`` is part of every key.

        Reading the order of the revisions means running every revision file; with an
        ``index`` directory, the order is kept there under the digest of the files, and
        read from it while none of them changed.
        """
        config = settings.alembic()
        script = schema.script_directory(config)
        files = {
            path: path.read_bytes()
            for directory in cache.history_directories(script)
            for path in sorted(directory.rglob("*"))
            if path.is_file() and "__pycache__" not in path.parts
        }
        ini = Path(config.config_file_name) if config.config_file_name else None
        digest = hashlib.sha256(f"{FORMAT}\0".encode())
        for path, content in ((ini, ini.read_bytes()) if ini else (None, b""), *files.items()):
            digest.update(f"{path}\0".encode() + content)
        order = _read_index(index, digest.hexdigest()[:20])
        if order is None:
            order = {
                "revisions": [
                    [each.revision, (each.doc or "").strip(), each.path]
                    for each in reversed(list(script.walk_revisions("base", "heads")))
                ],
                "heads": list(script.get_heads()),
            }
            _write_index(index, digest.hexdigest()[:20], order)
        revision_files = {Path(path) for _, _, path in order["revisions"]}
        # Whatever else lies with the revisions (env.py, helpers) is under every key.
        around = hashlib.sha256(f"{FORMAT}\0{server_id}\0".encode())
        around.update(ini.read_bytes() if ini else b"")
        for path, content in files.items():
            if path not in revision_files:
                around.update(f"{os.path.relpath(path, script.dir)}\0".encode() + content)
        base_key = around.hexdigest()[:20]
        revisions, key = [], base_key
        for revision, doc, path in order["revisions"]:
            content = files.get(Path(path)) or Path(path).read_bytes()
            key = hashlib.sha256(key.encode() + content).hexdigest()[:20]
            first = doc.splitlines()[0] if doc else ""
            revisions.append(Revision(revision, first, Path(path), key))
        return cls(settings, script, revisions, tuple(order["heads"]), base_key)

    @property
    def key(self) -> str:
        """The key of the whole history."""
        return self.revisions[-1].key if self.revisions else self.base_key

    def find(self, revision: str) -> Revision:
        """The revision ``revision`` names (an id, a unique prefix of one, or ``head``)."""
        try:
            script = self.script.get_revision(revision)
        except Exception:
            script = None
        for candidate in self.revisions:
            if script is not None and candidate.id == script.revision:
                return candidate
        known = ", ".join(candidate.id for candidate in self.revisions) or "none"
        raise ConfigError(
            f"{revision!r} is not a revision of the history in {self.script.dir} "
            f"(revisions: {known})"
        )

    def step(self, revision: Revision, *, up: bool) -> RevisionStep:
        """Alembic's step that upgrades to ``revision`` or downgrades it."""
        script = self.script.get_revision(revision.id)
        assert script is not None
        return RevisionStep(self.script.revision_map, script, up)


def _read_index(directory: Path | None, digest: str) -> Any:
    try:
        return json.loads((directory / f"history-{digest}.json").read_text()) if directory else None
    except (OSError, ValueError):
        return None


def _write_index(directory: Path | None, digest: str, order: Any) -> None:
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        partial = directory / f".history-{digest}.{os.getpid()}"
        partial.write_text(json.dumps(order))
        partial.rename(directory / f"history-{digest}.json")  # whole or not at all


def server_id(settings: Settings, version: str) -> str:
    """What the keys say of the server: its version, or the address of a server given by URL."""
    if settings.url is not None:
        return f"{settings.url.host}:{settings.url.port}/{settings.url.database}"
    return f"PostgreSQL {version}"


# --- The models ------------------------------------------------------------------------


@dataclass(frozen=True)
class Models:
    """The models' MetaData the checks compare with, where it came from, and its files."""

    metadata: Any  # a MetaData, or a sequence of them as env.py may give
    source: str
    files: tuple[Path, ...]

    def key(self, history: History) -> str:
        """The key of a comparison of these models with ``history``'s schema."""
        digest = hashlib.sha256(f"{history.key}\0{self.source}\0".encode())
        for path in self.files:
            digest.update(str(path).encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()[:20]


class _Found(Exception):
    """Stops env.py once it has configured its context."""


def find_models(history: History) -> Models:
    """The models the ``metadata`` setting names, else env.py's ``target_metadata``."""
    named = history.settings.metadata
    if named:
        metadata = _import_metadata(named)
        source = f"{named} (from {history.settings.sources['metadata']})"
    else:
        metadata = _env_metadata(history)
        source = "env.py's target_metadata"
    return Models(metadata, source, _model_files(metadata))


def _import_metadata(named: str) -> Any:
    module_name, _, attribute = named.partition(":")
    fix = "fix --dbtoolkit-metadata (ini dbtoolkit_metadata), e.g. myapp.models:Base"
    try:
        found: Any = importlib.import_module(module_name)
        for part in attribute.split(".") if attribute else ():
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"dbtoolkit metadata {named!r} cannot be found ({exc}); {fix}") from None
    metadata = found if isinstance(found, MetaData) else getattr(found, "metadata", None)
    if not isinstance(metadata, MetaData):
        raise ConfigError(
            f"dbtoolkit metadata {named!r} is neither a MetaData nor has one as .metadata; {fix}"
        )
    return metadata


def _env_metadata(history: History) -> Any:
    """Run env.py offline, which connects nowhere, and take its target_metadata."""
    # Never connected to: offline, env.py only needs a URL of the right dialect.
    config = history.settings.alembic(URL.create("postgresql+psycopg2", database="offline"))
    config.output_buffer = io.StringIO()
    found: dict[str, Any] = {}

    def capture(heads: Any, context: MigrationContext) -> list[RevisionStep]:
        found["metadata"] = context.opts.get("target_metadata")
        raise _Found

    fix = "name the models with --dbtoolkit-metadata=module:attribute (ini dbtoolkit_metadata)"
    try:
        with EnvironmentContext(config, history.script, fn=capture, as_sql=True):
            history.script.run_env()
    except _Found:
        pass
    except BaseException as exc:  # env.py may exit; that is its way to fail
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ConfigError(
            f"running {history.script.dir}/env.py offline, to find its target_metadata, failed "
            f"({schema.error_line(exc)}); {fix}"
        ) from None
    if not found.get("metadata"):
        raise ConfigError(
            f"{history.script.dir}/env.py passes no target_metadata to context.configure(); {fix}"
        )
    return found["metadata"]


def _model_files(metadata: Any) -> tuple[Path, ...]:
    """The files of the modules that hold the MetaData, its tables or their mapped classes."""
    metadatas = [metadata] if isinstance(metadata, MetaData) else list(metadata)
    tables = {id(table) for each in metadatas for table in each.tables.values()}
    ids = tables | {id(each) for each in metadatas}
    files = set()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not file or _STDLIB.match(file):  # the standard library holds no models
            continue
        for value in list(vars(module).values()):
            # type(), not isinstance(): that would ask lazy proxies for their __class__.
            if id(value) in ids or (
                issubclass(type(value), type) and id(vars(value).get("__table__")) in tables
            ):
                files.add(Path(file))
                break
    return tuple(sorted(files))


# Files of the standard library: under its directory, but not in a site-packages there.
_STDLIB = re.compile(
    re.escape(os.path.join(sysconfig.get_paths()["stdlib"], "")) + r"(?!(site|dist)-packages)"
)


# --- Where the checks work -------------------------------------------------------------


@dataclass
class Workspace:
    """The run's server, as the checks use it: scratch databases and copies at revisions.

    Copies are kept only on a server dbtoolkit started (``keep_copies``): they are saved
    with its data directory. On a server given by URL, the checks leave nothing behind.
    """

    admin: URL  # the maintenance database
    run: str
    new_name: Callable[[], str]
    keep_copies: bool
    known: set[str] = field(default_factory=set)  # copies seen or made (and taken databases)

    @contextmanager
    def scratch(self, template: str | None = None) -> Iterator[URL]:
        """A new database (a clone of ``template``) for the block, dropped afterwards.

        Unless it became a copy (``save_copy(..., take=True)``).
        """
        name = self.new_name()
        schema.create_database(self.admin, name, template=template, run=self.run)
        try:
            yield self.admin.set(database=name)
        finally:
            if name not in self.known:
                schema.drop_database(self.admin, name)

    def copies(self) -> set[str]:
        """The names of the copies at a revision on the server."""
        if not self.keep_copies:
            return set()
        with schema.admin_cursor(self.admin) as cursor:
            cursor.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s",
                (COPY.replace("_", r"\_") + "%",),
            )
            self.known = {name for (name,) in cursor.fetchall()}
        return set(self.known)

    def deepest_copy(self, revisions: Sequence[Revision]) -> tuple[int, str | None]:
        """How many of ``revisions`` the deepest copy has applied, and its name."""
        existing = self.copies()
        for applied in range(len(revisions), 0, -1):
            name = COPY + revisions[applied - 1].key
            if name in existing:
                return applied, name
        return 0, None

    def save_copy(self, url: URL, revision: Revision, *, take: bool = False) -> None:
        """Keep a copy of the database at ``url``, which is at ``revision``.

        With ``take``, the database itself becomes the copy (renamed: no file copy), and
        is gone from ``url``.
        """
        if not self.keep_copies:
            return
        name, source = sql.Identifier(COPY + revision.key), sql.Identifier(url.database or "")
        statement = "ALTER DATABASE {1} RENAME TO {0}" if take else "CREATE DATABASE {} TEMPLATE {}"
        with schema.admin_cursor(self.admin) as cursor:
            # env.py may keep a pooled connection open; the copy needs none.
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (url.database,),
            )
            try:
                cursor.execute(sql.SQL(statement).format(name, source))
            except (psycopg2.errors.DuplicateDatabase, psycopg2.errors.UniqueViolation):
                return  # another xdist worker made it, or is making it
            self.known.add(COPY + revision.key)
            if take:
                self.known.add(url.database or "")  # renamed: nothing to drop under that name
            comment = sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                name, sql.Literal(f"dbtoolkit: copy at revision {revision.id}")
            )
            cursor.execute(comment)

    def prune(self, history: History) -> None:
        """Drop the copies of histories other than ``history`` seen since ``copies()``."""
        keep = {COPY + revision.key for revision in history.revisions}
        for name in {name for name in self.known if name.startswith(COPY)} - keep:
            schema.drop_database(self.admin, name)


# --- The checks ------------------------------------------------------------------------


def single_head(history: History) -> None:
    """The history has one head; else the failure names every head and its file."""
    if len(history.heads) <= 1:
        return
    scripts = [history.script.get_revision(head) for head in sorted(history.heads)]
    heads = [f"{s.revision} ({(s.doc or '').strip()}; {s.path})" for s in scripts if s]
    raise HistoryError(
        f"the migration history has {len(heads)} heads: {', '.join(heads[:-1])} and "
        f"{heads[-1]}; merge them with 'alembic merge heads'"
    )


class _Walk:
    """One env.py run over the steps ``steps`` yields; ``at`` says what it was doing."""

    def __init__(self, history: History, url: URL) -> None:
        self.history = history
        self.url = url
        self.at: tuple[str, Revision | None] = ("start", None)

    def run(self, steps: Callable[[MigrationContext], Iterator[RevisionStep]]) -> None:
        def migrations(heads: Any, context: MigrationContext) -> Iterator[RevisionStep]:
            return steps(context)

        config = self.history.settings.alembic(self.url)
        with EnvironmentContext(config, self.history.script, fn=migrations):
            self.history.script.run_env()

    def up(self, revisions: Sequence[Revision]) -> Iterator[RevisionStep]:
        for revision in revisions:
            self.at = ("up", revision)
            yield self.history.step(revision, up=True)


def walk_up(history: History, workspace: Workspace, models: Models | None) -> dict[str, str]:
    """Upgrade an empty database to head one revision at a time; then compare the models.

    Returns the failure message of ``upgrade`` and of ``models_match``, if any; with
    ``models`` None the comparison is left out. It starts from the deepest copy of an
    earlier walk of the same history, and leaves copies at the last two revisions.
    """
    _one_head(history)
    revisions = history.revisions
    applied, copy = workspace.deepest_copy(revisions)
    failures: dict[str, str] = {}
    with workspace.scratch(template=copy) as url:
        walk = _Walk(history, url)
        try:
            if applied < len(revisions) - 1:
                walk.run(lambda context: walk.up(revisions[applied:-1]))
                applied = len(revisions) - 1
                walk.at = ("saving", None)
                workspace.save_copy(url, revisions[applied - 1])

            def to_head(context: MigrationContext) -> Iterator[RevisionStep]:
                yield from walk.up(revisions[applied:])
                if models is not None:
                    walk.at = ("models", None)
                    difference = produce_migrations(context, models.metadata).upgrade_ops
                    if difference is not None and not difference.is_empty():
                        code = render_python_code(difference).splitlines()
                        operations = [line for line in code if not line.lstrip().startswith("#")]
                        failures["models_match"] = (
                            f"the models ({models.source}) differ from the schema the "
                            "migrations build; generate the revision they need with "
                            "alembic revision --autogenerate, which would write:\n"
                            + textwrap.indent(textwrap.dedent("\n".join(operations)), "    ")
                        )

            walk.run(to_head)
        except Exception as exc:
            step, revision = walk.at
            if step != "up":
                raise
            failures["upgrade"] = (
                f"upgrade from an empty database failed in revision {revision}: "
                f"{schema.error_line(exc)}"
            )
            failures.setdefault("models_match", f"not compared: {failures['upgrade']}")
            return failures
        if revisions and copy != COPY + revisions[-1].key:
            workspace.save_copy(url, revisions[-1], take=True)
    workspace.prune(history)
    return failures


@dataclass
class Rows:
    """The rows ``migration_data`` gives for each revision: ``{revision: {table: rows}}``."""

    source: str | None = None
    rows: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, module_name: str | None) -> Rows:
        """Import the module the ``migration_data`` setting names; none gives no rows."""
        if not module_name:
            return cls()
        fix = "fix --dbtoolkit-migration-data (ini dbtoolkit_migration_data)"
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(
                f"dbtoolkit migration_data {module_name!r} does not import ({exc}); {fix}"
            ) from None
        rows = getattr(module, "ROWS", None)
        if not isinstance(rows, Mapping):
            raise ConfigError(
                f"dbtoolkit migration_data {module_name!r} has no ROWS dict "
                f"({{revision: {{table: [row, ...]}}}}); {fix}"
            )
        return cls(module.__file__ or module_name, rows)

    def key(self, revision: Revision, irreversible: bool) -> str:
        """The key of ``revision``'s round trip with these rows."""
        given = repr(self.rows.get(revision.id)) + f"\0{irreversible}"
        return hashlib.sha256(f"{revision.key}\0{given}".encode()).hexdigest()[:20]


def stair_keys(history: History, rows: Rows) -> list[str]:
    """The key of each revision's round trip, base to head."""
    irreversible = set(history.settings.irreversible)
    return [rows.key(revision, revision.id in irreversible) for revision in history.revisions]


def walk_stairs(
    history: History, workspace: Workspace, rows: Rows, cache_root: Path | None
) -> dict[str, str]:
    """Upgrade, downgrade and upgrade again each revision, from base to head.

    Before each revision's upgrade, the tables hold the rows ``rows`` gives for it and
    no others. Returns the failure message of ``stairway`` and of
    ``downgrade_leaves_no_trace``, if any. Revisions that passed before (noted in
    ``cache_root``) are only upgraded; the walk starts from the deepest copy below the
    first revision left to check.
    """
    _one_head(history)
    _check_irreversible(history)
    irreversible = set(history.settings.irreversible)
    keys = stair_keys(history, rows)

    def done(index: int) -> bool:
        return cache_root is not None and all(
            cache.passed(cache_root, check, keys[index])
            for check in ("stairway", "downgrade_leaves_no_trace")
        )

    revisions = history.revisions
    first = next((i for i in range(len(revisions)) if not done(i)), len(revisions))
    applied, copy = workspace.deepest_copy(revisions[:first])
    failures: dict[str, str] = {}

    def record(check: str, index: int) -> None:
        if cache_root is not None:
            cache.record_pass(cache_root, check, keys[index])

    with workspace.scratch(template=copy) as url:
        walk = _Walk(history, url)

        def stairs(context: MigrationContext) -> Iterator[RevisionStep]:
            yield from walk.up(revisions[applied:first])
            connection = context.connection
            assert connection is not None
            version_table = context.version_table
            filled = False
            for index in range(first, len(revisions)):
                revision = revisions[index]
                given = rows.rows.get(revision.id)
                if filled:
                    _truncate(connection, version_table)
                    filled = False
                if given:
                    walk.at = ("rows", revision)
                    _insert(connection, given)
                    filled = True
                walk.at = ("looking", revision)
                before = _snapshot(connection, version_table)
                walk.at = ("up with rows" if given else "up", revision)
                yield history.step(revision, up=True)
                if revision.id in irreversible:
                    record("stairway", index)
                    record("downgrade_leaves_no_trace", index)
                    continue
                walk.at = ("down", revision)
                yield history.step(revision, up=False)
                walk.at = ("looking", revision)
                trace = _difference(before, _snapshot(connection, version_table))
                if trace:
                    failures.setdefault(
                        "downgrade_leaves_no_trace",
                        f"the downgrade of revision {revision} does not undo its upgrade: "
                        f"{trace}; make it drop or restore what the upgrade changed",
                    )
                else:
                    record("downgrade_leaves_no_trace", index)
                walk.at = ("again", revision)
                yield history.step(revision, up=True)
                record("stairway", index)

        try:
            walk.run(stairs)
        except Exception as exc:
            step, revision = walk.at
            if revision is None or step == "looking":
                raise
            failures["stairway"] = _stair_failure(step, revision, exc, rows.source)
            failures.setdefault(
                "downgrade_leaves_no_trace",
                f"not checked from revision {revision.id} on: {failures['stairway']}",
            )
    return failures


def _stair_failure(step: str, revision: Revision, exc: Exception, source: str | None) -> str:
    error = schema.error_line(exc)
    if step == "rows":
        return f"inserting the rows {source} gives for revision {revision} failed: {error}"
    if step == "up with rows":
        return f"revision {revision} failed to upgrade with the rows {source} gives for it: {error}"
    if step == "up":
        return f"revision {revision} failed to upgrade: {error}"
    if step == "again":
        return f"revision {revision} failed to upgrade again after its downgrade: {error}"
    if isinstance(exc, NotImplementedError):
        return (
            f"the downgrade of revision {revision} raises NotImplementedError; if it cannot be "
            f"undone, exempt it with --dbtoolkit-irreversible={revision.id} "
            "(ini dbtoolkit_irreversible)"
        )
    return f"the downgrade of revision {revision} failed: {error}"


def _one_head(history: History) -> None:
    if len(history.heads) > 1:
        single_head(history)


def _check_irreversible(history: History) -> None:
    known = {revision.id for revision in history.revisions}
    unknown = [name for name in history.settings.irreversible if name not in known]
    if unknown:
        raise ConfigError(
            f"dbtoolkit irreversible names {', '.join(unknown)}, not a revision of the history "
            f"in {history.script.dir}; fix {IRREVERSIBLE}"
        )


def _insert(connection: Connection, given: Mapping[str, Any]) -> None:
    for name, table_rows in given.items():
        table = Table(name, MetaData(), autoload_with=connection)
        values = [table_rows] if isinstance(table_rows, Mapping) else list(table_rows)
        connection.execute(table.insert(), values)


def _truncate(connection: Connection, version_table: str) -> None:
    tables = connection.execute(
        text(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
            "WHERE schemaname <> 'information_schema' AND schemaname !~ '^pg_' "
            "AND tablename <> :version_table"
        ),
        {"version_table": version_table},
    ).scalars()
    names = ", ".join(tables)
    if names:
        connection.exec_driver_sql(f"TRUNCATE {names} CASCADE")


# What a schema is made of, as (kind, name, definition): every object in the schemas
# migrations create, but Alembic's version table and what extensions bring.
SNAPSHOT = """
WITH ns AS (
    SELECT oid, nspname FROM pg_namespace
    WHERE nspname <> 'information_schema' AND nspname !~ '^pg_'
), own AS (
    SELECT objid FROM pg_depend WHERE deptype = 'e'
), rel AS (
    SELECT c.oid, c.relkind, ns.nspname || '.' || c.relname AS name
    FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
    WHERE c.relname <> :version_table AND c.relkind <> 't'
      AND c.oid NOT IN (SELECT objid FROM own)
)
SELECT 'schema', nspname, '' FROM ns
UNION ALL
SELECT CASE WHEN relkind IN ('r', 'p') THEN 'table' WHEN relkind = 'v' THEN 'view'
            WHEN relkind = 'm' THEN 'materialized view' WHEN relkind = 'S' THEN 'sequence'
            WHEN relkind IN ('i', 'I') THEN 'index' WHEN relkind = 'c' THEN 'type'
            ELSE 'relation' END,
       name,
       CASE WHEN relkind IN ('v', 'm') THEN pg_get_viewdef(oid)
            WHEN relkind IN ('i', 'I') THEN pg_get_indexdef(oid) ELSE '' END
FROM rel
UNION ALL
SELECT 'column', rel.name || '.' || a.attname,
       format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
       || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
FROM rel JOIN pg_attribute a ON a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE rel.relkind NOT IN ('i', 'I', 'S')
UNION ALL
SELECT 'constraint', rel.name || '.' || c.conname, pg_get_constraintdef(c.oid)
FROM pg_constraint c JOIN rel ON rel.oid = c.conrelid
UNION ALL
SELECT 'trigger', rel.name || '.' || t.tgname, pg_get_triggerdef(t.oid)
FROM pg_trigger t JOIN rel ON rel.oid = t.tgrelid WHERE NOT t.tgisinternal
UNION ALL
SELECT 'type', ns.nspname || '.' || t.typname,
       t.typtype::text || coalesce(': ' || (
           SELECT string_agg(e.enumlabel, ', ' ORDER BY e.enumsortorder)
           FROM pg_enum e WHERE e.enumtypid = t.oid
       ), '')
FROM pg_type t JOIN ns ON ns.oid = t.typnamespace
WHERE t.typtype IN ('e', 'd', 'r', 'm') AND t.oid NOT IN (SELECT objid FROM own)
UNION ALL
SELECT 'function',
       ns.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       md5(p.prosrc)
FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace WHERE p.oid NOT IN (SELECT objid FROM own)
UNION ALL
SELECT 'extension', extname, extversion FROM pg_extension WHERE extname <> 'plpgsql'
"""


def _snapshot(connection: Connection, version_table: str) -> dict[tuple[str, str], str]:
    rows = connection.execute(text(SNAPSHOT), {"version_table": version_table})
    return {(kind, name): definition for kind, name, definition in rows}


def _difference(before: Mapping[tuple[str, str], str], after: Mapping[tuple[str, str], str]) -> str:
    """What ``after`` has that ``before`` had not, and the other way round; '' if the same."""

    def objects(keys: set[tuple[str, str]]) -> list[str]:
        # A table's columns, constraints and indexes go with it.
        named = {name for _, name in keys}
        return [
            f"{kind} {name}"
            for kind, name in sorted(keys, key=lambda key: (key[1], key[0]))
            if name.rsplit(".", 1)[0] not in named or kind in ("table", "schema", "type")
        ]

    parts = []
    left, missing = set(after) - set(before), set(before) - set(after)
    if left:
        parts.append("left behind: " + ", ".join(objects(left)))
    if missing:
        parts.append("missing: " + ", ".join(objects(missing)))
    changed = [
        f"{kind} {name} ({before[kind, name] or 'as it was'} -> {after[kind, name]})"
        for kind, name in sorted(set(before) & set(after))
        if before[kind, name] != after[kind, name]
    ]
    if changed:
        parts.append("changed: " + ", ".join(changed))
    return "; ".join(parts)


# --- Databases at a revision, for tests of data migrations -----------------------------


class RevisionDatabase:
    """A scratch database, migrated to a revision, that a test may fill and migrate on.

    ``insert`` writes rows into a table as it is at the database's current revision,
    reflected from the database (today's models and factories may not fit an old
    schema); ``upgrade`` and ``downgrade`` run the project's migrations through its
    env.py. Everything commits: the database is the test's own, and dropped after it.
    """

    def __init__(self, history: History, url: URL, driver: str) -> None:
        self.history = history
        self.url = url
        self.engine: Engine = create_engine(url.set(drivername=driver), poolclass=NullPool)

    def execute(self, statement: str, parameters: Any = None) -> list[Row[Any]]:
        """Run one SQL statement (``:name`` parameters) and commit; return its rows, if any."""
        with self.engine.begin() as connection:
            result = connection.execute(text(statement), parameters)
            return list(result.all()) if result.returns_rows else []

    def scalar(self, statement: str, parameters: Any = None) -> Any:
        """The first column of the first row ``statement`` returns."""
        rows = self.execute(statement, parameters)
        return rows[0][0] if rows else None

    def table(self, name: str, schema: str | None = None) -> Table:
        """The table ``name`` as it is at the current revision."""
        return Table(name, MetaData(), autoload_with=self.engine, schema=schema)

    def insert(self, table: str, rows: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
        """Insert a row or a list of rows into ``table``, reflected as it is now, and commit."""
        with self.engine.begin() as connection:
            _insert(connection, {table: rows})

    @property
    def revision(self) -> str | None:
        """The revision the database is at (None at base)."""
        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def upgrade(self, revision: str = "head") -> None:
        """Run the upgrades up to ``revision``; a failure names the revision and its file."""
        self._migrate(command.upgrade, "upgrade", revision)

    def downgrade(self, revision: str) -> None:
        """Run the downgrades down to ``revision``; a failure names the revision and its file."""
        self._migrate(command.downgrade, "downgrade", revision)

    def _migrate(self, run: Callable[[Any, str], None], action: str, revision: str) -> None:
        config = self.history.settings.alembic(self.url)
        try:
            run(config, revision)
        except CommandError as exc:  # Alembic's own refusal, e.g. an unknown revision
            raise HistoryError(
                f"alembic {action} {revision} failed: {schema.error_line(exc)}"
            ) from None
        except Exception as exc:
            env_py = Path(self.history.script.dir) / "env.py"
            raise HistoryError(
                schema._describe_failure(config, exc, env_py, f"alembic {action} {revision}")
            ) from exc


class Databases:
    """Databases at revisions for one test: ``at(revision)``; all dropped on ``close``."""

    def __init__(self, history: History, workspace: Workspace, driver: str) -> None:
        self.history = history
        self.workspace = workspace
        self.driver = driver
        self._made: list[RevisionDatabase] = []

    def at(self, revision: str) -> RevisionDatabase:
        """A new database at ``revision``: a clone of its copy, else migrated from empty."""
        wanted = self.history.find(revision)
        copy = COPY + wanted.key
        made = copy in self.workspace.copies()
        name = self.workspace.new_name()
        schema.create_database(
            self.workspace.admin, name, template=copy if made else None, run=self.workspace.run
        )
        url = self.workspace.admin.set(database=name)
        database = RevisionDatabase(self.history, url, self.driver)
        self._made.append(database)
        if not made:
            index = self.history.revisions.index(wanted)
            walk = _Walk(self.history, database.url)
            try:
                walk.run(lambda context: walk.up(self.history.revisions[: index + 1]))
            except Exception as exc:
                raise HistoryError(
                    f"upgrade from an empty database failed in revision {walk.at[1]}: "
                    f"{schema.error_line(exc)}"
                ) from exc
            self.workspace.save_copy(database.url, wanted)
        return database

    def close(self) -> None:
        """Drop every database ``at`` made."""
        for database in self._made:
            database.engine.dispose()
            schema.drop_database(self.workspace.admin, database.url.database or "")
        self._made.clear()

    def __enter__(self) -> Databases:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --- What a run has to check -----------------------------------------------------------


@dataclass
class Plan:
    """The history, models and rows a run checks, and which checks passed before."""

    history: History
    models: Models | ConfigError
    rows: Rows | ConfigError
    cache_root: Path | None
    cached: set[str]  # the checks that passed in an earlier run with the same keys

    @classmethod
    def make(cls, history: History, cache_root: Path | None) -> Plan:
        """Find the models and rows, and look up the keys in the cache (no database)."""
        try:
            models: Models | ConfigError = find_models(history)
        except ConfigError as exc:
            models = exc
        try:
            rows: Rows | ConfigError = Rows.load(history.settings.migration_data)
            _check_irreversible(history)
        except ConfigError as exc:
            rows = exc
        plan = cls(history, models, rows, cache_root, set())
        plan.cached = {check for check in CHECKS[1:] if plan._passed(check)}
        return plan

    def error(self, check: str) -> ConfigError | None:
        """What keeps ``check`` from running: the models or rows cannot be found."""
        if check == "models_match" and isinstance(self.models, ConfigError):
            return self.models
        if check in CHECKS[3:] and isinstance(self.rows, ConfigError):
            return self.rows
        return None

    def _passed(self, check: str) -> bool:
        if self.cache_root is None:
            return False
        if check == "upgrade":
            return cache.passed(self.cache_root, check, self.history.key)
        if check == "models_match":
            return isinstance(self.models, Models) and cache.passed(
                self.cache_root, check, self.models.key(self.history)
            )
        if isinstance(self.rows, ConfigError):
            return False
        keys = stair_keys(self.history, self.rows)
        return all(cache.passed(self.cache_root, check, key) for key in keys)

    def record(self, check: str) -> None:
        """Note that ``check`` passed (the stairway's are noted revision by revision)."""
        if self.cache_root is None:
            return
        if check == "upgrade":
            cache.record_pass(self.cache_root, check, self.history.key)
        elif check == "models_match" and isinstance(self.models, Models):
            cache.record_pass(self.cache_root, check, self.models.key(self.history))
