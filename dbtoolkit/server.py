"""Where the PostgreSQL server comes from: a throwaway one started with pytest-postgresql.

PostgreSQL's ``initdb``, ``pg_ctl`` and ``postgres`` refuse to run as root. When the
tests run as root (containers, CI), the server runs as an unprivileged OS user
instead: ``pg_ctl`` is called through a small root-owned launcher that drops to that
user, and the server's files live in a directory that user owns and nobody else can
read. Nothing else changes, so pytest-postgresql's executor works as it always does.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from mirakuru.exceptions import ExecutorError
from pytest_postgresql.executors import PostgreSQLExecutor
from sqlalchemy.engine import URL

from dbtoolkit.errors import ServerError

# Tried in this order when running as root: Debian's and most packages' server user,
# then the user every Linux has.
SERVICE_USERS = ("postgres", "nobody")

_LAUNCHER = """\
#!{python} -I
# Runs pg_ctl as {user!r}: PostgreSQL refuses to run as root.
import os, sys
os.setgroups([])
os.setgid({gid})
os.setuid({uid})
os.chdir({workdir!r})
os.execv({pg_ctl!r}, [{pg_ctl!r}, *sys.argv[1:]])
"""


@dataclass(frozen=True)
class Server:
    """A running PostgreSQL server and the role to connect as."""

    host: str
    port: int
    user: str
    password: str | None
    version: str
    os_user: str | None = None

    def url(self, database: str, drivername: str = "postgresql+psycopg2") -> URL:
        """Return the SQLAlchemy URL of one database on this server."""
        return URL.create(
            drivername,
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=database,
        )


def service_user() -> pwd.struct_passwd | None:
    """Return the OS user to run the server as, or None when not running as root."""
    if os.geteuid() != 0:
        return None
    for name in SERVICE_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServerError(
        "pytest runs as root and PostgreSQL refuses to, but no unprivileged user "
        f"({' or '.join(SERVICE_USERS)}) exists to run it as; create one "
        "(useradd --system postgres) or give a server with --postgresql-host/--postgresql-port"
    )


def _private_dir(prefix: str, owner: pwd.struct_passwd | None) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))  # mode 0700
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)
    return path


def _launcher(pg_ctl: str, user: pwd.struct_passwd, workdir: Path, in_dir: Path) -> str:
    # The launcher runs as root before it drops privileges, so it lives in a root-owned
    # directory the server's user cannot write to.
    path = in_dir / "pg_ctl"
    path.write_text(
        _LAUNCHER.format(
            python=sys.executable,
            user=user.pw_name,
            uid=user.pw_uid,
            gid=user.pw_gid,
            workdir=str(workdir),
            pg_ctl=pg_ctl,
        )
    )
    path.chmod(0o700)
    return str(path)


@contextmanager
def running_server(
    pg_ctl: str,
    *,
    host: str,
    port: int,
    user: str,
    password: str | None,
    startparams: str = "-w",
    postgres_options: str = "",
) -> Iterator[Server]:
    """Start a throwaway server with ``pg_ctl`` and stop it, removing its files, on exit."""
    os_user = service_user()
    with ExitStack() as cleanup:
        workdir = _private_dir("dbtoolkit-pg-", os_user)
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        executable = pg_ctl
        if os_user is not None:
            launcher_dir = _private_dir("dbtoolkit-ctl-", None)
            cleanup.callback(shutil.rmtree, launcher_dir, ignore_errors=True)
            executable = _launcher(pg_ctl, os_user, workdir, launcher_dir)

        executor = PostgreSQLExecutor(
            executable=executable,
            host=host,
            port=port,
            datadir=str(workdir / "data"),
            # A private socket directory: only the server's user can connect through it.
            unixsocketdir=str(workdir),
            logfile=str(workdir / "server.log"),
            startparams=startparams,
            dbname="postgres",
            user=user,
            password=password,
            postgres_options=postgres_options,
        )
        try:
            version = str(executor.version)
            executor.start()
        except (OSError, subprocess.SubprocessError, ExecutorError) as exc:
            raise ServerError(_start_failure(pg_ctl, workdir, exc)) from None
        cleanup.callback(executor.stop)
        yield Server(
            host=host,
            port=port,
            user=user,
            password=password,
            version=version,
            os_user=os_user.pw_name if os_user else None,
        )


def _start_failure(pg_ctl: str, workdir: Path, exc: Exception) -> str:
    log = workdir / "server.log"
    last = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
    detail = last[0] if last else str(exc).strip().splitlines()[0]
    return (
        f"could not start PostgreSQL with {pg_ctl}: {detail}; check the binary "
        "(--postgresql-exec) and the port (--postgresql-port)"
    )
