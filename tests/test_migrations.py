"""The Alembic history builds the schema the models describe, and runs both ways.

Each test that migrates works in a scratch database of its own on the test server,
created and dropped by dbtoolkit.schema.created_database; the test database that
db_session uses is only read.
"""

import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import forkserver
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from dbtoolkit import schema
from dbtoolkit.fixtures import STATE
from dbtoolkit.models import Base
from dbtoolkit.place import PREFIX

REPO = Path(__file__).resolve().parents[1]
ALEMBIC_INI = REPO / "alembic.ini"
MODEL_TABLES = {"organizations", "users", "projects"}
SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
OWNER_FK = "fk_organizations_owner_id_users"
# Referenced table, ON DELETE SET NULL ('n'), DEFERRABLE, INITIALLY DEFERRED.
DEFERRED_OWNER_FK = ("users", "n", True, True)


def revisions() -> list[str]:
    """The revisions from the first to the head; the history must be one line."""
    scripts = ScriptDirectory.from_config(schema.alembic_config(ALEMBIC_INI))
    assert len(scripts.get_heads()) == 1
    return [script.revision for script in reversed(list(scripts.walk_revisions()))]


@pytest.fixture
def scratch_url(dbtoolkit_server, pytestconfig) -> Iterator[URL]:
    # Named and marked like the run's own databases, so a killed run's are cleaned up.
    run = pytestconfig.stash[STATE].place.run
    name = f"{PREFIX}{run}_scratch_{uuid.uuid4().hex[:8]}"
    with schema.created_database(dbtoolkit_server.url(), name, run=run) as url:
        yield url


@pytest.fixture
def scratch_engine(scratch_url):
    engine = create_engine(scratch_url, poolclass=NullPool)
    yield engine
    engine.dispose()


def current_revision(engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def schema_snapshot(engine) -> dict[str, dict[str, object]]:
    """What Postgres says about the schema's tables (not alembic_version's bookkeeping)."""
    with engine.connect() as connection:
        inspector = inspect(connection)
        return {
            table: {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], c["default"])
                    for c in inspector.get_columns(table)
                ],
                "pk": inspector.get_pk_constraint(table)["constrained_columns"],
                "fks": sorted(
                    (fk["name"], tuple(fk["constrained_columns"]), fk["referred_table"])
                    for fk in inspector.get_foreign_keys(table)
                ),
                "uniques": sorted(
                    (u["name"], tuple(u["column_names"]))
                    for u in inspector.get_unique_constraints(table)
                ),
                "checks": sorted(
                    (c["name"], c["sqltext"]) for c in inspector.get_check_constraints(table)
                ),
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(table)
                ),
            }
            for table in sorted(inspector.get_table_names())
            if table != "alembic_version"
        }


def owner_foreign_key(engine) -> tuple[str, str, bool, bool] | None:
    """The referenced table, ON DELETE action and timing of organizations' owner key."""
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT confrelid::regclass::text, confdeltype, condeferrable, condeferred "
                "FROM pg_constraint "
                "WHERE conrelid = 'organizations'::regclass AND conname = :name"
            ),
            {"name": OWNER_FK},
        ).one_or_none()
    return None if row is None else tuple(row)


def column_names(engine, table: str) -> set[str]:
    with engine.connect() as connection:
        return {c["name"] for c in inspect(connection).get_columns(table)}


def table_names(engine) -> set[str]:
    with engine.connect() as connection:
        return set(inspect(connection).get_table_names())


def model_differences(engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return compare_metadata(context, Base.metadata)


def alembic_cli(url: URL, *arguments: str) -> str:
    """Run the alembic command line as a user would, from the project root.

    ``python -m alembic``, forked from the process that has imported Alembic already.
    """
    argv = ["-m", "alembic", "-c", str(ALEMBIC_INI), "-x", f"url={url.render_as_string(False)}"]
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "output"
        with forkserver.streams(output, output) as fds:
            run = forkserver.Run([*argv, *arguments], dict(os.environ), fds, cwd=str(REPO))
        returncode = run.wait(timeout=120)
        text = output.read_text()
    assert returncode == 0, text
    return text


def test_history_is_one_line_ending_at_0005():
    history = revisions()
    assert history[-1] == "0005"
    assert schema.head_revision(schema.alembic_config(ALEMBIC_INI)) == "0005"
    assert len(history) == len(set(history))


def test_models_match_the_migrated_test_database(engine):
    assert current_revision(engine) == revisions()[-1]
    assert model_differences(engine) == []


def test_models_differ_from_an_unmigrated_database(scratch_engine):
    # The comparison above is only worth something if it can see a difference.
    differences = model_differences(scratch_engine)
    assert {diff[1].name for diff in differences if diff[0] == "add_table"} == MODEL_TABLES


def test_command_line_upgrade_head_then_downgrade_base(scratch_url, scratch_engine):
    head = revisions()[-1]

    alembic_cli(scratch_url, "upgrade", "head")
    assert table_names(scratch_engine) == MODEL_TABLES | {"alembic_version"}
    assert current_revision(scratch_engine) == head
    assert model_differences(scratch_engine) == []
    assert f"{head} (head)" in alembic_cli(scratch_url, "current")

    alembic_cli(scratch_url, "downgrade", "base")
    assert table_names(scratch_engine) == {"alembic_version"}
    assert current_revision(scratch_engine) is None


def test_every_revision_upgrades_downgrades_and_upgrades_again(scratch_url, scratch_engine):
    config = schema.alembic_config(ALEMBIC_INI, scratch_url)
    previous = None
    for revision in revisions():
        before = schema_snapshot(scratch_engine)

        command.upgrade(config, "+1")
        assert current_revision(scratch_engine) == revision
        after = schema_snapshot(scratch_engine)
        assert after != before, f"{revision} changed nothing"

        command.downgrade(config, "-1")
        assert current_revision(scratch_engine) == previous
        assert schema_snapshot(scratch_engine) == before, f"{revision} downgrade left changes"

        command.upgrade(config, "+1")
        assert current_revision(scratch_engine) == revision
        assert schema_snapshot(scratch_engine) == after, f"{revision} differs on re-upgrade"
        previous = revision

    assert model_differences(scratch_engine) == []


def insert_organizations_then_upgrade(url: URL, engine, names: list[str]) -> dict[str, str]:
    config = schema.alembic_config(ALEMBIC_INI, url)
    command.upgrade(config, "0003")
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO organizations (name) VALUES (:name)"),
            [{"name": name} for name in names],
        )
    command.upgrade(config, "0004")
    with engine.connect() as connection:
        return dict(connection.execute(text("SELECT name, slug FROM organizations")).all())


def test_0004_backfills_distinct_lowercase_hyphenated_slugs(scratch_url, scratch_engine):
    names = ["Acme, Inc.", "Acme Inc", "  Globex -- Corporation  ", "ACME INC"]

    slugs = insert_organizations_then_upgrade(scratch_url, scratch_engine, names)

    assert set(slugs) == set(names)
    for name, slug in slugs.items():
        assert slug is not None, name
        assert SLUG.fullmatch(slug), (name, slug)
    assert len(set(slugs.values())) == len(names)
    assert slugs["Acme, Inc."].startswith("acme-inc-")
    assert slugs["  Globex -- Corporation  "].startswith("globex-corporation-")
    slug_column = next(
        c for c in inspect(scratch_engine).get_columns("organizations") if c["name"] == "slug"
    )
    assert slug_column["nullable"] is False


def test_0004_slug_of_a_name_without_latin_letters(scratch_url, scratch_engine):
    slugs = insert_organizations_then_upgrade(scratch_url, scratch_engine, ["Яндекс"])

    assert SLUG.fullmatch(slugs["Яндекс"]), slugs


def test_0005_owner_key_of_the_test_database_is_deferrable_initially_deferred(engine):
    assert owner_foreign_key(engine) == DEFERRED_OWNER_FK


def test_0005_downgrades_to_0004_and_upgrades_again(scratch_url, scratch_engine):
    config = schema.alembic_config(ALEMBIC_INI, scratch_url)

    command.upgrade(config, "0005")
    assert owner_foreign_key(scratch_engine) == DEFERRED_OWNER_FK
    assert "owner_id" in column_names(scratch_engine, "organizations")

    command.downgrade(config, "0004")
    assert owner_foreign_key(scratch_engine) is None
    assert "owner_id" not in column_names(scratch_engine, "organizations")

    command.upgrade(config, "0005")
    assert owner_foreign_key(scratch_engine) == DEFERRED_OWNER_FK
