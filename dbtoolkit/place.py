"""Where a run's databases are: known before any server starts, and handed to workers.

``Place`` is chosen when pytest starts, before the conftest.py files (the ``env``
setting's variables name these databases). Under xdist, ``Handoff`` carries what the
controller provisioned to its workers. Every run imports this module: nothing here
imports SQLAlchemy or a driver until a URL is asked for.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pwd
import shutil
import tempfile
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from port_for import PortType, get_port

from dbtoolkit import errors, reaper
from dbtoolkit.errors import DbtoolkitError
from dbtoolkit.guard import Boundary, endpoint
from dbtoolkit.server import Server

if TYPE_CHECKING:
    from pytest_postgresql.config import PostgreSQLConfig
    from sqlalchemy.engine import URL

    from dbtoolkit.settings import Settings

# Every database dbtoolkit creates on a server has this name prefix.
PREFIX = "dbtoolkit_"
# The template's name in a server dbtoolkit started (and may have saved and restored).
LOCAL_TEMPLATE = f"{PREFIX}template"


@dataclass(frozen=True)
class Place:
    """Where one process's databases are, known before any server starts.

    The run's server (``started``: one dbtoolkit starts, on a port picked when first
    needed; else the one ``--dbtoolkit-url`` names), the role, and this process's own
    database: a copy of the template named for the run and the xdist worker, or
    ``--dbtoolkit-database``.
    """

    run: str
    worker: str
    host: str
    ports: PortType | None  # the server's port, or pytest-postgresql's of where to pick one
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
                ports=url.port or 5432,
                user=url.username or pwd.getpwuid(os.geteuid()).pw_name,
                password=url.password,
                started=False,
                as_is=settings.database,
            )
        return cls(run, worker, pg.host, port or pg.port, pg.user, pg.password, started=True)

    @functools.cached_property
    def port(self) -> int:
        """The server's port, a free one picked when first asked for.

        A run without database tests never asks, unless the ``env`` setting names it.
        """
        chosen = get_port(self.ports)
        assert chosen is not None
        return chosen

    @property
    def database(self) -> str:
        """The database this process tests in."""
        return self.as_is or f"{PREFIX}{self.run}_{self.worker}"

    def owns(self, database: str) -> bool:
        """Whether ``database`` is one of the run's own."""
        return (
            database.startswith(f"{PREFIX}{self.run}_")
            or database == self.as_is
            or (self.started and database == LOCAL_TEMPLATE)
        )

    def url(self, database: str | None = None, drivername: str = "postgresql") -> URL:
        """The URL of ``database`` (by default this process's own) on the run's server."""
        from sqlalchemy.engine import URL

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
        variables = list(variables)
        if not variables:  # nothing to fill in: SQLAlchemy need not be imported for a URL
            return {}
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
