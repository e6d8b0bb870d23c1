"""Benchmark dbtoolkit's migration checks against pytest-alembic's four built-in tests.

    python benchmarks/migration_checks.py            # 5 rounds (about three minutes)
    python benchmarks/migration_checks.py --quick    # 2 rounds
    python benchmarks/migration_checks.py --help

It writes a project with an Alembic history of 33 revisions (the "dbtoolkit33" history
of benchmarks/run.py, with downgrades) and models that match it, and runs, interleaved:

- ``pytest-alembic``: its ``test_single_head_revision``, ``test_upgrade``,
  ``test_model_definitions_match_ddl`` and ``test_up_down_consistency``, with an
  ``alembic_engine`` on pytest-postgresql's per-test ``postgresql`` database (its
  documented set-up); pytest-alembic 0.13.1 is installed into the scratch directory
  with ``pip install --target`` and put on that run's path only (its ``--test-alembic``
  collection fails on pytest 9, so the tests are imported into a test module, as its
  documentation also allows);
- ``dbtoolkit``: the five checks of ``--dbtoolkit-check-migrations``, first run (fresh
  project and cache), second run (history unchanged) and after the last revision
  changed (the run after the second: the last revision names its index differently,
  and so do the models).

Every run first runs one ordinary database test, which starts the server (and, for
dbtoolkit, migrates the template), and ends with another, whose teardown stops the
server: what is measured is what the checks add to a run that has database tests
anyway. "Checks' time" is, for pytest-alembic, the set-up,
call and teardown of its four tests; for dbtoolkit, that of its five items plus the
collection of alembic.ini and the pytest header (where dbtoolkit reads the history and
looks its keys up in the cache). Whole-process times are shown too. Medians of the
rounds; only the ratios mean anything on a shared machine.
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
from importlib.metadata import version
from pathlib import Path

PYTEST_ALEMBIC = "pytest-alembic==0.13.1"

MODELS = '''\
"""The benchmark schema at the head of its 33 revisions."""

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    __table_args__ = (sa.Index("ix_users_email", "email", unique=True),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    email: Mapped[str] = mapped_column(sa.String(320))
    active: Mapped[bool] = mapped_column(server_default=sa.true())
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now()
    )


class Post(Base):
    __tablename__ = "posts"
    __table_args__ = (sa.Index("ix_posts_user_id", "user_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    title: Mapped[str | None] = mapped_column(sa.String(200))


for _k in range(1, 14):
    sa.Table(
        f"tags{_k}",
        Base.metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("label", sa.String(50)),
        sa.Index(f"ix_tags{_k}_label" if _k < 13 else "ix_tags13_label", "label"),
    )
'''

ALEMBIC_INI = """\
[alembic]
script_location = %(here)s/migrations
path_separator = os
sqlalchemy.url = postgresql+psycopg2://localhost/set_by_the_caller
"""

# Alembic's own template, less logging, with its recipe for a shared connection:
# pytest-alembic hands env.py an engine in config.attributes["connection"], dbtoolkit a
# connection when it migrates the template, and a URL (sqlalchemy.url) for the checks.
ENV_PY = """\
from alembic import context
from sqlalchemy import Connection, create_engine, pool

from bench_models import Base

target_metadata = Base.metadata
url = context.config.get_main_option("sqlalchemy.url")


def run(connection):
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    given = context.config.attributes.get("connection")
    if isinstance(given, Connection):
        run(given)
    else:
        with (given or create_engine(url, poolclass=pool.NullPool)).connect() as connection:
            run(connection)
"""

REVISION = '''\
"""{doc}"""

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = {down_revision!r}


def upgrade():
    {upgrade}


def downgrade():
    {downgrade}
'''

ID = 'sa.Column("id", sa.Integer, primary_key=True)'
ACTIVE = 'sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true())'
CREATED = (
    'sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, '
    "server_default=sa.func.now())"
)
# (docstring, upgrade, downgrade) of each revision.
HISTORY = [
    (
        "Users.",
        f'op.create_table("users", {ID}, sa.Column("name", sa.String(200), nullable=False))',
        'op.drop_table("users")',
    ),
    (
        "User emails.",
        'op.add_column("users", sa.Column("email", sa.String(320), nullable=False))',
        'op.drop_column("users", "email")',
    ),
    (
        "Unique emails.",
        'op.create_index("ix_users_email", "users", ["email"], unique=True)',
        'op.drop_index("ix_users_email", "users")',
    ),
    ("Inactive users.", f'op.add_column("users", {ACTIVE})', 'op.drop_column("users", "active")'),
    (
        "User creation time.",
        f'op.add_column("users", {CREATED})',
        'op.drop_column("users", "created_at")',
    ),
    (
        "Posts.",
        f'op.create_table("posts", {ID}, sa.Column("user_id", sa.Integer, '
        'sa.ForeignKey("users.id"), nullable=False), sa.Column("title", sa.String(200)))',
        'op.drop_table("posts")',
    ),
    (
        "Posts by user.",
        'op.create_index("ix_posts_user_id", "posts", ["user_id"])',
        'op.drop_index("ix_posts_user_id", "posts")',
    ),
]
for _k in range(1, 14):
    HISTORY += [
        (
            f"Tag list {_k}.",
            f'op.create_table("tags{_k}", {ID}, sa.Column("label", sa.String(50)))',
            f'op.drop_table("tags{_k}")',
        ),
        (
            f"Tags {_k} by label.",
            f'op.create_index("ix_tags{_k}_label", "tags{_k}", ["label"])',
            f'op.drop_index("ix_tags{_k}_label", "tags{_k}")',
        ),
    ]

DBTOOLKIT_INI = """\
[pytest]
dbtoolkit_alembic_ini = alembic.ini
dbtoolkit_check_migrations = true
asyncio_default_fixture_loop_scope = function
"""

FIRST_TEST = """\
from sqlalchemy import text


def test_first(db_session):
    assert db_session.scalar(text("SELECT count(*) FROM users")) == 0
"""

# Runs last, so that the session's teardown (stopping the server, saving its data
# directory) is not counted as the last check's.
LAST_TEST = FIRST_TEST.replace("test_first", "test_last")

PYTEST_ALEMBIC_INI = """\
[pytest]
asyncio_default_fixture_loop_scope = function
"""

PYTEST_ALEMBIC_CONFTEST = """\
import pytest
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool


@pytest.fixture
def alembic_config():
    return {"file": "alembic.ini"}


@pytest.fixture
def alembic_engine(postgresql):
    info = postgresql.info
    url = f"postgresql+psycopg2://{info.user}@{info.host}:{info.port}/{info.dbname}"
    engine = create_engine(url, poolclass=NullPool)
    yield engine
    engine.dispose()
"""

PYTEST_ALEMBIC_FIRST = """\
def test_first(postgresql):
    with postgresql.cursor() as cursor:
        cursor.execute("SELECT 1")
"""
PYTEST_ALEMBIC_LAST = PYTEST_ALEMBIC_FIRST.replace("test_first", "test_last")

PYTEST_ALEMBIC_TESTS = """\
from pytest_alembic.tests import (  # noqa: F401
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
"""

# Records, in $BENCH_TIMING, the set-up, call and teardown of the check items, the
# collection of alembic.ini and the header.
TIMING_PLUGIN = '''\
"""Time what the migration checks cost a run."""

import json
import os
import time

import pytest

CHECKS = {
    "test_single_head_revision", "test_upgrade", "test_model_definitions_match_ddl",
    "test_up_down_consistency",
}
spent = {"items": 0.0, "collect": 0.0, "header": 0.0}


def is_check(nodeid):
    return nodeid.startswith("alembic.ini") or nodeid.rsplit("::", 1)[-1] in CHECKS


@pytest.hookimpl(wrapper=True)
def pytest_report_header(config):
    start = time.perf_counter()
    try:
        return (yield)
    finally:
        spent["header"] += time.perf_counter() - start


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    start = time.perf_counter()
    try:
        return (yield)
    finally:
        if collector.nodeid == "alembic.ini":
            spent["collect"] += time.perf_counter() - start


def pytest_runtest_logreport(report):
    if is_check(report.nodeid):
        spent["items"] += report.duration


def pytest_sessionfinish(session):
    with open(os.environ["BENCH_TIMING"], "w") as out:
        json.dump(spent, out)
'''

# Runs pg_ctl for pytest-postgresql when pytest runs as root (PostgreSQL refuses root),
# as benchmarks/run.py does.
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


def write_project(directory: Path, files: dict[str, str]) -> Path:
    """Write the history, the models and ``files`` into ``directory``."""
    versions = directory / "migrations" / "versions"
    versions.mkdir(parents=True)
    (directory / "alembic.ini").write_text(ALEMBIC_INI)
    (directory / "migrations" / "env.py").write_text(ENV_PY)
    (directory / "bench_models.py").write_text(MODELS)
    previous = None
    for number, (doc, upgrade, downgrade) in enumerate(HISTORY, 1):
        revision = f"{number:04d}"
        (versions / f"{revision}.py").write_text(
            REVISION.format(
                doc=doc,
                revision=revision,
                down_revision=previous,
                upgrade=upgrade,
                downgrade=downgrade,
            )
        )
        previous = revision
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


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
    """Writes the projects and runs them, timed."""

    def __init__(self, root: Path, pg_ctl: str) -> None:
        self.root = root
        self.common = root / "common"
        self.common.mkdir()
        (self.common / "bench_check_timing.py").write_text(TIMING_PLUGIN)
        packages = root / "pytest_alembic"
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps"]
        subprocess.run([*pip, "--target", str(packages), PYTEST_ALEMBIC], check=True)
        self.pytest_alembic_path = packages
        self.pytest_alembic_project = write_project(
            root / "pytest_alembic_project",
            {
                "pytest.ini": PYTEST_ALEMBIC_INI,
                "conftest.py": PYTEST_ALEMBIC_CONFTEST,
                "test_a_first.py": PYTEST_ALEMBIC_FIRST,
                "test_migrations.py": PYTEST_ALEMBIC_TESTS,
                "test_z_last.py": PYTEST_ALEMBIC_LAST,
            },
        )
        self.postgresql_args: list[str] = []
        if os.geteuid() == 0:
            launcher = root / "pg_ctl_as_postgres"
            launcher.write_text(
                LAUNCHER.format(
                    python=sys.executable, scratch=str(root), user="postgres", pg_ctl=pg_ctl
                )
            )
            launcher.chmod(0o700)
            (root / "basetemp").mkdir()
            root.chmod(0o711)
            self.postgresql_args = [
                f"--postgresql-exec={launcher}",
                f"--basetemp={root / 'basetemp' / 'run'}",
            ]
        self.env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS") and not key.startswith("DBTOOLKIT_")
        }
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
        self.rounds = 0

    def run(
        self, project: Path, args: list[str], path: list[Path], passed: int
    ) -> dict[str, float]:
        """Run pytest in ``project``; return the whole process's and the checks' time."""
        timing = self.root / "timing.json"
        env = dict(self.env, BENCH_TIMING=str(timing))
        env["PYTHONPATH"] = os.pathsep.join(str(entry) for entry in [self.common, *path])
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly"]
        command += ["-p", "bench_check_timing", *args]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        found = re.search(r"(\d+) passed", done.stdout)
        if done.returncode != 0 or not found or int(found[1]) != passed:
            sys.exit(f"failed in {project}: {' '.join(command)}\n{done.stdout}\n{done.stderr}")
        spent = json.loads(timing.read_text())
        return {"wall": wall, "checks": spent["items"] + spent["collect"] + spent["header"]}

    def pytest_alembic(self) -> dict[str, float]:
        """pytest-alembic's four built-in tests, after one database test."""
        args = ["-p", "no:dbtoolkit", "-p", "no:cacheprovider", *self.postgresql_args]
        args += ["test_a_first.py", "test_migrations.py", "test_z_last.py"]
        project = self.pytest_alembic_project
        return self.run(project, args, [self.pytest_alembic_path, project], 6)

    def dbtoolkit(self) -> dict[str, dict[str, float]]:
        """dbtoolkit's five checks: first run, second run, after the last revision changed."""
        self.rounds += 1
        scratch = Path(tempfile.mkdtemp(dir=self.root))
        tests = {"test_first.py": FIRST_TEST, "test_last.py": LAST_TEST}
        project = write_project(scratch / "project", {"pytest.ini": DBTOOLKIT_INI, **tests})
        args = ["-o", f"cache_dir={scratch / 'cache'}", "test_first.py", "alembic.ini"]
        args.append("test_last.py")
        figures = {"first": self.run(project, args, [project], 7)}
        figures["second"] = self.run(project, args, [project], 7)
        # The last revision creates its index under another name, and the models say so.
        renamed = f"ix_tags13_label_{self.rounds}"
        for path in (project / "migrations" / "versions" / "0033.py", project / "bench_models.py"):
            path.write_text(path.read_text().replace('"ix_tags13_label"', f'"{renamed}"'))
        figures["changed"] = self.run(project, args, [project], 7)
        shutil.rmtree(scratch, ignore_errors=True)
        return figures


def main() -> None:
    """Measure, then print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds")
    parser.add_argument("-r", "--repeat", type=int, help="Interleaved rounds (default 5)")
    parser.add_argument("--keep", action="store_true", help="Keep the generated projects")
    args = parser.parse_args()
    repeat = args.repeat or (2 if args.quick else 5)
    pg_ctl = find_pg_ctl()
    load = os.getloadavg()[0]
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="dbtoolkit-bench-checks-"))
    rounds: list[dict[str, float]] = []
    try:
        runner = Runner(root, pg_ctl)
        runner.pytest_alembic()  # warm-up: bytecode caches
        runner.dbtoolkit()
        for number in range(1, repeat + 1):
            figures = {f"pytest-alembic:{k}": v for k, v in runner.pytest_alembic().items()}
            for run, times in runner.dbtoolkit().items():
                figures.update({f"{run}:{k}": v for k, v in times.items()})
            rounds.append(figures)
            print(f"round {number}/{repeat}: {json.dumps(figures)}", file=sys.stderr, flush=True)
    finally:
        if args.keep:
            print(f"generated projects kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(header(pg_ctl, repeat, load, time.perf_counter() - started))
    print(table(rounds))


def header(pg_ctl: str, repeat: int, load: float, took: float) -> str:
    """The machine and the versions the figures were measured with."""
    output = subprocess.run([pg_ctl, "--version"], capture_output=True, text=True).stdout
    pg = re.search(r"\(PostgreSQL\) (\S+)", output)
    packages = ", ".join(
        f"{name} {version(name)}"
        for name in ("pytest", "dbtoolkit", "pytest-postgresql", "alembic", "SQLAlchemy")
    )
    return (
        f"- machine: {os.cpu_count()} cores ({platform.machine()}, {platform.system()}), "
        f"PostgreSQL {pg[1] if pg else '?'}\n"
        f"- Python {platform.python_version()}, {packages}, {PYTEST_ALEMBIC}\n"
        f"- history of {len(HISTORY)} revisions; {repeat} rounds; took {took:.0f} s; load "
        f"average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end\n"
    )


def table(rounds: list[dict[str, float]]) -> str:
    """Medians [min-max] of each figure and ratio, with the targets."""
    rows = [
        ("pytest-alembic, 4 built-in tests: checks' time", "pytest-alembic:checks", None),
        ("dbtoolkit, 5 checks, first run: checks' time", "first:checks", None),
        ("dbtoolkit, 5 checks, second run (unchanged): checks' time", "second:checks", ("<", 0.05)),
        ("dbtoolkit, 5 checks, last revision changed: checks' time", "changed:checks", None),
        ("pytest-alembic: whole process", "pytest-alembic:wall", None),
        ("dbtoolkit, first run: whole process", "first:wall", None),
        ("dbtoolkit, second run: whole process", "second:wall", None),
        ("dbtoolkit, last revision changed: whole process", "changed:wall", None),
    ]
    lines = ["| measure | median [min\N{EN DASH}max] | target | holds |", "|---|---|---|---|"]

    def line(label: str, values: list[float], unit: str, target: tuple[str, float] | None) -> None:
        median = statistics.median(values)
        cell = f"{median:.3f}{unit} [{min(values):.3f}\N{EN DASH}{max(values):.3f}]"
        goal = holds = ""
        if target:
            op, bound = target
            goal = f"{op} {bound:.2f}{unit}"
            ok = median < bound if op == "<" else median <= bound
            holds = "yes" if ok else "**no**"
        lines.append(f"| {label} | {cell} | {goal} | {holds} |")

    for label, key, target in rows:
        line(label, [r[key] for r in rounds], " s", target)
    ratios = [
        ("**dbtoolkit first run / pytest-alembic (checks' time)**", "first", "pytest-alembic", 1.0),
        ("**last revision changed / first run (checks' time)**", "changed", "first", 1 / 3),
        ("dbtoolkit first run / pytest-alembic (whole process)", "first", "pytest-alembic", None),
    ]
    for label, a, b, bound in ratios:
        measure = "wall" if "whole" in label else "checks"
        values = [r[f"{a}:{measure}"] / r[f"{b}:{measure}"] for r in rounds]
        line(label, values, "", ("<=", bound) if bound else None)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
