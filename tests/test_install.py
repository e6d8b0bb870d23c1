"""The plugin as users install it: without the async extra, nothing async is needed.

SQLAlchemy 2.1 installs greenlet only with its asyncio extra, which dbtoolkit's
``async`` extra pulls in. ``pip install dbtoolkit`` and ``dbtoolkit[embedded]`` have
neither greenlet nor pytest-asyncio: the plugin must load and the sync fixtures work.
"""

from __future__ import annotations

import pytest
from catalog import LOOP_SCOPE, run

WITHOUT_ASYNC_TESTS = """
import sys

from sqlalchemy import func, select

from catalog_factories import BookFactory
from catalog_models import Book


def test_sync_fixtures_work(db_session, seeded_authors):
    BookFactory.create_batch(2)
    assert db_session.scalar(select(func.count()).select_from(Book)) == 2


def test_nothing_async_was_imported():
    assert "sqlalchemy.ext.asyncio" not in sys.modules
    assert "dbtoolkit.aio" not in sys.modules


def test_an_async_fixture_says_which_extra_to_install(async_db_session):
    pass
"""


def test_the_plugin_loads_and_works_without_greenlet_and_pytest_asyncio(
    catalog: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Packages that fail to import, as the missing ones do, in front of the real ones.
    for name in ("greenlet", "pytest_asyncio"):
        package = catalog.path / "missing" / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(f'raise ImportError("No module named {name!r}")\n')
    monkeypatch.setenv("PYTHONPATH", str(catalog.path / "missing"))
    # The catalog's ini without asyncio_default_fixture_loop_scope: nothing may ask for it.
    ini = catalog.path / "pytest.ini"
    ini.write_text(ini.read_text().replace(LOOP_SCOPE, ""))
    catalog.makepyfile(test_without_async=WITHOUT_ASYNC_TESTS)
    result = run(catalog, "-p", "no:asyncio", fresh=True)
    result.assert_outcomes(passed=2, errors=1)
    assert (
        result.outlines.count(
            "ConfigError: async fixtures need SQLAlchemy's asyncio support, asyncpg and "
            'pytest-asyncio; install them with pip install "dbtoolkit[async]"'
        )
        == 1
    )
