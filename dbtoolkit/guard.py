"""No connection outside the run's own databases: the drivers' connect functions, guarded.

While ``GUARD`` blocks (from the moment a run starts using the database until it
ends), every new PostgreSQL connection made through psycopg2, psycopg (3) or asyncpg,
directly or through a SQLAlchemy engine (sync or async), is checked before anything
is sent to the server: it must go to one of the run's own databases on the run's own
server, or to a URL the ``allow_urls`` setting names. Anything else is refused with
``OutsideDatabaseError``, naming the target (password masked), who tried it and the
fixes. dbtoolkit's own admin work reaches the maintenance database through ``admin``.

The checks sit where each driver opens a connection to one resolved address:
``psycopg2._connect``, ``psycopg.Connection._connect_gen`` (and its async twin) and
``asyncpg.connect_utils._connect_addr``; a driver imported later is patched on import.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.abc
import importlib.util
import os
import pwd
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from dbtoolkit.errors import OutsideDatabaseError

_LOOPBACK = {"", "localhost", "127.0.0.1", "::1"}


def endpoint(host: str | None, port: int | str | None) -> tuple[str, int]:
    """A server's identity: a loopback address and a socket directory are one machine."""
    host = host or os.environ.get("PGHOST", "")
    number = int(port or os.environ.get("PGPORT") or 5432)
    if host.startswith("/") or host.lower() in _LOOPBACK:
        return ("local", number)
    return (host.lower(), number)


@dataclass(frozen=True)
class Target:
    """Where a new connection goes."""

    host: str | None
    port: int | str | None
    database: str | None
    user: str | None

    @classmethod
    def of(cls, params: dict[str, Any]) -> Target:
        """The target of libpq-style parameters, with libpq's defaults filled in."""
        user = params.get("user") or os.environ.get("PGUSER") or _os_user()
        return cls(
            host=params.get("host") or params.get("hostaddr"),
            port=params.get("port"),
            database=params.get("dbname")
            or params.get("database")
            or os.environ.get("PGDATABASE")
            or user,
            user=user,
        )

    def describe(self) -> str:
        """The target as a URL; it never holds a password."""
        host = self.host or os.environ.get("PGHOST") or "localhost"
        port = int(self.port or os.environ.get("PGPORT") or 5432)
        from sqlalchemy.engine import URL

        return URL.create(
            "postgresql", username=self.user, host=host, port=port, database=self.database
        ).render_as_string(hide_password=True)


def _os_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


@dataclass(frozen=True)
class Boundary:
    """The run's own databases: names on one server, and URLs allowed besides."""

    server: tuple[str, int]
    owns: Callable[[str], bool]
    allowed: frozenset[tuple[tuple[str, int], str]] = frozenset()

    def admits(self, target: Target, *, admin: bool) -> str | None:
        """Why ``target`` is inside ("own" or "allowed"), or None if it is not.

        ``admin``: dbtoolkit's own work, which may reach any database of the run's server.
        """
        place = endpoint(target.host, target.port)
        if place == self.server and (admin or self.owns(target.database or "")):
            return "own"
        if (place, target.database or "") in self.allowed:
            return "allowed"
        return None


class Guard:
    """Refuses connections outside a ``Boundary`` while it blocks."""

    def __init__(self) -> None:
        self.boundary: Boundary | None = None
        self.where = "dbtoolkit"  # who connects: the test, fixture or step under way
        self.fixes = ""  # the settings that would let it through, for the message
        self._local = threading.local()
        self._seen: list[str] | None = None  # allowed URLs reached, while ``only`` records

    def block(self, boundary: Boundary, fixes: str) -> tuple[Boundary | None, str]:
        """From now on, refuse connections outside ``boundary``.

        Returns what the guard did before, for ``restore`` (a pytest run inside a test).
        """
        _install()
        before = self.boundary, self.fixes
        self.boundary, self.fixes = boundary, fixes
        return before

    def restore(self, before: tuple[Boundary | None, str]) -> None:
        """Guard as before ``block``."""
        self.boundary, self.fixes = before

    @contextmanager
    def unblocked(self) -> Iterator[None]:
        """Let every connection through in the block (for a test that must reach outside)."""
        boundary, self.boundary = self.boundary, None
        try:
            yield
        finally:
            self.boundary = boundary

    @contextmanager
    def admin(self) -> Iterator[None]:
        """Dbtoolkit's own work in the block may reach any database of the run's server."""
        previous = getattr(self._local, "admin", False)
        self._local.admin = True
        try:
            yield
        finally:
            self._local.admin = previous

    @contextmanager
    def only(self, database: str) -> Iterator[list[str]]:
        """Of the run's databases, only ``database`` may be reached in the block.

        Yields the list of the allowed URLs that were reached meanwhile.
        """
        boundary, seen = self.boundary, self._seen
        if boundary is not None:
            self.boundary = dataclasses.replace(boundary, owns=lambda name: name == database)
        self._seen = []
        try:
            yield self._seen
        finally:
            self.boundary, self._seen = boundary, seen

    @contextmanager
    def doing(self, where: str) -> Iterator[None]:
        """Name who connects in the block, for the refusal."""
        previous, self.where = self.where, where
        try:
            yield
        finally:
            self.where = previous

    def check(self, target: Target) -> None:
        """Refuse ``target`` if the guard blocks and it is outside."""
        __tracebackhide__ = True
        boundary = self.boundary
        if boundary is None:
            return
        inside = boundary.admits(target, admin=getattr(self._local, "admin", False))
        if inside == "allowed" and self._seen is not None:
            self._seen.append(target.describe())
        if inside is None:
            raise OutsideDatabaseError(
                f"{self.where} tried to connect to {target.describe()}, which is not one of "
                f"this run's databases; nothing was sent to it. {self.fixes}",
                target.describe(),
            )


GUARD = Guard()


# --- The drivers' connect functions --------------------------------------------------


def _psycopg2(module: ModuleType) -> None:
    from psycopg2.extensions import parse_dsn

    connect = module._connect

    @functools.wraps(connect)
    def guarded(dsn: str, *args: Any, **kwargs: Any) -> Any:
        GUARD.check(Target.of(parse_dsn(dsn)))
        return connect(dsn, *args, **kwargs)

    module._connect = guarded  # type: ignore[attr-defined]


def _psycopg(module: ModuleType) -> None:
    from psycopg.conninfo import conninfo_to_dict

    def guarding(original: Any) -> Any:
        def guarded(klass: Any, /, conninfo: str = "", **kwargs: Any) -> Any:
            GUARD.check(Target.of(conninfo_to_dict(conninfo)))
            return original(klass, conninfo, **kwargs)  # psycopg < 3.3.6 passes timeout=

        return classmethod(guarded)

    for cls in (module.Connection, module.AsyncConnection):
        cls._connect_gen = guarding(cls._connect_gen.__func__)


def _asyncpg(module: ModuleType) -> None:
    connect_addr = module._connect_addr

    async def guarded(*, addr: Any, params: Any, **kwargs: Any) -> Any:
        host, port = (addr, None) if isinstance(addr, str) else addr
        if isinstance(addr, str):  # a Unix socket: .../.s.PGSQL.<port>
            host, port = os.path.dirname(addr), addr.rsplit(".", 1)[-1]
        GUARD.check(
            Target.of({"host": host, "port": port, "dbname": params.database, "user": params.user})
        )
        return await connect_addr(addr=addr, params=params, **kwargs)

    module._connect_addr = guarded  # type: ignore[attr-defined]


_PATCHES = {"psycopg2": _psycopg2, "psycopg": _psycopg, "asyncpg.connect_utils": _asyncpg}
_patched: set[str] = set()
_lock = threading.Lock()


def _install() -> None:
    """Patch the drivers already imported; the others when they are imported."""
    with _lock:
        for name in _PATCHES:
            if name in sys.modules:
                _patch(sys.modules[name])
        if not any(isinstance(finder, _OnImport) for finder in sys.meta_path):
            sys.meta_path.insert(0, _OnImport())


def _patch(module: ModuleType) -> None:
    if module.__name__ not in _patched:
        _patched.add(module.__name__)
        _PATCHES[module.__name__](module)


class _OnImport(importlib.abc.MetaPathFinder):
    """Patches a driver's module right after it is imported."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in _PATCHES or name in _patched:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_patch(module: ModuleType) -> None:
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec
