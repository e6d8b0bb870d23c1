"""Benchmark dbtoolkit against pytest without a database and two pytest-postgresql set-ups.

    pip install -e ".[test,bench]"      # once: the test extra, and Django for (d)
    python benchmarks/run.py            # the full run (about seven minutes on 2 cores)
    python benchmarks/run.py --quick    # a smoke version (about three minutes)
    python benchmarks/run.py --list     # the runs and the rows, without measuring
    python benchmarks/run.py --help     # the sizes and their defaults

The projects are the folders of ``benchmarks/projects/``: ``common`` (the models, the
factories, a plugin timing the set-up, and one test module per kind of test),
``history_1`` and ``history_33`` (an ``alembic.ini`` and Alembic histories of 1 and 33
revisions), and one folder per set-up with its ``pytest.ini`` and ``conftest.py``:

- (a) ``nodb``: plain pytest (dbtoolkit disabled), for the same tests without a database;
- ``dbtoolkit``: ``db_session`` + ``seeded_users = seed(UserFactory, 5)``, and the async
  form (``async_db_session`` + ``async_seed(UserFactory, 5)``);
- (b) ``pgfixture``: pytest-postgresql's per-test ``postgresql`` database, cloned from a
  template Alembic migrated, and the same 5 users inserted through its cursor;
- (c) ``naive``: the chain as the guide writes it: pytest-postgresql's
  ``postgresql_proc``, Alembic upgrade once per session, a savepoint ``Session`` per test,
  ``UserFactory.create_batch(5)``;
- (d) ``django``: pytest-django's ``db`` with the same users, ``--reuse-db``, on a server
  of the same PostgreSQL binaries that this script starts for it and stops at the end
  (its Django and pytest-django come from the ``bench`` extra).

``VARIANTS`` names the folders copied, one over the other, into a temporary directory
for each variant. ``RUNS`` are the pytest processes, run once a round and interleaved
(A B C A B C ...); a run of N tests writes its module's one test, ``test_0``, out N
times, as N functions like a real suite's (parametrized, a test without a database
took 0.6 ms of CPU instead of 1.5 ms on a loaded machine here: pytest collects it
faster). ``ROWS`` is the table, computed from each round's times and printed as
markdown: median, range, target. The three lists are checked before anything runs, so
that a misspelt name fails at once.

A new figure is a line in ``ROWS``; if it needs another pytest process, a line in
``RUNS``; if that needs another set-up, a folder in ``projects/`` and a line in
``VARIANTS``.

A "first run" gives dbtoolkit a fresh copy of the variant and fresh cache directories
(``cache_dir`` and ``XDG_CACHE_HOME``); a "second run" reuses the ones earlier runs
filled; "migration changed" reuses them with the saved migrated data directory filed
under another key, as if a migration had changed since. Only the ratios matter: the
absolute figures move with the machine's load.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECTS = HERE / "projects"

# --- What is measured ------------------------------------------------------------------

# The test counts: (what, default, default with --quick). Each is an option (--pg-tests).
SIZES = {
    "tests": ("tests of the suites", 1000, 200),
    "pg_tests": ('tests of the `postgresql` and isolation="database" suites', 30, 10),
    "async_tests": ("tests of the async suites", 200, 40),
    "xdist_tests": ("tests of the xdist suites", 2000, 500),
}
ROUNDS = (5, 3)  # default, with --quick

# Each variant is a copy of these folders of projects/, the later ones laid over the earlier.
VARIANTS = {
    "nodb": ("common", "nodb"),
    "dbtoolkit": ("common", "history_1", "dbtoolkit"),
    "dbtoolkit33": ("common", "history_33", "dbtoolkit"),
    "naive": ("common", "history_1", "naive"),
    "naive33": ("common", "history_33", "naive"),
    "pgfixture": ("common", "history_1", "pgfixture"),
    "django": ("common", "django"),
}

# How a run treats dbtoolkit: "off" also disables pytest's cache provider (the baselines).
MODES = ("off", "first run", "second run", "migration changed")


@dataclass(frozen=True)
class Run:
    """One pytest process of a variant, run once a round: ``module`` with ``tests`` tests."""

    name: str
    variant: str
    module: str
    tests: int | str  # a number, or the name of a size
    dbtoolkit: str = "off"
    options: str = ""  # more of pytest's command line


# The application's engine, pointed at the test database as a project would point it.
APP_URL = (
    "--dbtoolkit-env=DATABASE_URL=postgresql+psycopg2://{user}:{password}@{host}:{port}/{database}"
)

RUNS = (
    Run("nodb-1", "nodb", "test_nodb.py", 1),
    Run("nodb-N", "nodb", "test_nodb.py", "tests"),
    Run("nodb-plugin-1", "dbtoolkit", "test_nodb.py", 1, "second run"),
    Run("nodb-plugin-off-1", "dbtoolkit", "test_nodb.py", 1, "second run", "-p no:dbtoolkit"),
    # A project's unit tests: dbtoolkit installed, no setting, no conftest.py, no database.
    Run("unit-1", "nodb", "test_nodb.py", 1, "second run"),
    Run("unit-off-1", "nodb", "test_nodb.py", 1, "second run", "-p no:dbtoolkit"),
    Run("dbtoolkit-1-first", "dbtoolkit", "test_orm.py", 1, "first run"),
    Run("dbtoolkit-1-second", "dbtoolkit", "test_orm.py", 1, "second run"),
    Run("dbtoolkit-1-changed", "dbtoolkit", "test_orm.py", 1, "migration changed"),
    Run("dbtoolkit-N", "dbtoolkit", "test_orm.py", "tests", "second run"),
    Run("noleaks-N", "dbtoolkit", "test_orm.py", "tests", "second run", "--dbtoolkit-leaks=off"),
    Run("noguard-N", "dbtoolkit", "test_orm.py", "tests", "second run", "--without-guard"),
    Run("app-1", "dbtoolkit", "test_app.py", 1, "second run", APP_URL),
    Run("app-N", "dbtoolkit", "test_app.py", "tests", "second run", APP_URL),
    Run("marked-N", "dbtoolkit", "test_marked.py", "pg_tests", "second run"),
    Run(
        "psycopg-N", "dbtoolkit", "test_orm.py", "tests", "second run", "--dbtoolkit-driver=psycopg"
    ),
    Run("asyncpg-N", "dbtoolkit", "test_async.py", "async_tests", "second run"),
    Run(
        "asyncpsycopg-N",
        "dbtoolkit",
        "test_async.py",
        "async_tests",
        "second run",
        "--dbtoolkit-async-driver=psycopg",
    ),
    Run("dbtoolkit33-1-first", "dbtoolkit33", "test_orm.py", 1, "first run"),
    Run("dbtoolkit33-1-second", "dbtoolkit33", "test_orm.py", 1, "second run"),
    Run("naive-1", "naive", "test_orm.py", 1),
    Run("naive-N", "naive", "test_orm.py", "tests"),
    Run("naive33-1", "naive33", "test_orm.py", 1),
    Run("pgfixture-1", "pgfixture", "test_cursor.py", 1),
    Run("pgfixture-N", "pgfixture", "test_cursor.py", "pg_tests"),
    Run("django-1", "django", "test_django.py", 1),
    Run("django-N", "django", "test_django.py", "tests"),
    Run("xdist-n0", "dbtoolkit", "test_orm.py", "xdist_tests", "second run", "-n 0"),
    Run("xdist-n2", "dbtoolkit", "test_orm.py", "xdist_tests", "second run", "-n 2"),
    Run("xdist-nodb-n0", "nodb", "test_nodb.py", "xdist_tests", options="-n 0"),
    Run("xdist-nodb-n2", "nodb", "test_nodb.py", "xdist_tests", options="-n 2"),
)


@dataclass(frozen=True)
class Round:
    """One round's times, in seconds, and each run's number of tests."""

    wall: dict[str, float]  # the whole process
    cpu: dict[str, float]  # the whole process's CPU time, user and system
    setup: dict[str, float]  # from the session's start to the first test's body
    tests: dict[str, int]


@dataclass(frozen=True)
class Figure:
    """A number computed from one round, and the runs it reads; ``-`` and ``/`` combine them."""

    unit: str  # "s", "ms" or "x"
    runs: frozenset[str]
    of: Callable[[Round], float]

    def __sub__(self, other: Figure) -> Figure:
        return Figure(self.unit, self.runs | other.runs, lambda r: self.of(r) - other.of(r))

    def __truediv__(self, other: Figure) -> Figure:
        return Figure("x", self.runs | other.runs, lambda r: self.of(r) / other.of(r))


def wall(run: str) -> Figure:
    """The run's whole process."""
    return Figure("s", frozenset([run]), lambda r: r.wall[run])


def cpu(run: str) -> Figure:
    """The run's whole process's CPU time."""
    return Figure("s", frozenset([run]), lambda r: r.cpu[run])


def setup(run: str) -> Figure:
    """The run's set-up before its first test."""
    return Figure("s", frozenset([run]), lambda r: r.setup[run])


def per_test(suite: str, one: str) -> Figure:
    """What a test costs: the difference of the two runs' times over that of their tests."""
    return Figure(
        "ms",
        frozenset([suite, one]),
        lambda r: (r.wall[suite] - r.wall[one]) / (r.tests[suite] - r.tests[one]),
    )


NODB = per_test("nodb-N", "nodb-1")


def overhead(suite: str, one: str = "dbtoolkit-1-second") -> Figure:
    """Per-test cost over the same test without a database."""
    return per_test(suite, one) - NODB


def db_setup(run: str) -> Figure:
    """Set-up minus what a test without a database has too (collection, other plugins)."""
    return setup(run) - setup("nodb-plugin-1")


DBTOOLKIT = overhead("dbtoolkit-N")
NAIVE = overhead("naive-N", "naive-1")
PGFIXTURE = overhead("pgfixture-N", "pgfixture-1")
DJANGO = overhead("django-N", "django-1")


@dataclass(frozen=True)
class Row:
    """A line of the table; one with a target ("<= 0.2", ">= 100", "<= 1/3") is in bold."""

    label: str  # may name sizes: "(N={pg_tests})"
    figure: Figure
    target: str = ""


ROWS = (
    Row("(a) no database: per test", NODB),
    Row("(a) no database: whole process, 1 test", wall("nodb-1")),
    Row("(a) same, dbtoolkit plugin loaded", wall("nodb-plugin-1")),
    Row("(a) set-up before the first test, plugin loaded", setup("nodb-plugin-1")),
    Row("dbtoolkit: per-test overhead over (a)", DBTOOLKIT),
    Row("(c) naive chain: per-test overhead over (a)", NAIVE),
    Row("(b) pytest-postgresql `postgresql`: per-test overhead (N={pg_tests})", PGFIXTURE),
    Row("(d) pytest-django `db`, --reuse-db: per-test overhead over (a)", DJANGO),
    Row(
        "dbtoolkit: of which the leak check (minus --dbtoolkit-leaks=off)",
        DBTOOLKIT - overhead("noleaks-N"),
    ),
    Row(
        "dbtoolkit: of which the guard (minus the guard switched off)",
        DBTOOLKIT - overhead("noguard-N"),
    ),
    Row(
        "dbtoolkit, the application's own engine joining the test: per-test overhead over (a)",
        overhead("app-N", "app-1"),
    ),
    Row("dbtoolkit, psycopg 3: per-test overhead over (a)", overhead("psycopg-N")),
    Row(
        "dbtoolkit async, asyncpg: per-test overhead over (a) (N={async_tests})",
        overhead("asyncpg-N"),
    ),
    Row(
        "dbtoolkit async, psycopg 3: per-test overhead over (a) (N={async_tests})",
        overhead("asyncpsycopg-N"),
    ),
    Row(
        'dbtoolkit, isolation="database" marker: per-test overhead (N={pg_tests})',
        overhead("marked-N"),
    ),
    Row(
        "dbtoolkit, 1 revision: set-up before the first test, first run", setup("dbtoolkit-1-first")
    ),
    Row("dbtoolkit, 1 revision: set-up, second run", setup("dbtoolkit-1-second")),
    Row("dbtoolkit, 1 revision: set-up after a migration changed", setup("dbtoolkit-1-changed")),
    Row("dbtoolkit, 33 revisions: set-up, first run", setup("dbtoolkit33-1-first")),
    Row("dbtoolkit, 33 revisions: set-up, second run", setup("dbtoolkit33-1-second")),
    Row("(c) naive, 1 revision: set-up", setup("naive-1")),
    Row("(c) naive, 33 revisions: set-up", setup("naive33-1")),
    Row("(b) pytest-postgresql `postgresql`: set-up", setup("pgfixture-1")),
    Row("(d) pytest-django, --reuse-db: set-up", setup("django-1")),
    Row("dbtoolkit: whole process, 1 test, first run", wall("dbtoolkit-1-first")),
    Row("dbtoolkit: whole process, 1 test, second run", wall("dbtoolkit-1-second")),
    Row("(d) pytest-django: whole process, 1 test, --reuse-db", wall("django-1")),
    Row("dbtoolkit: {xdist_tests} tests, -n 0", wall("xdist-n0")),
    Row("dbtoolkit: {xdist_tests} tests, -n 2", wall("xdist-n2")),
    Row("(a) no database: {xdist_tests} tests, -n 0", wall("xdist-nodb-n0")),
    Row("(a) no database: {xdist_tests} tests, -n 2", wall("xdist-nodb-n2")),
    Row("dbtoolkit per-test overhead / (c)'s", DBTOOLKIT / NAIVE, "<= 0.2"),
    Row("(b)'s per-test overhead / dbtoolkit's", PGFIXTURE / DBTOOLKIT, ">= 100"),
    Row(
        "database set-up (minus (a)'s), second run / first run (1 revision)",
        db_setup("dbtoolkit-1-second") / db_setup("dbtoolkit-1-first"),
        "<= 1/3",
    ),
    Row(
        "database set-up (minus (a)'s), second run / first run (33 revisions)",
        db_setup("dbtoolkit33-1-second") / db_setup("dbtoolkit33-1-first"),
        "<= 1/3",
    ),
    Row(
        "database set-up after a migration changed / first run (1 revision)",
        db_setup("dbtoolkit-1-changed") / db_setup("dbtoolkit-1-first"),
    ),
    Row(
        "async per-test overhead / sync's, asyncpg",
        overhead("asyncpg-N") / DBTOOLKIT,
        "<= 1.5",
    ),
    Row(
        "async per-test overhead / sync's, psycopg 3",
        overhead("asyncpsycopg-N") / DBTOOLKIT,
        "<= 1.5",
    ),
    Row(
        "1 database test / 1 test without, whole process, second run",
        wall("dbtoolkit-1-second") / wall("nodb-plugin-1"),
        "<= 1.5",
    ),
    Row(
        "same, against (a) without the dbtoolkit plugin",
        wall("dbtoolkit-1-second") / wall("nodb-1"),
    ),
    Row(
        "1 test without a database, dbtoolkit installed and unused: CPU / with -p no:dbtoolkit",
        cpu("unit-1") / cpu("unit-off-1"),
        "<= 1.1",
    ),
    Row(
        "same, in the project set up for dbtoolkit (its factories imported at the start)",
        cpu("nodb-plugin-1") / cpu("nodb-plugin-off-1"),
    ),
    Row(
        "1 database test, whole process, second run / (d) pytest-django's, --reuse-db",
        wall("dbtoolkit-1-second") / wall("django-1"),
        "<= 1",
    ),
    Row("per-test overhead / (d) pytest-django's", DBTOOLKIT / DJANGO),
    Row(
        "xdist speed-up, -n 0 / -n 2 ({xdist_tests} tests)",
        wall("xdist-n0") / wall("xdist-n2"),
        ">= 1.7",
    ),
    Row(
        "same, (a) without a database: what xdist itself gives here ({xdist_tests} tests)",
        wall("xdist-nodb-n0") / wall("xdist-nodb-n2"),
    ),
)

# --- Checking the lists ----------------------------------------------------------------

# The one test of a test module, with its decorators: what a run of N tests repeats.
TEST_0 = re.compile(r"^(@.*\n)*(async )?def test_0\(", re.MULTILINE)


def parse_target(target: str) -> tuple[str, float]:
    """``"<= 1/3"`` -> ``("<=", 0.333...)``; ValueError if it is not of that form."""
    match = re.fullmatch(r"(<=|>=) (\d+(?:\.\d+)?)(?:/(\d+))?", target)
    if not match:
        raise ValueError(f"target {target!r} is not '<= number' or '>= number' (or number/number)")
    return match[1], float(match[2]) / int(match[3] or 1)


def problems() -> list[str]:
    """Everything wrong with VARIANTS, RUNS and ROWS, found without running anything."""
    found = []
    for variant, folders in VARIANTS.items():
        found += [
            f"variant {variant}: no folder projects/{folder}"
            for folder in folders
            if not (PROJECTS / folder).is_dir()
        ]
    names = [run.name for run in RUNS]
    found += [f"run {name} is declared twice" for name in set(names) if names.count(name) > 1]
    for run in RUNS:
        if run.variant not in VARIANTS:
            found.append(f"run {run.name}: no variant {run.variant!r} in VARIANTS")
        elif not any((PROJECTS / f / run.module).is_file() for f in VARIANTS[run.variant]):
            found.append(f"run {run.name}: variant {run.variant} has no {run.module}")
        elif run.tests != 1 and not TEST_0.search(test_source(run)):
            found.append(f"run {run.name}: {run.module} has no test_0 to repeat")
        if run.tests not in SIZES and not (isinstance(run.tests, int) and run.tests > 0):
            found.append(f"run {run.name}: tests {run.tests!r} is neither a number nor a size")
        if run.dbtoolkit not in MODES:
            found.append(f"run {run.name}: dbtoolkit {run.dbtoolkit!r} is not one of {MODES}")
    read = set()
    for row in ROWS:
        read |= row.figure.runs
        found += [
            f"row {row.label!r} reads run {name}, which RUNS lacks"
            for name in sorted(row.figure.runs - set(names))
        ]
        fields = {field for _, field, _, _ in string.Formatter().parse(row.label) if field}
        found += [
            f"row {row.label!r} names size {{{field}}}, which SIZES lacks"
            for field in sorted(fields - set(SIZES))
        ]
        if row.target:
            try:
                parse_target(row.target)
            except ValueError as error:
                found.append(f"row {row.label!r}: {error}")
    found += [f"run {name} is read by no row" for name in names if name not in read]
    used = {run.variant for run in RUNS}
    found += [f"variant {variant} is used by no run" for variant in VARIANTS if variant not in used]
    return found


def test_source(run: Run) -> str:
    """The text of a run's test module, from the last of its variant's folders that has it."""
    folders = [PROJECTS / folder for folder in VARIANTS[run.variant]]
    return next(f / run.module for f in reversed(folders) if (f / run.module).is_file()).read_text()


# --- Running ---------------------------------------------------------------------------

IGNORED = shutil.ignore_patterns("__pycache__")


def repeat_test(source: str, count: int) -> str:
    """The test module with its one test, ``test_0``, written ``count`` times, numbered."""
    start = TEST_0.search(source)
    assert start is not None  # problems() checked it
    header, test = source[: start.start()], source[start.start() :]
    return header + "\n\n".join(test.replace("test_0(", f"test_{i}(", 1) for i in range(count))


def module_of(run: Run, tests: int) -> str:
    """The file name of a run's test module with ``tests`` tests."""
    return run.module if tests == 1 else f"{Path(run.module).stem}_{tests}.py"


def copy_variants(root: Path, counts: dict[str, int]) -> dict[str, Path]:
    """Copy each variant's folders into ``root``, with each run's module at its size."""
    copies = {}
    for variant, folders in VARIANTS.items():
        copy = copies[variant] = root / variant
        for folder in folders:
            shutil.copytree(PROJECTS / folder, copy, dirs_exist_ok=True, ignore=IGNORED)
    for run in RUNS:
        tests = counts[run.name]
        if tests > 1:
            (copies[run.variant] / module_of(run, tests)).write_text(
                repeat_test(test_source(run), tests)
            )
    return copies


def find_pg_ctl() -> str:
    """Find pg_ctl the way pytest-postgresql does: pg_config --bindir, then PATH."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        candidate = Path(bindir.stdout.strip()) / "pg_ctl"
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("pg_ctl")
    if found is None:
        sys.exit("no pg_ctl found (pg_config --bindir, PATH); install PostgreSQL's server")
    return found


class Runner:
    """Runs the runs in the copied variants and times them."""

    def __init__(self, root: Path, copies: dict[str, Path], pg_ctl: str) -> None:
        self.root = root
        self.copies = copies
        self.env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS") and not key.startswith("DBTOOLKIT_")
        }
        # Measure what a developer's machine does: cache bytecode, including pytest's
        # assertion-rewritten plugins (every module of Faker, which registers one). With
        # PYTHONDONTWRITEBYTECODE every process would recompile them (0.6 s here). The
        # caches go to the scratch directory, not into the virtual environment.
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
        self.baseline_args: list[str] = []
        if os.geteuid() == 0:
            self.baseline_args = self._root_workaround(pg_ctl)

    def _root_workaround(self, pg_ctl: str) -> list[str]:
        """Options that let pytest-postgresql's pg_ctl run as root: a launcher and a basetemp."""
        launcher = self.root / "pg_ctl_as_postgres"
        source = (HERE / "pg_ctl_as_postgres.py").read_text()
        launcher.write_text(f"#!{sys.executable} -I\n{source}")
        launcher.chmod(0o700)
        self.env["BENCH_PG_CTL"] = pg_ctl
        (self.root / "basetemp").mkdir()
        self.root.chmod(0o711)
        return [f"--postgresql-exec={launcher}", f"--basetemp={self.root / 'basetemp' / 'run'}"]

    @contextmanager
    def django_server(self, pg_ctl: str) -> Iterator[None]:
        """A server for (d), of the same binaries, started with pg_ctl and stopped at the end."""
        home = self.root / "django-pg"
        home.mkdir()
        data = home / "data"
        if self.baseline_args:  # as root: the launcher hands home/ to postgres and runs as it
            pg_ctl = str(self.root / "pg_ctl_as_postgres")
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            port = free.getsockname()[1]
        options = f"-p {port} -h 127.0.0.1 -k {home}"
        pg = [pg_ctl, "-D", str(data), "-l", str(home / "log")]
        subprocess.run(
            [pg_ctl, "initdb", "-D", str(data), "-o", "--auth=trust --username=postgres"],
            env=self.env,
            check=True,
            capture_output=True,
        )
        subprocess.run([*pg, "-w", "-o", options, "start"], env=self.env, check=True)
        self.env["BENCH_DJANGO_PORT"] = str(port)
        try:
            yield
        finally:
            subprocess.run([*pg, "-m", "immediate", "stop"], env=self.env, capture_output=True)

    def run(self, run: Run, tests: int) -> tuple[float, float, float]:
        """Run once; return the wall time, the set-up time and the CPU time (seconds)."""
        project = self.copies[run.variant]
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "bench_timing"]
        command += [module_of(run, tests), *run.options.split()]
        scratch = Path(tempfile.mkdtemp(dir=self.root))
        timing = scratch / "timing.json"
        env = dict(self.env, BENCH_TIMING=str(timing))
        try:
            if run.dbtoolkit == "off":
                command += ["-p", "no:cacheprovider", "-p", "no:dbtoolkit", *self.baseline_args]
            else:
                if run.dbtoolkit == "first run":
                    project = shutil.copytree(project, scratch / "project", ignore=IGNORED)
                    caches = scratch / "cache"
                else:
                    caches = self.root / f"cache-{run.variant}"
                if run.dbtoolkit == "migration changed":  # the saved migrated data is stale
                    saved = caches / "pytest" / "d" / "dbtoolkit"
                    for entry in saved.glob("stale-*"):  # filed so by the previous round
                        shutil.rmtree(entry)
                    for entry in [data.parent for data in saved.glob("*/data")]:
                        entry.rename(entry.with_name(f"stale-{entry.name}"))
                command += ["-o", f"cache_dir={caches / 'pytest'}"]
                env["XDG_CACHE_HOME"] = str(caches / "xdg")
            env["PYTHONPATH"] = str(project)  # for -p bench_timing
            start, used = time.perf_counter(), _children_cpu()
            done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
            elapsed, used = time.perf_counter() - start, _children_cpu() - used
            passed = re.search(r"(\d+) passed", done.stdout)
            if done.returncode != 0 or not passed or int(passed[1]) != tests:
                sys.exit(f"{run.name} failed: {' '.join(command)}\n{done.stdout}\n{done.stderr}")
            return elapsed, json.loads(timing.read_text())["setup"], used
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _children_cpu() -> float:
    """The CPU time of this process's finished children so far, user and system."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(runner: Runner, counts: dict[str, int], repeat: int) -> list[Round]:
    """Run the one-test runs once to warm up, then ``repeat`` interleaved rounds."""
    for run in RUNS:
        if counts[run.name] == 1:
            runner.run(run, 1)
    rounds = []
    for number in range(1, repeat + 1):
        times = Round(wall={}, cpu={}, setup={}, tests=counts)
        for run in RUNS:
            whole, before, used = runner.run(run, counts[run.name])
            times.wall[run.name], times.setup[run.name], times.cpu[run.name] = whole, before, used
            print(
                f"round {number}/{repeat}  {run.name:<22} {whole:7.2f} s  set-up {before:6.3f} s",
                file=sys.stderr,
                flush=True,
            )
        rounds.append(times)
    return rounds


# --- Reporting -------------------------------------------------------------------------


def show(value: float, unit: str) -> str:
    """Format one figure in its unit."""
    if unit == "ms":
        return f"{value * 1000:.2f}"
    return f"{value:.2f}" if unit == "s" or abs(value) < 100 else f"{value:.0f}"


def label(row: Row, sizes: dict[str, int]) -> str:
    """The row's label with its sizes filled in, in bold if it has a target."""
    text = row.label.format(**sizes)
    return f"**{text}**" if row.target else text


def table(rounds: list[Round], sizes: dict[str, int]) -> str:
    """Render the markdown table: median [min-max] over the rounds, target, whether it holds."""
    lines = ["| measure | median [min\N{EN DASH}max] | target | holds |", "|---|---|---|---|"]
    for row in ROWS:
        unit = row.figure.unit
        values = [row.figure.of(r) for r in rounds]
        median = statistics.median(values)
        suffix = {"s": " s", "ms": " ms", "x": ""}[unit]
        cell = (
            f"{show(median, unit)}{suffix} "
            f"[{show(min(values), unit)}\N{EN DASH}{show(max(values), unit)}]"
        )
        target = holds = ""
        if row.target:
            op, bound = parse_target(row.target)
            target = f"{op} {bound:.2f}" if bound < 1 else f"{op} {bound:g}"
            holds = "yes" if (median <= bound if op == "<=" else median >= bound) else "**no**"
        lines.append(f"| {label(row, sizes)} | {cell} | {target} | {holds} |")
    return "\n".join(lines)


def listing(counts: dict[str, int], sizes: dict[str, int]) -> str:
    """The runs and the rows as declared, for --list."""
    lines = ["Runs (one pytest process each, once a round):"]
    for run in RUNS:
        lines.append(
            f"  {run.name:<22} {run.variant:<12} {run.module:<15} {counts[run.name]:>5} tests"
            f"  dbtoolkit {run.dbtoolkit:<17} {run.options}".rstrip()
        )
    lines.append("Rows (the runs each reads; a target):")
    for row in ROWS:
        target = f"  target {row.target}" if row.target else ""
        lines.append(f"  {label(row, sizes)}{target}\n      {', '.join(sorted(row.figure.runs))}")
    return "\n".join(lines)


def header(pg_ctl: str, sizes: dict[str, int], rounds: int) -> str:
    """The machine and the versions the figures were measured with."""
    output = subprocess.run([pg_ctl, "--version"], capture_output=True, text=True).stdout
    pg = re.search(r"\(PostgreSQL\) (\S+)", output)
    packages = ", ".join(
        f"{name} {version(name)}"
        for name in ("pytest", "dbtoolkit", "pytest-postgresql", "pytest-xdist", "SQLAlchemy")
    )
    return (
        f"- machine: {os.cpu_count()} cores ({platform.machine()}, {platform.system()}), "
        f"PostgreSQL {pg[1] if pg else '?'} ({pg_ctl})\n"
        f"- Python {platform.python_version()}, {packages}\n"
        f"- {rounds} rounds, N={sizes['tests']} tests (`postgresql` fixture: "
        f"{sizes['pg_tests']}), xdist suite {sizes['xdist_tests']} tests; per-test overhead = "
        "(T(N) - T(1)) / (N - 1) minus the same without a database"
    )


def main() -> None:
    """Check the lists, parse the options, copy the variants, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke version")
    for name, (what, full, quick) in SIZES.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=int,
            metavar="N",
            help=f"{what} (default {full}; with --quick {quick})",
        )
    parser.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help=f"interleaved rounds (default {ROUNDS[0]}; with --quick {ROUNDS[1]})",
    )
    parser.add_argument("--list", action="store_true", help="print the runs and rows, and stop")
    parser.add_argument("--keep", action="store_true", help="keep the copied projects")
    args = parser.parse_args()
    found = problems()
    if found:
        sys.exit("benchmarks/run.py: fix VARIANTS, RUNS or ROWS:\n  " + "\n  ".join(found))
    sizes = {
        name: getattr(args, name) or (quick if args.quick else full)
        for name, (_, full, quick) in SIZES.items()
    }
    repeat = args.repeat or ROUNDS[args.quick]
    if min(sizes.values()) < 2 or repeat < 1:
        parser.error("test counts must be at least 2 and --repeat at least 1")
    counts = {run.name: sizes[run.tests] if run.tests in SIZES else run.tests for run in RUNS}
    if args.list:
        print(listing(counts, sizes))
        return
    if importlib.util.find_spec("pytest_django") is None:
        sys.exit('benchmarks/run.py: (d) needs Django and pytest-django: pip install -e ".[bench]"')

    pg_ctl = find_pg_ctl()
    load = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="dbtoolkit-bench-"))
    started = time.perf_counter()
    try:
        runner = Runner(root, copy_variants(root, counts), pg_ctl)
        with runner.django_server(pg_ctl):
            rounds = measure(runner, counts, repeat)
    finally:
        if args.keep:
            print(f"copied projects kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(header(pg_ctl, sizes, repeat))
    print(
        f"- took {time.perf_counter() - started:.0f} s; load average {load:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end\n"
    )
    print(table(rounds, sizes))


if __name__ == "__main__":
    main()
