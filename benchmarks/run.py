"""Benchmark dbtoolkit against pytest without a database and two pytest-postgresql set-ups.

    python benchmarks/run.py            # the full run (about ten minutes on 2 cores)
    python benchmarks/run.py --quick    # a smoke version (about three minutes)
    python benchmarks/run.py --help     # test counts, rounds

It writes self-contained synthetic projects into a temporary directory, runs each as
a whole pytest process, interleaved (A B C A B C ...), and prints a markdown table of
medians and of the ratios the targets are stated in. The variants:

- (a) ``nodb``: the same tests without a database (dbtoolkit disabled); and one such
  test in the ``dbtoolkit`` project, where the plugin is loaded;
- ``dbtoolkit``: ``db_session`` + ``seeded_users = seed(UserFactory, 5)``, with an
  Alembic history of 1 revision, and ``dbtoolkit33`` with one of 33 revisions; the
  same tests with ``--dbtoolkit-leaks=off``, on psycopg 3, and marked
  ``isolation="database"``; and their async form (``async_db_session`` +
  ``async_seed(UserFactory, 5)``) on asyncpg and on psycopg 3;
- (b) ``pgfixture``: pytest-postgresql's per-test ``postgresql`` database, cloned from a
  template Alembic migrated, and the same 5 users inserted through its cursor;
- (c) ``naive``: the chain as the guide writes it: pytest-postgresql's ``postgresql_proc``,
  Alembic upgrade once per session, a savepoint ``Session`` per test,
  ``UserFactory.create_batch(5)``;
- the xdist suite with ``-n 0`` and ``-n 2``, with dbtoolkit and, for the most xdist
  itself gives on the machine, without a database.

"First run" gives dbtoolkit a fresh copy of the project and fresh cache directories
(``cache_dir`` and ``XDG_CACHE_HOME``); "second run" reuses ones earlier runs filled;
"after a migration changed" reuses them with the saved migrated data directory filed
under another key, as if a migration had changed since.
Only the ratios matter: the absolute figures move with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

# --- The synthetic projects ------------------------------------------------------------

MODELS = '''\
"""The benchmark schema: users and their posts."""

from datetime import datetime

from sqlalchemy import ForeignKey, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Post(Base):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    title: Mapped[str] = mapped_column(String(200))
'''

FACTORIES = '''\
"""factory_boy factories of the benchmark schema; they name no session."""

import factory
from factory.alchemy import SQLAlchemyModelFactory

from bench_models import User


class UserFactory(SQLAlchemyModelFactory):
    class Meta:
        model = User
        sqlalchemy_session_persistence = "flush"

    name = factory.Faker("name")
    email = factory.Sequence(lambda n: f"user{n}@example.com")
    active = True
'''

TIMING_PLUGIN = '''\
"""Write the time from session start to the first test body to $BENCH_TIMING."""

import json
import os
import time

import pytest

_start = None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    global _start
    _start = time.perf_counter()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    global _start
    path = os.environ.get("BENCH_TIMING")
    if path and _start is not None:
        with open(path, "w") as out:
            json.dump({"setup": time.perf_counter() - _start}, out)
        _start = None
'''

ALEMBIC_INI = """\
[alembic]
script_location = %(here)s
path_separator = os
sqlalchemy.url = postgresql+psycopg2://localhost/set_by_the_caller
"""

ENV_PY = """\
from alembic import context
from sqlalchemy import create_engine, pool

engine = create_engine(context.config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
"""

REVISION = '''\
"""{doc}"""

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = {down_revision!r}


def upgrade():
    {body}


def downgrade():
    raise NotImplementedError
'''

ID = 'sa.Column("id", sa.Integer, primary_key=True)'
NAME = 'sa.Column("name", sa.String(200), nullable=False)'
EMAIL = 'sa.Column("email", sa.String(320), nullable=False{})'
ACTIVE = 'sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true())'
CREATED = (
    'sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, '
    "server_default=sa.func.now())"
)
POSTS = (
    f'op.create_table("posts", {ID}, sa.Column("user_id", sa.Integer, '
    'sa.ForeignKey("users.id"), nullable=False), sa.Column("title", sa.String(200)))'
)

# (docstring, body of upgrade()) of each revision.
HISTORY_1 = [
    (
        "Users and posts.",
        f'op.create_table("users", {ID}, {NAME}, {EMAIL.format(", unique=True")}, {ACTIVE}, '
        f"{CREATED})\n    {POSTS}",
    )
]
HISTORY_33 = [
    ("Users.", f'op.create_table("users", {ID}, {NAME})'),
    ("User emails.", f'op.add_column("users", {EMAIL.format("")})'),
    ("Unique emails.", 'op.create_index("ix_users_email", "users", ["email"], unique=True)'),
    ("Inactive users.", f'op.add_column("users", {ACTIVE})'),
    ("User creation time.", f'op.add_column("users", {CREATED})'),
    ("Posts.", POSTS),
    ("Posts by user.", 'op.create_index("ix_posts_user_id", "posts", ["user_id"])'),
]
for _k in range(1, 14):
    HISTORY_33 += [
        (
            f"Tag list {_k}.",
            f'op.create_table("tags{_k}", {ID}, sa.Column("label", sa.String(50)))',
        ),
        (f"Tags {_k} by label.", f'op.create_index("ix_tags{_k}_label", "tags{_k}", ["label"])'),
    ]

DBTOOLKIT_INI = """\
[pytest]
dbtoolkit_alembic_ini = {alembic_ini}
dbtoolkit_factories = bench_factories
asyncio_default_fixture_loop_scope = function
"""

DBTOOLKIT_CONFTEST = """\
from bench_factories import UserFactory
from dbtoolkit import async_seed, seed

seeded_users = seed(UserFactory, 5)
async_seeded_users = async_seed(UserFactory, 5)
"""

NAIVE_CONFTEST = '''\
"""The naive chain as the guide writes it."""

import pytest
from alembic import command
from alembic.config import Config
from pytest_postgresql.janitor import DatabaseJanitor
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from bench_factories import UserFactory

ALEMBIC_INI = {alembic_ini!r}


@pytest.fixture(scope="session")
def engine(postgresql_proc):
    proc = postgresql_proc
    with DatabaseJanitor(
        user=proc.user, host=proc.host, port=proc.port, dbname="naive", password=proc.password
    ):
        url = f"postgresql+psycopg2://{{proc.user}}@{{proc.host}}:{{proc.port}}/naive"
        config = Config(ALEMBIC_INI)
        config.set_main_option("sqlalchemy.url", url)
        command.upgrade(config, "head")
        engine = create_engine(url)
        yield engine
        engine.dispose()


@pytest.fixture
def db_session(engine):
    connection = engine.connect()
    transaction = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    UserFactory._meta.sqlalchemy_session = session
    yield session
    session.close()
    transaction.rollback()
    connection.close()


@pytest.fixture
def seeded_users(db_session):
    return UserFactory.create_batch(5)
'''

PGFIXTURE_CONFTEST = '''\
"""pytest-postgresql's own per-test database, cloned from a template Alembic migrated."""

import pytest
from alembic import command
from alembic.config import Config
from faker import Faker
from pytest_postgresql import factories

ALEMBIC_INI = {alembic_ini!r}


def migrate(host, port, user, dbname, password=None, autocommit=False):
    config = Config(ALEMBIC_INI)
    config.set_main_option("sqlalchemy.url", f"postgresql+psycopg2://{{user}}@{{host}}:{{port}}/{{dbname}}")
    command.upgrade(config, "head")


postgresql_proc = factories.postgresql_proc(load=[migrate])
fake = Faker()


@pytest.fixture
def seeded_users(postgresql):
    rows = [(fake.name(), f"user{{k}}@example.com") for k in range(5)]
    with postgresql.cursor() as cursor:
        cursor.executemany("INSERT INTO users (name, email) VALUES (%s, %s)", rows)
    postgresql.commit()
    return rows
'''

TESTS = {
    "nodb": (
        "",
        "def test_{i}():\n"
        "    users = [f'user{{k}}' for k in range(5)]\n"
        "    assert len(users) == 5\n",
    ),
    "orm": (
        "from bench_models import User\n",
        "def test_{i}(db_session, seeded_users):\n    assert db_session.query(User).count() == 5\n",
    ),
    "marked": (
        "import pytest\n\nfrom bench_models import User\n",
        '@pytest.mark.dbtoolkit(isolation="database")\n'
        "def test_{i}(db_session, seeded_users):\n    assert db_session.query(User).count() == 5\n",
    ),
    "async": (
        "import pytest\nfrom sqlalchemy import func, select\n\nfrom bench_models import User\n\n"
        "pytestmark = pytest.mark.asyncio\n",
        "async def test_{i}(async_db_session, async_seeded_users):\n"
        "    assert await async_db_session.scalar(select(func.count()).select_from(User)) == 5\n",
    ),
    "cursor": (
        "",
        "def test_{i}(postgresql, seeded_users):\n"
        "    with postgresql.cursor() as cursor:\n"
        '        cursor.execute("SELECT count(*) FROM users")\n'
        "        assert cursor.fetchone()[0] == 5\n",
    ),
}

# Runs pg_ctl for pytest-postgresql when pytest runs as root (PostgreSQL refuses root):
# hands the directory pytest-postgresql made for the data directory and log to the
# server's user, lets it through the parents inside the benchmark's scratch directory,
# then drops privileges.
LAUNCHER = """\
#!{python} -I
import os, pwd, sys

SCRATCH = {scratch!r}
user = pwd.getpwnam({user!r})
args = sys.argv[1:]
for flag in ("-D", "--pgdata", "-l", "--log"):
    if flag in args[:-1]:
        parent = os.path.dirname(os.path.realpath(args[args.index(flag) + 1]))
        if parent.startswith(SCRATCH + os.sep):
            os.chown(parent, user.pw_uid, user.pw_gid)
            step = os.path.dirname(parent)
            while step.startswith(SCRATCH):
                os.chmod(step, os.stat(step).st_mode | 0o011)
                step = os.path.dirname(step)
os.setgroups([])
os.setgid(user.pw_gid)
os.setuid(user.pw_uid)
os.chdir("/")
os.execv({pg_ctl!r}, [{pg_ctl!r}, *args])
"""


def write_history(directory: Path, history: list[tuple[str, str]]) -> Path:
    """Write an Alembic environment with one revision per history step; return its ini."""
    versions = directory / "versions"
    versions.mkdir(parents=True)
    (directory / "alembic.ini").write_text(ALEMBIC_INI)
    (directory / "env.py").write_text(ENV_PY)
    previous = None
    for number, (doc, body) in enumerate(history, 1):
        revision = f"{number:04d}"
        (versions / f"{revision}.py").write_text(
            REVISION.format(doc=doc, revision=revision, down_revision=previous, body=body)
        )
        previous = revision
    return directory / "alembic.ini"


def generate(root: Path) -> dict[str, Path]:
    """Write the shared modules, both histories and every variant; return the variant dirs."""
    common = root / "common"
    common.mkdir()
    (common / "bench_models.py").write_text(MODELS)
    (common / "bench_factories.py").write_text(FACTORIES)
    (common / "bench_timing.py").write_text(TIMING_PLUGIN)
    history_1 = write_history(root / "alembic_1", HISTORY_1)
    history_33 = write_history(root / "alembic_33", HISTORY_33)
    files = {
        "nodb": {"conftest.py": ""},
        "dbtoolkit": {"pytest.ini": DBTOOLKIT_INI.format(alembic_ini=history_1)},
        "dbtoolkit33": {"pytest.ini": DBTOOLKIT_INI.format(alembic_ini=history_33)},
        "naive": {"conftest.py": NAIVE_CONFTEST.format(alembic_ini=str(history_1))},
        "naive33": {"conftest.py": NAIVE_CONFTEST.format(alembic_ini=str(history_33))},
        "pgfixture": {"conftest.py": PGFIXTURE_CONFTEST.format(alembic_ini=str(history_1))},
    }
    projects = {}
    for name, contents in files.items():
        project = projects[name] = root / name
        project.mkdir()
        contents.setdefault("pytest.ini", "[pytest]\n")
        contents.setdefault("conftest.py", DBTOOLKIT_CONFTEST)
        for filename, text in contents.items():
            (project / filename).write_text(text)
    return projects


def test_file(project: Path, kind: str, count: int) -> str:
    """Write (once) a module of ``count`` tests of ``kind``; return its name."""
    name = f"test_{kind}_{count}.py"
    if not (project / name).exists():
        header, body = TESTS[kind]
        tests = "\n\n".join(body.format(i=i) for i in range(count))
        (project / name).write_text(f"{header}\n\n{tests}" if header else tests)
    return name


# --- Running ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One pytest command, run once per repetition."""

    name: str
    project: str
    kind: str
    count: int
    # off: no cacheprovider; fresh: new copy and caches; warm: reused; changed: reused,
    # with the saved migrated data directory under another key, as after a migration
    # changed
    cache: str = "off"
    args: tuple[str, ...] = ()
    setup: bool = False  # record the set-up time before the first test


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
    """Runs jobs in the generated projects and times them."""

    def __init__(self, root: Path, projects: dict[str, Path], pg_ctl: str) -> None:
        self.root = root
        self.projects = projects
        self.baseline_args: list[str] = []
        if os.geteuid() == 0:
            self.baseline_args = self._root_workaround(pg_ctl)
        self.env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS") and not key.startswith("DBTOOLKIT_")
        }
        self.env["PYTHONPATH"] = str(root / "common")
        # Measure what a developer's machine does: cache bytecode, including pytest's
        # assertion-rewritten plugins (every module of Faker, which registers one). With
        # PYTHONDONTWRITEBYTECODE every process would recompile them (0.6 s here). The
        # caches go to the scratch directory, not into the virtual environment.
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")

    def _root_workaround(self, pg_ctl: str) -> list[str]:
        """Options that let pytest-postgresql's pg_ctl run as root: a launcher and a basetemp."""
        launcher = self.root / "pg_ctl_as_postgres"
        launcher.write_text(
            LAUNCHER.format(
                python=sys.executable, scratch=str(self.root), user="postgres", pg_ctl=pg_ctl
            )
        )
        launcher.chmod(0o700)
        (self.root / "basetemp").mkdir()
        self.root.chmod(0o711)
        return [f"--postgresql-exec={launcher}", f"--basetemp={self.root / 'basetemp' / 'run'}"]

    def run(self, job: Job) -> tuple[float, float | None]:
        """Run a job once; return its wall time and set-up time (seconds)."""
        project = self.projects[job.project]
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "bench_timing"]
        command += [test_file(project, job.kind, job.count), *job.args]
        env = dict(self.env)
        scratch = Path(tempfile.mkdtemp(dir=self.root))
        try:
            if job.project.startswith("dbtoolkit"):
                if job.cache == "fresh":
                    project = shutil.copytree(
                        project, scratch / "project", ignore=shutil.ignore_patterns("__pycache__")
                    )
                    caches = scratch / "cache"
                else:
                    caches = self.root / f"cache-{job.project}"
                if job.cache == "changed":  # the saved migrated data directory is stale
                    saved = caches / "pytest" / "d" / "dbtoolkit"
                    for entry in saved.glob("stale-*"):  # filed so by the previous round
                        shutil.rmtree(entry)
                    for entry in [data.parent for data in saved.glob("*/data")]:
                        entry.rename(entry.with_name(f"stale-{entry.name}"))
                command += ["-o", f"cache_dir={caches / 'pytest'}"]
                env["XDG_CACHE_HOME"] = str(caches / "xdg")
            else:
                command += ["-p", "no:cacheprovider", "-p", "no:dbtoolkit", *self.baseline_args]
            timing = scratch / "timing.json"
            if job.setup:
                env["BENCH_TIMING"] = str(timing)
            start = time.perf_counter()
            done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - start
            passed = re.search(r"(\d+) passed", done.stdout)
            if done.returncode != 0 or not passed or int(passed[1]) != job.count:
                sys.exit(f"{job.name} failed: {' '.join(command)}\n{done.stdout}\n{done.stderr}")
            setup = json.loads(timing.read_text())["setup"] if job.setup else None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return wall, setup


def async_count(n: int) -> int:
    """Tests of the async suites: each opens a connection of its own, so fewer."""
    return max(2, n // 5)


def jobs(n: int, n_pg: int, n_xdist: int) -> list[Job]:
    """Every command of one repetition, in the order they are interleaved."""
    n_async = async_count(n)
    return [
        Job("nodb-1", "nodb", "nodb", 1, setup=True),
        Job("nodb-N", "nodb", "nodb", n),
        Job("nodb-plugin-1", "dbtoolkit", "nodb", 1, cache="warm", setup=True),
        Job("dbtoolkit-1-first", "dbtoolkit", "orm", 1, cache="fresh", setup=True),
        Job("dbtoolkit-1-second", "dbtoolkit", "orm", 1, cache="warm", setup=True),
        Job("dbtoolkit-1-changed", "dbtoolkit", "orm", 1, cache="changed", setup=True),
        Job("dbtoolkit-N", "dbtoolkit", "orm", n, cache="warm"),
        Job("noleaks-N", "dbtoolkit", "orm", n, cache="warm", args=("--dbtoolkit-leaks=off",)),
        Job("marked-N", "dbtoolkit", "marked", n_pg, cache="warm"),
        Job("psycopg-N", "dbtoolkit", "orm", n, cache="warm", args=("--dbtoolkit-driver=psycopg",)),
        Job("asyncpg-N", "dbtoolkit", "async", n_async, cache="warm"),
        Job(
            "asyncpsycopg-N",
            "dbtoolkit",
            "async",
            n_async,
            cache="warm",
            args=("--dbtoolkit-async-driver=psycopg",),
        ),
        Job("dbtoolkit33-1-first", "dbtoolkit33", "orm", 1, cache="fresh", setup=True),
        Job("dbtoolkit33-1-second", "dbtoolkit33", "orm", 1, cache="warm", setup=True),
        Job("naive-1", "naive", "orm", 1, setup=True),
        Job("naive-N", "naive", "orm", n),
        Job("naive33-1", "naive33", "orm", 1, setup=True),
        Job("pgfixture-1", "pgfixture", "cursor", 1, setup=True),
        Job("pgfixture-N", "pgfixture", "cursor", n_pg),
        Job("xdist-n0", "dbtoolkit", "orm", n_xdist, cache="warm", args=("-n", "0")),
        Job("xdist-n2", "dbtoolkit", "orm", n_xdist, cache="warm", args=("-n", "2")),
        Job("xdist-nodb-n0", "nodb", "nodb", n_xdist, args=("-n", "0")),
        Job("xdist-nodb-n2", "nodb", "nodb", n_xdist, args=("-n", "2")),
    ]


def measure(runner: Runner, plan: list[Job], repeat: int) -> list[dict[str, float]]:
    """Run the one-test jobs once to warm up, then ``repeat`` interleaved rounds."""
    for job in plan:
        if job.count == 1:
            runner.run(job)
    rounds = []
    for number in range(1, repeat + 1):
        figures: dict[str, float] = {}
        for job in plan:
            wall, setup = runner.run(job)
            figures[job.name] = wall
            line = f"round {number}/{repeat}  {job.name:<22} {wall:7.2f} s"
            if setup is not None:
                figures[job.name + ":setup"] = setup
                line += f"  set-up {setup:6.3f} s"
            print(line, file=sys.stderr, flush=True)
        rounds.append(figures)
    return rounds


# --- Reporting -------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure per round, how to show it, and an optional target."""

    label: str
    value: Callable[[dict[str, float]], float]
    unit: str  # "s", "ms" or "x"
    target: tuple[str, float] | None = None  # ("<=", 0.2)


def rows(n: int, n_pg: int, n_xdist: int) -> list[Row]:
    """The table: figures first, then the ratios the targets are stated in."""

    def per_test(name: str, count: int, one: str) -> Callable[[dict[str, float]], float]:
        return lambda r: (r[name] - r[one]) / (count - 1)

    nodb = per_test("nodb-N", n, "nodb-1")

    def overhead(name: str, count: int, one: str) -> Callable[[dict[str, float]], float]:
        return lambda r: per_test(name, count, one)(r) - nodb(r)

    dbtoolkit = overhead("dbtoolkit-N", n, "dbtoolkit-1-second")
    overhead_psycopg = overhead("psycopg-N", n, "dbtoolkit-1-second")
    n_async = async_count(n)
    naive = overhead("naive-N", n, "naive-1")
    pgfixture = overhead("pgfixture-N", n_pg, "pgfixture-1")

    def setup(name: str) -> Callable[[dict[str, float]], float]:
        return lambda r: r[name + ":setup"]

    def db_setup(name: str) -> Callable[[dict[str, float]], float]:
        # The set-up a test without a database has too (collection, other plugins' fixtures).
        return lambda r: r[name + ":setup"] - r["nodb-plugin-1:setup"]

    def ratio(a: str, b: str) -> Callable[[dict[str, float]], float]:
        return lambda r: r[a] / r[b]

    return [
        Row("(a) no database: per test", nodb, "ms"),
        Row("(a) no database: whole process, 1 test", lambda r: r["nodb-1"], "s"),
        Row("(a) same, dbtoolkit plugin loaded", lambda r: r["nodb-plugin-1"], "s"),
        Row("(a) set-up before the first test, plugin loaded", setup("nodb-plugin-1"), "s"),
        Row("dbtoolkit: per-test overhead over (a)", dbtoolkit, "ms"),
        Row("(c) naive chain: per-test overhead over (a)", naive, "ms"),
        Row(f"(b) pytest-postgresql `postgresql`: per-test overhead (N={n_pg})", pgfixture, "ms"),
        Row(
            "dbtoolkit: of which the leak check (minus --dbtoolkit-leaks=off)",
            lambda r: (r["dbtoolkit-N"] - r["noleaks-N"]) / n,
            "ms",
        ),
        Row("dbtoolkit, psycopg 3: per-test overhead over (a)", overhead_psycopg, "ms"),
        Row(
            f"dbtoolkit async, asyncpg: per-test overhead over (a) (N={n_async})",
            overhead("asyncpg-N", n_async, "dbtoolkit-1-second"),
            "ms",
        ),
        Row(
            f"dbtoolkit async, psycopg 3: per-test overhead over (a) (N={n_async})",
            overhead("asyncpsycopg-N", n_async, "dbtoolkit-1-second"),
            "ms",
        ),
        Row(
            f'dbtoolkit, isolation="database" marker: per-test overhead (N={n_pg})',
            overhead("marked-N", n_pg, "dbtoolkit-1-second"),
            "ms",
        ),
        Row(
            "dbtoolkit, 1 revision: set-up before the first test, first run",
            setup("dbtoolkit-1-first"),
            "s",
        ),
        Row("dbtoolkit, 1 revision: set-up, second run", setup("dbtoolkit-1-second"), "s"),
        Row(
            "dbtoolkit, 1 revision: set-up after a migration changed",
            setup("dbtoolkit-1-changed"),
            "s",
        ),
        Row("dbtoolkit, 33 revisions: set-up, first run", setup("dbtoolkit33-1-first"), "s"),
        Row("dbtoolkit, 33 revisions: set-up, second run", setup("dbtoolkit33-1-second"), "s"),
        Row("(c) naive, 1 revision: set-up", setup("naive-1"), "s"),
        Row("(c) naive, 33 revisions: set-up", setup("naive33-1"), "s"),
        Row("(b) pytest-postgresql `postgresql`: set-up", setup("pgfixture-1"), "s"),
        Row("dbtoolkit: whole process, 1 test, first run", lambda r: r["dbtoolkit-1-first"], "s"),
        Row("dbtoolkit: whole process, 1 test, second run", lambda r: r["dbtoolkit-1-second"], "s"),
        Row(f"dbtoolkit: {n_xdist} tests, -n 0", lambda r: r["xdist-n0"], "s"),
        Row(f"dbtoolkit: {n_xdist} tests, -n 2", lambda r: r["xdist-n2"], "s"),
        Row(f"(a) no database: {n_xdist} tests, -n 0", lambda r: r["xdist-nodb-n0"], "s"),
        Row(f"(a) no database: {n_xdist} tests, -n 2", lambda r: r["xdist-nodb-n2"], "s"),
        Row(
            "**dbtoolkit per-test overhead / (c)'s**",
            lambda r: dbtoolkit(r) / naive(r),
            "x",
            ("<=", 0.2),
        ),
        Row(
            "**(b)'s per-test overhead / dbtoolkit's**",
            lambda r: pgfixture(r) / dbtoolkit(r),
            "x",
            (">=", 100),
        ),
        Row(
            "**database set-up (minus (a)'s), second run / first run (1 revision)**",
            lambda r: db_setup("dbtoolkit-1-second")(r) / db_setup("dbtoolkit-1-first")(r),
            "x",
            ("<=", 1 / 3),
        ),
        Row(
            "**database set-up (minus (a)'s), second run / first run (33 revisions)**",
            lambda r: db_setup("dbtoolkit33-1-second")(r) / db_setup("dbtoolkit33-1-first")(r),
            "x",
            ("<=", 1 / 3),
        ),
        Row(
            "database set-up after a migration changed / first run (1 revision)",
            lambda r: db_setup("dbtoolkit-1-changed")(r) / db_setup("dbtoolkit-1-first")(r),
            "x",
        ),
        Row(
            "**1 database test / 1 test without, whole process, second run**",
            ratio("dbtoolkit-1-second", "nodb-plugin-1"),
            "x",
            ("<=", 1.5),
        ),
        Row(
            "same, against (a) without the dbtoolkit plugin",
            ratio("dbtoolkit-1-second", "nodb-1"),
            "x",
        ),
        Row(
            f"**xdist speed-up, -n 0 / -n 2 ({n_xdist} tests)**",
            ratio("xdist-n0", "xdist-n2"),
            "x",
            (">=", 1.7),
        ),
        Row(
            f"same, (a) without a database: what xdist itself gives here ({n_xdist} tests)",
            ratio("xdist-nodb-n0", "xdist-nodb-n2"),
            "x",
        ),
    ]


def show(value: float, unit: str) -> str:
    """Format one figure in its unit."""
    if unit == "ms":
        return f"{value * 1000:.2f}"
    return f"{value:.2f}" if unit == "s" or abs(value) < 100 else f"{value:.0f}"


def table(table_rows: list[Row], rounds: list[dict[str, float]]) -> str:
    """Render the markdown table: median [min-max] over the rounds, target, whether it holds."""
    lines = ["| measure | median [min\N{EN DASH}max] | target | holds |", "|---|---|---|---|"]
    for row in table_rows:
        values = [row.value(r) for r in rounds]
        median = statistics.median(values)
        suffix = {"s": " s", "ms": " ms", "x": ""}[row.unit]
        cell = (
            f"{show(median, row.unit)}{suffix} "
            f"[{show(min(values), row.unit)}\N{EN DASH}{show(max(values), row.unit)}]"
        )
        target = holds = ""
        if row.target:
            op, bound = row.target
            target = f"{op} {bound:.2f}" if bound < 1 else f"{op} {bound:g}"
            holds = "yes" if (median <= bound if op == "<=" else median >= bound) else "**no**"
        lines.append(f"| {row.label} | {cell} | {target} | {holds} |")
    return "\n".join(lines)


def header(pg_ctl: str, args: argparse.Namespace) -> str:
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
        f"- {args.repeat} rounds, N={args.tests} tests (`postgresql` fixture: {args.pg_tests}), "
        f"xdist suite {args.xdist_tests} tests; per-test overhead = "
        "(T(N) - T(1)) / (N - 1) minus the same without a database"
    )


def main() -> None:
    """Parse the options, generate the projects, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="A small smoke version")
    parser.add_argument("-n", "--tests", type=int, help="Tests per suite (default 1000)")
    parser.add_argument("--pg-tests", type=int, help="Tests of the `postgresql` suite (30)")
    parser.add_argument("--xdist-tests", type=int, help="Tests of the xdist suite (2000)")
    parser.add_argument("-r", "--repeat", type=int, help="Interleaved rounds (default 5)")
    parser.add_argument("--keep", action="store_true", help="Keep the generated projects")
    args = parser.parse_args()
    defaults = (200, 10, 500, 3) if args.quick else (1000, 30, 2000, 5)
    for name, default in zip(("tests", "pg_tests", "xdist_tests", "repeat"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if min(args.tests, args.pg_tests, args.xdist_tests) < 2 or args.repeat < 1:
        parser.error("test counts must be at least 2 and --repeat at least 1")

    pg_ctl = find_pg_ctl()
    load = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="dbtoolkit-bench-"))
    started = time.perf_counter()
    try:
        runner = Runner(root, generate(root), pg_ctl)
        rounds = measure(runner, jobs(args.tests, args.pg_tests, args.xdist_tests), args.repeat)
    finally:
        if args.keep:
            print(f"generated projects kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(header(pg_ctl, args))
    print(
        f"- took {time.perf_counter() - started:.0f} s; load average {load:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end\n"
    )
    print(table(rows(args.tests, args.pg_tests, args.xdist_tests), rounds))


if __name__ == "__main__":
    main()
