"""cache.key: a saved data directory is keyed by every file of the Alembic history.

In-process, on whichever Alembic is installed; CI's lowest-versions job runs it on
Alembic 1.13, where ``ScriptDirectory.version_locations`` is None unless alembic.ini
sets it. The migration checks read the same files, so their history is tested here too.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dbtoolkit import cache, migrations, schema
from dbtoolkit.settings import Settings

# A user's project, whose alembic.ini is as `alembic init` writes it: no version_locations.
EXAMPLE = Path(__file__).parent / "examples" / "install_project"
SERVER = ("/usr/lib/postgresql/15/bin/pg_ctl", "15.20", "postgres", None)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return Path(shutil.copytree(EXAMPLE, tmp_path / "project"))


def key(project: Path) -> str:
    return cache.key(schema.alembic_config(project / "alembic.ini"), *SERVER)


def change(path: Path) -> None:
    path.write_text(path.read_text() + "\n# changed\n")


def test_without_version_locations_the_key_covers_the_script_directory(project: Path) -> None:
    assert (
        schema.alembic_config(project / "alembic.ini").get_main_option("version_locations") is None
    )
    first = key(project)
    assert key(project) == first
    change(project / "alembic" / "versions" / "2b3c4d5e6f7a_orders.py")
    second = key(project)
    assert second != first
    change(project / "alembic" / "env.py")
    assert key(project) != second


def test_the_migration_checks_read_a_history_without_version_locations(
    project: Path, dbtoolkit_settings: Settings, tmp_path: Path
) -> None:
    settings = dataclasses.replace(
        dbtoolkit_settings, alembic_ini=project / "alembic.ini", script_location=None
    )
    history = migrations.History.load(settings, "PostgreSQL 15", tmp_path / "index")
    assert [revision.id for revision in history.revisions] == ["1a2b3c4d5e6f", "2b3c4d5e6f7a"]


def test_the_key_covers_version_locations_outside_the_script_directory(project: Path) -> None:
    elsewhere = project / "more_versions"
    shutil.move(project / "alembic" / "versions", elsewhere)
    ini = project / "alembic.ini"
    ini.write_text(
        ini.read_text().replace(
            "[alembic]\n", "[alembic]\nversion_locations = %(here)s/more_versions\n"
        )
    )
    first = key(project)
    change(elsewhere / "2b3c4d5e6f7a_orders.py")
    assert key(project) != first


@pytest.fixture
def importable(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The project's root on sys.path, and its shop package forgotten afterwards."""
    monkeypatch.syspath_prepend(str(project))
    yield project
    sys.modules.pop("shop", None)


def test_the_key_covers_version_locations_named_as_package_resources(importable: Path) -> None:
    # Alembic reads "package:path" from the installed package, wherever that is. The
    # colon is os.pathsep here, so the paths in alembic.ini are separated by spaces.
    shutil.move(importable / "alembic" / "versions", importable / "shop" / "versions")
    ini = importable / "alembic.ini"
    settings = ini.read_text().replace("path_separator = os", "path_separator = space")
    ini.write_text(
        settings.replace("[alembic]\n", "[alembic]\nversion_locations = shop:versions\n")
    )
    first = key(importable)
    change(importable / "shop" / "versions" / "2b3c4d5e6f7a_orders.py")
    assert key(importable) != first


def saved_entry(path: Path) -> Path:
    (path / "data").mkdir(parents=True)
    (path / "data" / "PG_VERSION").write_text("15\n")
    return path / "data"


def test_a_copy_a_killed_run_left_half_made_is_never_used_and_is_pruned(tmp_path: Path) -> None:
    whole = saved_entry(tmp_path / "aaa")
    dead = saved_entry(tmp_path / f"{cache.PARTIAL}{2**22 + 1}-1-x1")  # pid above pid_max
    live = saved_entry(tmp_path / f"{cache.partial_prefix()}x2")  # this process's, copying
    assert cache.saved(tmp_path) == [whole]
    assert cache.newest(tmp_path, other_than="bbb") == whole

    assert cache.destination(tmp_path, "bbb") == tmp_path / "bbb"
    assert not dead.parent.exists()
    assert live.is_dir()
