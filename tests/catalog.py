"""The catalog project (``tests/examples/catalog``: authors and their books) for pytester runs.

It is configured only through dbtoolkit's ini settings, which also shows that the
plugin works with any schema. Tests take it from the ``catalog`` fixture (conftest.py),
whose ``@pytest.mark.catalog(...)`` marker gives the variants ``catalog_project`` makes.

An inner run whose tests use the database is a process of its own (``run``, forked by
forkserver.py): factories bound and SQLAlchemy registries filled by one run must not
leak into the next. One that ends before (``run_in_process``) needs no process of its own.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import forkserver
import pytest

EXAMPLE = Path(__file__).parent / "examples" / "catalog"

# The ini lines with which a project points dbtoolkit at its schema and factories.
CATALOG_SETTINGS = """\
dbtoolkit_alembic_ini = alembic.ini
dbtoolkit_factories = catalog_factories
"""

# The ini's pytest-asyncio loop scope, which settings that set their own replace.
LOOP_SCOPE = "asyncio_default_fixture_loop_scope = function\n"


def catalog_project(
    pytester: pytest.Pytester,
    settings: str = CATALOG_SETTINGS,
    second_revision: str = "",
    cache_dir: Path | None = None,
) -> None:
    """Copy the catalog project into ``pytester``'s directory, varied as asked.

    ``settings`` replace the dbtoolkit lines of its ini (and its pytest-asyncio loop
    scope, if they set one); ``second_revision`` is one statement run at the end of
    revision bbb2's upgrade; inner runs use ``cache_dir`` as their pytest cache when
    given, else their own in the project.
    """
    shutil.copytree(EXAMPLE, pytester.path, dirs_exist_ok=True)
    ini = pytester.path / "pytest.ini"
    text = ini.read_text()
    if "asyncio_default_fixture_loop_scope" in settings:
        text = text.replace(LOOP_SCOPE, "")
    text = text.replace(CATALOG_SETTINGS, settings)
    if cache_dir is not None:
        text += f"cache_dir = {cache_dir}\n"
    ini.write_text(text)
    if second_revision:
        revision = pytester.path / "migrations" / "versions" / "bbb2_books.py"
        revision.write_text(revision.read_text() + f"    {second_revision}\n")


def run(
    pytester: pytest.Pytester, *args: str, randomly: bool = False, fresh: bool = False
) -> pytest.RunResult:
    """Run pytest on the inner project in a process of its own, in file order unless ``randomly``.

    The process is forked from one that has imported what every run imports, unless
    ``fresh``: then it starts from nothing, for runs that look at what was imported.
    """
    if not randomly:
        args = ("-p", "no:randomly", *args)
    if fresh:
        return pytester.runpytest_subprocess(*args, timeout=180)
    return forkserver.runpytest(pytester, *args, timeout=180)


def run_in_process(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """Run pytest on an inner project in this process, in file order.

    For runs that end before a test uses the database (usage errors, the header,
    ``--co``): the factories they import are bound to no session, and pytester puts
    ``sys.modules`` back afterwards. It saves the subprocess's start.
    """
    # This process imported the plugins already, too late for pytest to rewrite their
    # asserts: it says so in a warning, which filterwarnings = error makes an error.
    quiet = ("-W", "ignore::pytest.PytestAssertRewriteWarning")
    return pytester.runpytest_inprocess("-p", "no:randomly", *quiet, *args)


def sep_line(result: pytest.RunResult, title: str) -> str:
    """Return the output line that is ``title`` between separator characters."""
    pattern = re.compile(rf"^[=_-]+ {re.escape(title)} [=_-]+$")
    matches = [line for line in result.outlines if pattern.match(line)]
    assert matches, f"no {title!r} line in the output"
    return matches[0]
