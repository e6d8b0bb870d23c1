"""Saved data directories, so that the next run skips initdb and the migrations.

An entry is keyed by everything that decides its contents: the server binary and its
version, the role, and every file of the Alembic history. Change any of them and the
key changes; the old entry is never used again and is pruned. An entry that fails to
start or whose template is not at head is deleted and rebuilt, never an error.

Once the migrations have changed since a saved run, the freshly initialised data
directory, before any database is created, is saved too (under ``initdb/``, keyed
without the Alembic history): after the next change, the run starts from it and only
migrates, instead of running initdb again.

The migration checks note what passed under ``checks/``, one empty file per check and
key (``passed``, ``record_pass``); with them on, a run after a change starts from the
``newest`` saved data directory, which holds their copies at revisions.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import coerce_resource_to_filename

from dbtoolkit import reaper

# Bump when what an entry holds changes meaning.
FORMAT = "2"  # 2: the template carries the leak watch
# Entries kept per project; older ones are removed when a new one is saved.
KEEP = 3


# Where the initialised (not yet migrated) data directories are saved, under the root.
INITDB = "initdb"
# An entry is copied under this prefix, with its owner's pid and start time, then renamed.
PARTIAL = ".partial-"


def cluster_key(pg_ctl: str, version: str, user: str, password: str | None) -> str:
    """Return the key of the initialised data directory these inputs produce."""
    return hashlib.sha256(_server(pg_ctl, version, user, password)).hexdigest()[:20]


def key(config: Config, pg_ctl: str, version: str, user: str, password: str | None) -> str:
    """Return the key of the migrated data directory these inputs produce."""
    digest = hashlib.sha256(_server(pg_ctl, version, user, password))
    if config.config_file_name is not None:
        digest.update(Path(config.config_file_name).read_bytes())
    for directory in history_directories(ScriptDirectory.from_config(config)):
        for path in sorted(directory.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(directory)).encode() + b"\0")
                digest.update(path.read_bytes())
    return digest.hexdigest()[:20]


def history_directories(script: ScriptDirectory) -> list[Path]:
    """Return the directories holding the history's files, sorted: env.py's and revisions'."""
    # Before Alembic 1.16, version_locations is None when alembic.ini names none; the
    # revisions are then in the script directory's versions/. A location may name a
    # package's resource ("myapp:versions"), which Alembic finds on disk.
    locations = (
        Path(coerce_resource_to_filename(str(location)))
        for location in script.version_locations or ()
    )
    return sorted({Path(script.dir), *locations})


def _server(pg_ctl: str, version: str, user: str, password: str | None) -> bytes:
    parts = (FORMAT, pg_ctl, version, user, password or "")
    return b"".join(part.encode() + b"\0" for part in parts)


def lookup(root: Path, entry_key: str) -> Path | None:
    """Return the saved data directory of ``entry_key``, if there is a complete one."""
    data = root / entry_key / "data"
    return data if (data / "PG_VERSION").is_file() else None


def saved(root: Path) -> list[Path]:
    """The saved data directories under ``root``, not those still (or forever) being copied."""
    return [data for data in root.glob("*/data") if not data.parent.name.startswith(".")]


def partial_prefix() -> str:
    """The name prefix of an entry being copied into place by this process."""
    return f"{PARTIAL}{os.getpid()}-{reaper.start_time(os.getpid())}-"


def newest(root: Path, other_than: str) -> Path | None:
    """The most recently saved migrated data directory of a key other than ``other_than``."""
    entries = [data for data in saved(root) if data.parent.name != other_than]
    complete = [data for data in entries if (data / "PG_VERSION").is_file()]
    return max(complete, key=lambda data: data.stat().st_mtime, default=None)


def destination(root: Path, entry_key: str) -> Path:
    """Where to save the entry of ``entry_key``; prunes all but the newest entries.

    And the copies that a killed run left half made.
    """
    entries = sorted(
        (data.parent for data in saved(root)), key=lambda path: path.stat().st_mtime, reverse=True
    )
    for old in entries[KEEP - 1 :]:
        shutil.rmtree(old, ignore_errors=True)
    for partial in root.glob(PARTIAL + "*"):
        pid, start, *_ = [*partial.name.removeprefix(PARTIAL).split("-"), "", ""]
        if pid.isdigit() and reaper.start_time(int(pid)) != start:
            shutil.rmtree(partial, ignore_errors=True)
    return root / entry_key


def discard(root: Path, entry_key: str) -> None:
    """Delete a broken or stale entry."""
    shutil.rmtree(root / entry_key, ignore_errors=True)


# Where the migration checks note what passed: one empty file per check and key.
CHECKS = "checks"
# Notes kept; the oldest beyond this are removed when one is added.
KEEP_CHECKS = 2000


def passed(root: Path, check: str, check_key: str) -> bool:
    """Whether ``check`` passed for ``check_key`` in an earlier run."""
    return (root / CHECKS / f"{check}-{check_key}").exists()


def record_pass(root: Path, check: str, check_key: str) -> None:
    """Note that ``check`` passed for ``check_key``; prune the oldest notes."""
    notes = root / CHECKS
    notes.mkdir(parents=True, exist_ok=True)
    (notes / f"{check}-{check_key}").touch()
    names = list(notes.iterdir())
    if len(names) > KEEP_CHECKS:
        for old in sorted(names, key=lambda path: path.stat().st_mtime)[:-KEEP_CHECKS]:
            old.unlink(missing_ok=True)
