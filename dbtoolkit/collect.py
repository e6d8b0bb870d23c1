"""The migration checks as test items, collected from the project's alembic.ini.

With ``--dbtoolkit-check-migrations``, a run that collects whole directories (``pytest``,
``pytest tests/``) also collects alembic.ini, and naming it collects it too (``pytest
alembic.ini::stairway``). Its items are the checks of ``dbtoolkit.migrations``, one per
node id, so they are selected, deselected, spread over xdist workers and reported like
any test. A check whose keys passed in an earlier run passes again without touching a
database; the others ask for the run's server and work in scratch databases on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dbtoolkit.errors import DbtoolkitError, HistoryError, ServerError
from dbtoolkit.fixtures import STATE
from dbtoolkit.server import Server, binary_version, find_pg_ctl, postgresql_config
from dbtoolkit.settings import Settings

if TYPE_CHECKING:  # imported once the checks are on: every run collects through here
    from dbtoolkit import migrations

# Which walk of the history each check comes from.
WALKS = {
    "upgrade": "up",
    "models_match": "up",
    "stairway": "stairs",
    "downgrade_leaves_no_trace": "stairs",
}


def add_alembic_ini(config: pytest.Config, settings: Settings) -> None:
    """Collect alembic.ini too when the checks are on and the run collects directories.

    A run of chosen files or tests (``pytest tests/test_x.py``) stays as it was asked.
    """
    root = config.invocation_params.dir
    paths = [root / arg.split("::")[0] for arg in config.args]
    ini = settings.alembic_ini.resolve()
    if settings.check_migrations and ini.is_file() and all(path.is_dir() for path in paths):
        config.args.append(str(ini))


def checks_file(file_path: Path, parent: pytest.Collector) -> MigrationChecks | None:
    """The collector of the checks, for the alembic.ini the settings name."""
    settings = parent.config.stash[STATE].settings
    if settings.check_migrations and file_path == settings.alembic_ini.resolve():
        return MigrationChecks.from_parent(parent, path=file_path)
    return None


def plan_for(config: pytest.Config) -> migrations.Plan:
    """What the checks have to do in this process, worked out once (no database)."""
    from dbtoolkit import migrations
    from dbtoolkit.cache import CHECKS

    state = config.stash[STATE]
    if state.checks is None:
        try:
            version = binary_version(find_pg_ctl(postgresql_config(config)))
        except ServerError:
            version = "unknown"  # no server to check on: the checks will say why
        cache = getattr(config, "cache", None)  # absent with -p no:cacheprovider
        root = cache.mkdir("dbtoolkit") if cache else None
        index = root / CHECKS if root else None
        state.checks = migrations.Plan.make(state.migration_history(version, index), root)
    return state.checks


def header(config: pytest.Config) -> str:
    """The header line: the key, and which checks pass from the cache."""
    from dbtoolkit import migrations

    source = config.stash[STATE].settings.sources["check_migrations"]
    try:
        plan = plan_for(config)
    except DbtoolkitError as exc:
        return f"dbtoolkit: migration checks (from {source}): {exc}"
    cached = [check for check in migrations.CHECKS if check in plan.cached]
    said = (
        f"{', '.join(cached)} passed with this key before (--cache-clear checks again)"
        if cached
        else "none passed with this key before"
    )
    return f"dbtoolkit: migration checks (from {source}), history key {plan.history.key}: {said}"


class MigrationChecks(pytest.File):
    """alembic.ini, whose items are the migration checks; it runs each walk once."""

    def collect(self) -> Iterator[pytest.Item]:
        """One item per check; under xdist, ask for the server if any will need it."""
        from dbtoolkit import migrations

        try:
            cached = plan_for(self.config).cached
        except DbtoolkitError:
            cached = set()  # each check fails with the error
        self.failures: dict[str, dict[str, str]] = {}
        for check in migrations.CHECKS:
            item = MigrationCheck.from_parent(self, name=check, callobj=self._check(check))
            item.needs_server = check in WALKS and check not in cached
            yield item

    def _check(self, check: str) -> Callable[[pytest.FixtureRequest], None]:
        def run(request: pytest.FixtureRequest) -> None:
            from dbtoolkit import migrations

            plan = plan_for(self.config)
            if check in plan.cached:
                return
            if check == "single_head":
                migrations.single_head(plan.history)
                return
            if isinstance(error := plan.error(check), DbtoolkitError):
                raise error
            # Asked for here, not as an argument: a failing migration fails this check.
            server: Server = request.getfixturevalue("dbtoolkit_server")
            failure = self._walk(WALKS[check], plan, server).get(check)
            if failure is not None:
                raise HistoryError(failure)
            plan.record(check)

        return run

    def _walk(self, walk: str, plan: migrations.Plan, server: Server) -> dict[str, str]:
        from dbtoolkit import migrations

        if walk in self.failures:
            return self.failures[walk]
        workspace = self.config.stash[STATE].migration_workspace(server)
        if walk == "up":
            models = plan.models if isinstance(plan.models, migrations.Models) else None
            failures = migrations.walk_up(plan.history, workspace, models)
        else:
            assert isinstance(plan.rows, migrations.Rows)
            failures = migrations.walk_stairs(plan.history, workspace, plan.rows, plan.cache_root)
        self.failures[walk] = failures
        return failures


def needs_server(item: pytest.Item) -> bool:
    """Whether ``item`` is a migration check that will work on the run's server."""
    return isinstance(item, MigrationCheck) and item.needs_server


class MigrationCheck(pytest.Function):
    """One migration check; reported as ``alembic.ini::<check>``."""

    needs_server = False  # it asks for the server when it runs, not as a fixture

    def reportinfo(self) -> tuple[Path, None, str]:
        """Where the check is reported: alembic.ini, with no line of its own."""
        return self.path, None, f"migration check {self.name}"
