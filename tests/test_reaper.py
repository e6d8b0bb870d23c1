"""A killed run leaves nothing behind: its server is stopped and its files removed.

Each kill test starts a real run of the catalog project in a process of its own (forked:
``forkserver.Run``; in a session of its own, so that its process group can be killed),
waits until its test is running, kills it, and then waits for the server's processes and
directories to be gone.
With ``DBTOOLKIT_REAPER=off`` the same check fails: what it checks is the reaper's.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import forkserver
import pytest
from catalog import catalog_project

from dbtoolkit import reaper

# The bar: from the kill to a clean machine.
LIMIT = 5.0
ROOTS = ("/dev/shm", tempfile.gettempdir())

HANGING_TEST = """
import os
import time
from pathlib import Path

from sqlalchemy import text


def {name}(db_session):
    marker = Path(os.environ["REAPER_MARKER"])
    partial = marker.with_suffix(".partial" + str(os.getpid()))
    partial.write_text(db_session.scalar(text("SHOW data_directory")))
    partial.rename(marker)
    time.sleep(120)
"""


@pytest.fixture
def shared_cache(inner_cache: Path) -> Path:
    """One pytest cache for the inner runs: the catalog's template is migrated once."""
    return inner_cache / "reaper"


class Run:
    """A run of the catalog project in a process of its own, in a session of its own."""

    def __init__(
        self, pytester: pytest.Pytester, cache: Path, *args: str, reaper_on: bool, **env: str
    ):
        name = f"run-{len(list(pytester.path.glob('run-*.txt')))}"
        self.marker = pytester.path / f"{name}.running"
        # A run without a reaper keeps its record where no other run's sweep looks (runs
        # on other xdist workers start servers, sweeping what dead owners left first),
        # so that its leak shows; runs given one TMPDIR see each other's records.
        own_tmp = env.get("TMPDIR") or (None if reaper_on else str(pytester.path / f"{name}-tmp"))
        env = {**os.environ, **env, "REAPER_MARKER": str(self.marker)}
        env.pop("PYTEST_ADDOPTS", None)
        if not reaper_on:
            env[reaper.SWITCH] = "off"
        self.roots = ROOTS
        if own_tmp:
            Path(own_tmp).mkdir(exist_ok=True)
            env["TMPDIR"] = own_tmp
            self.roots = (*ROOTS, own_tmp)
        self.output = pytester.path / f"{name}.txt"
        with forkserver.streams(self.output, self.output) as fds:
            self.process = forkserver.Run(
                ["-m", "pytest", "-pno:randomly", f"-ocache_dir={cache}", *args],
                env,
                fds,
                cwd=str(pytester.path),
                session=True,
            )

    def data_directory(self) -> Path:
        """Wait until a test runs; return its server's data directory."""
        deadline = time.monotonic() + 120
        while not self.marker.exists():
            assert self.process.poll() is None, self.output.read_text()
            assert time.monotonic() < deadline, "no test started"
            time.sleep(0.05)
        return Path(self.marker.read_text())

    def end(self) -> None:
        """Kill whatever is left of the run (xdist workers of a killed controller)."""
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def start(pytester: pytest.Pytester, shared_cache: Path) -> Iterator[Callable[..., Run]]:
    catalog_project(pytester)
    pytester.makepyfile(
        test_hang=HANGING_TEST.format(name="test_one") + HANGING_TEST.format(name="test_two")
    )
    runs: list[Run] = []

    def started(*args: str, reaper_on: bool = True, **env: str) -> Run:
        runs.append(Run(pytester, shared_cache, *args, reaper_on=reaper_on, **env))
        return runs[-1]

    yield started
    for run in runs:
        run.end()
    reaper.sweep({root for run in runs for root in run.roots})  # what no reaper removed


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie waiting for its parent does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def postmaster(data: Path) -> int:
    return int((data / "postmaster.pid").read_text().split()[0])


def server_processes(data: Path) -> set[int]:
    """The postmaster of ``data`` and its children."""
    postmaster_pid = postmaster(data)
    children = set()
    for entry in Path("/proc").iterdir():
        with suppress(OSError, ValueError, IndexError):
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == postmaster_pid:
                children.add(int(entry.name))
    return {postmaster_pid, *children}


def records_of(data: Path, roots: tuple[str, ...] = ROOTS) -> list[Path]:
    """The reaper's records that name ``data``."""
    found = []
    for root in roots:
        for record in Path(root).glob(f"{reaper.HOME_PREFIX}*/{reaper.RECORD}"):
            with suppress(OSError, ValueError):
                if json.loads(record.read_text())["data"] == str(data):
                    found.append(record)
    return found


def left_after(
    data: Path, processes: set[int], limit: float, roots: tuple[str, ...] = ROOTS
) -> tuple[list[str], float]:
    """What is left of the server on ``data`` once clean or after ``limit``; the time taken."""
    started = time.monotonic()
    while True:
        left = [f"process {pid}" for pid in sorted(processes) if alive(pid)]
        left += [str(path) for path in (data.parent, *records_of(data, roots)) if path.exists()]
        waited = time.monotonic() - started
        if not left or waited > limit:
            return left, waited
        time.sleep(0.02)


def kill(run: Run, mode: str) -> None:
    if mode == "SIGTERM":
        os.kill(run.process.pid, signal.SIGTERM)
    elif mode == "SIGKILL of the process group":
        os.killpg(run.process.pid, signal.SIGKILL)
    else:
        os.kill(run.process.pid, signal.SIGKILL)


MODES = {
    "SIGTERM": (),
    "SIGKILL of pytest": (),
    "SIGKILL of the process group": (),
    "SIGKILL of the xdist controller": ("-n", "2"),
}


@pytest.mark.parametrize("mode", MODES)
def test_a_killed_run_leaves_no_server_and_no_files(start, mode: str) -> None:
    run = start(*MODES[mode])
    data = run.data_directory()
    processes = server_processes(data)
    assert records_of(data, run.roots)

    kill(run, mode.removesuffix(" of the xdist controller"))
    left, waited = left_after(data, processes, limit=LIMIT, roots=run.roots)
    print(f"{mode}: {waited:.2f} s from the kill to a clean machine")  # -rP
    assert not left, f"left {waited:.1f} s after the kill: {left}"
    if mode.startswith("SIGTERM"):
        assert run.process.wait(timeout=60) == reaper.TERMINATED
        assert "Terminated: pytest received SIGTERM" in run.output.read_text()


def test_without_the_reaper_each_kill_leaves_the_server_behind(start) -> None:
    """What the test above checks is the reaper's work: without it, the same kills leave
    the server running (or at least its files: a process-group kill may take a postmaster
    in the group with it) for as long as the reaper is given, until the next run sweeps.

    The kills are made at once, so that their wait is one. The xdist controller's is left
    out: its slowest (workers start), it differs in nothing.
    """
    modes = list(MODES)[:3]
    runs = {mode: start(*MODES[mode], reaper_on=False) for mode in modes}
    killed = {}
    for mode, run in runs.items():
        data = run.data_directory()
        killed[mode] = (data, server_processes(data), time.monotonic())
        assert records_of(data, run.roots)
        kill(run, mode)

    for mode, run in runs.items():
        data, processes, at = killed[mode]
        left, waited = left_after(data, processes, at + LIMIT - time.monotonic(), run.roots)
        assert left, f"{mode}: nothing was left {waited:.1f} s after the kill"
        reaper.sweep(run.roots)
        assert not left_after(data, processes, limit=LIMIT, roots=run.roots)[0], mode


# The catalog's last revision, when REAPER_HANG is set: says where its server's data
# is, and waits to be killed.
HANGING_MIGRATION = (
    'import os, pathlib, time; marker = pathlib.Path(os.environ["REAPER_MARKER"]); '
    'partial = marker.with_suffix(".partial"); '
    'partial.write_text(op.get_bind().exec_driver_sql("SHOW data_directory").scalar()); '
    'partial.rename(marker); time.sleep(120 if os.environ.get("REAPER_HANG") else 0)'
)


def test_a_run_killed_during_its_migrations_leaves_nothing_and_the_next_is_green(
    start, pytester
) -> None:
    catalog_project(pytester, second_revision=HANGING_MIGRATION)
    pytester.makepyfile(test_quick="def test_quick(db_session):\n    pass\n")
    killed = start("test_quick.py", REAPER_HANG="1")
    data = killed.data_directory()
    processes = server_processes(data)
    kill(killed, "SIGKILL of the process group")
    left, waited = left_after(data, processes, limit=LIMIT)
    assert not left, f"left {waited:.1f} s after the kill: {left}"

    next_run = start("test_quick.py")
    assert next_run.process.wait(timeout=120) == 0, next_run.output.read_text()
    assert "1 passed" in next_run.output.read_text()


def test_the_next_run_stops_a_killed_runs_server_and_never_a_live_one(start, pytester) -> None:
    # The three runs' records, out of other runs' sight; where start's clean-up finds them.
    shared = str(pytester.path / "tmp")
    live = start(reaper_on=False, TMPDIR=shared)
    killed = start(reaper_on=False, TMPDIR=shared)  # in the same second
    live_data, data = live.data_directory(), killed.data_directory()
    processes = server_processes(data)
    kill(killed, "SIGKILL of pytest")
    killed.process.wait()
    assert alive(postmaster(data))

    start("-k", "test_one", TMPDIR=shared).data_directory()  # it swept, then started
    left, waited = left_after(data, processes, limit=LIMIT, roots=live.roots)
    assert not left, f"left {waited:.1f} s after the next run started: {left}"
    assert live.process.poll() is None
    assert alive(postmaster(live_data))
    assert records_of(live_data, live.roots)


# --- The records, in-process --------------------------------------------------------


def write_record(home: Path, pid: int, start: str | None) -> Path:
    data = home / "data"
    data.mkdir(parents=True)
    record = {"pid": pid, "start": start, "pg_ctl": "/no/pg_ctl", "data": str(data)}
    (home / reaper.RECORD).write_text(json.dumps({**record, "remove": [str(home)]}))
    return home


def test_sweep_removes_what_dead_owners_left_and_nothing_else(tmp_path: Path) -> None:
    me = os.getpid()
    live = write_record(tmp_path / "dbtoolkit-pg-live", me, reaper.start_time(me))
    reused = write_record(tmp_path / "dbtoolkit-pg-reused", me, "1")  # the pid, another start
    dead = write_record(tmp_path / "dbtoolkit-pg-dead", 2**22 + 1, "1")  # above pid_max
    unrecorded = tmp_path / "dbtoolkit-pg-unrecorded"
    (unrecorded / "data").mkdir(parents=True)
    foreign = write_record(tmp_path / "dbtoolkit-pg-foreign", 2**22 + 1, "1")
    foreign.chmod(0o777)  # another user could have written its record
    handoff = tmp_path / "dbtoolkit-xdist-dead"  # an xdist controller's: no server
    handoff.mkdir()
    reaper.write_record(handoff, [handoff])
    record = json.loads((handoff / reaper.RECORD).read_text())
    (handoff / reaper.RECORD).write_text(json.dumps({**record, "pid": 2**22 + 1}))

    assert sorted(reaper.sweep([str(tmp_path)])) == [dead, reused, handoff]
    assert [path.exists() for path in (live, unrecorded, foreign, dead, reused, handoff)] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]


@pytest.fixture
def default_sigterm() -> Iterator[None]:
    """SIGTERM as a new process has it (this outer run handles it itself)."""
    outer = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, outer)


def test_sigterm_is_handled_during_the_run_and_given_back_after(
    pytester: pytest.Pytester, default_sigterm: None
) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        """
        import signal

        def test_handled():
            handler = signal.getsignal(signal.SIGTERM)
            assert type(handler.__self__).__name__ == "SigtermAsInterrupt"
        """
    )
    pytester.runpytest_inprocess("-p", "no:randomly").assert_outcomes(passed=1)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_sigterm_handler_of_the_project_is_left_in_charge(
    pytester: pytest.Pytester, default_sigterm: None
) -> None:
    def project_handler(signum: int, frame: object) -> None:
        raise AssertionError("not called here")

    signal.signal(signal.SIGTERM, project_handler)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        """
        import signal

        def test_not_taken():
            assert signal.getsignal(signal.SIGTERM).__name__ == "project_handler"
        """
    )
    pytester.runpytest_inprocess("-p", "no:randomly").assert_outcomes(passed=1)
    assert signal.getsignal(signal.SIGTERM) is project_handler
