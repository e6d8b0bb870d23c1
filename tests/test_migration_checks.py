"""The migration checks (dbtoolkit.migrations, collected by dbtoolkit.collect).

Each broken history is the ``shelf`` project in tests/examples/checked plus the files
of one variant folder laid over it, run as a whole pytest process. ``at_revision`` is
also tested in this run, on the sample project's history.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import forkserver
import pytest
from catalog import run_in_process
from sqlalchemy import text

from dbtoolkit import migrations
from dbtoolkit.errors import ConfigError, HistoryError

EXAMPLES = Path(__file__).parent / "examples"
SHELF_TEST = """
from sqlalchemy import text


def test_the_database_is_at_head(db_session):
    assert db_session.scalar(text("SELECT version_num FROM alembic_version")) == "0003"
"""


def shelf(pytester: pytest.Pytester, *variants: str) -> Path:
    """Write the shelf project, with the files of ``variants`` laid over it."""
    for name in ("checked", *variants):
        shutil.copytree(
            EXAMPLES / name,
            pytester.path,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    return pytester.path


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return forkserver.runpytest(pytester, "-p", "no:randomly", "-rfE", *args, timeout=300)


def revision(project: Path, name: str) -> str:
    """How a failure names a revision of the shelf: id, docstring, file."""
    docs = {
        "0002": (
            "0002_books.py",
            "Create books, each in a format, and a function that counts them.",
        ),
        "0003": ("0003_author_emails.py", "Give authors an email address."),
        "0003p": ("0003_publishers.py", "Create publishers, on a branch of its own."),
    }
    filename, doc = docs[name]
    return f"{name} ({doc}; {project / 'migrations' / 'versions' / filename})"


def failure(result: pytest.RunResult, check: str) -> str:
    """The one-line report of a failed check (or test), as the run printed it."""
    title = check if check.startswith("test_") else f"migration check {check}"
    lines = result.outlines
    start = lines.index(next(line for line in lines if f" {title} " in line))
    return next(line for line in lines[start + 1 :] if not line.startswith("[gw"))


def upgrades(project: Path) -> int:
    """How often revision 0001's upgrade ran in the project (it counts itself)."""
    log = project / "upgrades.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_a_sound_history_passes_every_check_and_next_time_from_the_cache(pytester):
    project = shelf(pytester)
    pytester.makepyfile(test_shelf=SHELF_TEST)

    first = run(pytester, "-v")

    first.assert_outcomes(passed=6)
    first.stdout.fnmatch_lines(
        [
            "dbtoolkit: migration checks (from ini), history key *: "
            "none passed with this key before",
            "alembic.ini::single_head PASSED*",
            "alembic.ini::upgrade PASSED*",
            "alembic.ini::models_match PASSED*",
            "alembic.ini::stairway PASSED*",
            "alembic.ini::downgrade_leaves_no_trace PASSED*",
        ]
    )
    ran = upgrades(project)

    # Only the checks: nothing but them would set up the server.
    second = run(pytester, "alembic.ini", "--setup-show")

    second.assert_outcomes(passed=5)
    second.stdout.fnmatch_lines(
        [
            "dbtoolkit: migration checks (from ini), history key *: upgrade, models_match, "
            "stairway, downgrade_leaves_no_trace passed with this key before "
            "(--cache-clear checks again)"
        ]
    )
    assert "_dbtoolkit_provisioned" not in second.stdout.str()
    assert upgrades(project) == ran

    cleared = run(pytester, "alembic.ini", "--cache-clear")

    cleared.assert_outcomes(passed=5)
    cleared.stdout.fnmatch_lines(["*history key *: none passed with this key before"])
    assert upgrades(project) > ran


def test_after_the_last_revision_changed_the_checks_start_from_the_revision_before(pytester):
    project = shelf(pytester)
    run(pytester).assert_outcomes(passed=5)
    # The template once; the upgrade walk once; the stairway up, down and up again.
    assert upgrades(project) == 4
    last = project / "migrations" / "versions" / "0003_author_emails.py"
    last.write_text(last.read_text().replace("String(320)", "String(320)  "))

    run(pytester).assert_outcomes(passed=5)

    # Only the template's migration ran 0001 again: the checks cloned the copy at 0002.
    assert upgrades(project) == 5


def test_a_model_changed_without_a_migration_fails_models_match(pytester):
    shelf(pytester, "checked_model_drift")

    result = run(pytester)

    result.assert_outcomes(passed=4, failed=1)
    assert failure(result, "models_match") == (
        "HistoryError: the models (env.py's target_metadata) differ from the schema the "
        "migrations build; generate the revision they need with alembic revision "
        "--autogenerate, which would write:"
    )
    result.stdout.fnmatch_lines(
        ["    op.add_column('authors', sa.Column('born', sa.Integer(), nullable=True))"]
    )


def test_models_named_by_the_metadata_setting(pytester):
    shelf(pytester, "checked_model_drift")

    named = run(pytester, "--dbtoolkit-metadata=shelf_models:Base", "alembic.ini::models_match")
    missing = run(pytester, "--dbtoolkit-metadata=shelf_models:Nothing", "-k", "models_match")

    named.assert_outcomes(failed=1)
    assert failure(named, "models_match").startswith(
        "HistoryError: the models (shelf_models:Base (from cli)) differ from the schema"
    )
    missing.assert_outcomes(failed=1, deselected=4)
    assert failure(missing, "models_match") == (
        "ConfigError: dbtoolkit metadata 'shelf_models:Nothing' cannot be found (module "
        "'shelf_models' has no attribute 'Nothing'); fix --dbtoolkit-metadata (ini "
        "dbtoolkit_metadata), e.g. myapp.models:Base"
    )


def test_a_downgrade_that_leaves_its_function_behind(pytester):
    project = shelf(pytester, "checked_leaky_downgrade")

    result = run(pytester)

    result.assert_outcomes(passed=3, failed=2)
    assert failure(result, "downgrade_leaves_no_trace") == (
        f"HistoryError: the downgrade of revision {revision(project, '0002')} does not undo its "
        "upgrade: left behind: function public.book_count(); make it drop or restore what the "
        "upgrade changed"
    )
    assert failure(result, "stairway") == (
        f"HistoryError: revision {revision(project, '0002')} failed to upgrade again after its "
        'downgrade: DuplicateFunction: function "book_count" already exists with same argument '
        "types"
    )


def test_a_revision_that_fails_only_with_rows_in_its_table(pytester):
    project = shelf(pytester, "checked_data_breaks")

    result = run(pytester)

    # Empty tables take it: the upgrade check and the template pass.
    result.assert_outcomes(passed=3, failed=2)
    assert failure(result, "stairway") == (
        f"HistoryError: revision {revision(project, '0003')} failed to upgrade with the rows "
        f'{project / "shelf_rows.py"} gives for it: NotNullViolation: column "email" of '
        'relation "authors" contains null values'
    )


def test_a_data_migration_test_names_the_revision_that_fails(pytester):
    project = shelf(pytester, "checked_data_breaks")
    pytester.makepyfile(
        test_emails="""
        def test_authors_get_emails(at_revision):
            db = at_revision("0002")
            db.insert("authors", {"name": "Ada Lovelace"})
            db.upgrade("0003")
        """
    )

    result = run(pytester, "test_emails.py")

    result.assert_outcomes(failed=1)
    assert failure(result, "test_authors_get_emails") == (
        f"HistoryError: alembic upgrade 0003 failed in revision {revision(project, '0003')}: "
        'NotNullViolation: column "email" of relation "authors" contains null values'
    )


def test_two_heads_fail_single_head(pytester):
    project = shelf(pytester, "checked_two_heads")

    result = run(pytester, "alembic.ini")

    result.assert_outcomes(failed=5)
    assert failure(result, "single_head") == (
        f"HistoryError: the migration history has 2 heads: {revision(project, '0003')} and "
        f"{revision(project, '0003p')}; merge them with 'alembic merge heads'"
    )
    # The others need the history migrated, as every database test does.
    assert failure(result, "upgrade") == (
        "MigrationError: the migration history has 2 heads (0003, 0003p); merge them with "
        "'alembic merge heads'"
    )


def test_a_downgrade_that_cannot_be_done_is_exempted_by_name(pytester):
    project = shelf(pytester, "checked_irreversible")

    refused = run(pytester, "alembic.ini")
    exempted = run(pytester, "alembic.ini", "--dbtoolkit-irreversible=0003")
    unknown = run(pytester, "alembic.ini::stairway", "--dbtoolkit-irreversible=0004")

    refused.assert_outcomes(passed=3, failed=2)
    assert failure(refused, "stairway") == (
        f"HistoryError: the downgrade of revision {revision(project, '0003')} raises "
        "NotImplementedError; if it cannot be undone, exempt it with "
        "--dbtoolkit-irreversible=0003 (ini dbtoolkit_irreversible)"
    )
    exempted.assert_outcomes(passed=5)
    unknown.assert_outcomes(failed=1)
    assert failure(unknown, "stairway") == (
        "ConfigError: dbtoolkit irreversible names 0004, not a revision of the history in "
        f"{project / 'migrations'}; fix --dbtoolkit-irreversible (ini dbtoolkit_irreversible)"
    )


def test_under_xdist_each_check_runs_once_on_some_worker(pytester):
    project = shelf(pytester, "checked_leaky_downgrade")
    pytester.makepyfile(test_shelf=SHELF_TEST)

    result = run(pytester, "-n", "2")

    result.assert_outcomes(passed=4, failed=2)
    assert failure(result, "stairway").startswith(
        f"HistoryError: revision {revision(project, '0002')} failed to upgrade again after"
    )
    assert failure(result, "downgrade_leaves_no_trace").endswith(
        "left behind: function public.book_count(); make it drop or restore what the upgrade "
        "changed"
    )


def test_the_checks_are_collected_with_directories_not_with_chosen_files(pytester):
    shelf(pytester)
    pytester.makepyfile(test_shelf=SHELF_TEST)

    # Collecting needs no server, and binds no factories: in-process.
    directory = run_in_process(pytester, ".", "--co", "-q")
    chosen = run_in_process(pytester, "test_shelf.py", "--co", "-q")
    off = run_in_process(pytester, "--co", "-q", "--dbtoolkit-check-migrations=false")

    assert "alembic.ini::stairway" in directory.stdout.str()
    assert "alembic.ini" not in chosen.stdout.str()
    assert "alembic.ini" not in off.stdout.str()
    off.stdout.fnmatch_lines(["test_shelf.py::test_the_database_is_at_head", "1 test collected*"])


# --- at_revision, on this repository's own history -------------------------------------


def test_0004_backfills_slugs_for_existing_organizations(at_revision):
    db = at_revision("0003")
    db.insert("organizations", [{"name": "Acme, Inc."}, {"name": "Яндекс"}])

    db.upgrade("0004")

    assert db.revision == "0004"
    slugs = dict(db.execute("SELECT name, slug FROM organizations ORDER BY id"))
    assert slugs["Acme, Inc."].startswith("acme-inc-")
    assert slugs["Яндекс"].startswith("org-")
    assert "slug" in db.table("organizations").columns


def test_at_revision_clones_the_copy_it_made_and_drops_its_databases(at_revision, engine):
    first = at_revision("0002")
    second = at_revision("0002")

    with engine.connect() as connection:
        names = set(connection.scalars(text("SELECT datname FROM pg_database")))
    history = first.history
    assert migrations.COPY + history.find("0002").key in names
    assert {first.url.database, second.url.database} <= names
    assert first.url != second.url
    assert second.revision == "0002"
    assert second.scalar("SELECT count(*) FROM users") == 0


def test_at_revision_names_an_unknown_revision(at_revision):
    with pytest.raises(ConfigError, match=r"^'0099' is not a revision of the history in .*"):
        at_revision("0099")


def test_a_downgrade_through_at_revision(at_revision):
    db = at_revision("0005")

    db.downgrade("0004")

    assert db.revision == "0004"
    assert "owner_id" not in db.table("organizations").columns
    with pytest.raises(HistoryError) as raised:
        db.downgrade("0099")
    assert str(raised.value) == (
        "alembic downgrade 0099 failed: CommandError: Can't locate revision identified by '0099'"
    )


# --- The snapshot difference -----------------------------------------------------------


def test_a_difference_names_what_was_left_missing_and_changed():
    before = {
        ("schema", "public"): "",
        ("column", "public.users.name"): "character varying(200) NOT NULL",
        ("table", "public.users"): "",
    }
    after = {
        ("schema", "public"): "",
        ("column", "public.users.name"): "character varying(100) NOT NULL",
        ("table", "public.users"): "",
        ("table", "public.audit"): "",
        ("column", "public.audit.id"): "integer NOT NULL",
        ("sequence", "public.audit_id_seq"): "",
        ("type", "public.mood"): "e: happy, sad",
    }

    assert migrations._difference(before, before) == ""
    assert migrations._difference(before, after) == (
        "left behind: table public.audit, sequence public.audit_id_seq, type public.mood; "
        "changed: column public.users.name (character varying(200) NOT NULL -> "
        "character varying(100) NOT NULL)"
    )
    assert migrations._difference(after, before).startswith("missing: table public.audit, ")


# --- Reading the history ---------------------------------------------------------------


def test_the_order_of_the_revisions_is_read_from_the_index_until_a_file_changes(
    tmp_path, monkeypatch, dbtoolkit_settings
):
    first = migrations.History.load(dbtoolkit_settings, "PostgreSQL 15", tmp_path)
    (index,) = tmp_path.glob("history-*.json")

    def refuse(*args: object) -> None:
        raise AssertionError("the revision files were run again")

    monkeypatch.setattr(migrations.ScriptDirectory, "walk_revisions", refuse)
    second = migrations.History.load(dbtoolkit_settings, "PostgreSQL 15", tmp_path)
    other_server = migrations.History.load(dbtoolkit_settings, "PostgreSQL 16", tmp_path)

    assert [r.id for r in first.revisions] == ["0001", "0002", "0003", "0004", "0005"]
    assert second.revisions == first.revisions
    assert second.heads == first.heads == ("0005",)
    assert other_server.key != first.key
    index.unlink()
    with pytest.raises(AssertionError, match="run again"):
        migrations.History.load(dbtoolkit_settings, "PostgreSQL 15", tmp_path)
