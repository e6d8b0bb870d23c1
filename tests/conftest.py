import os
import shutil
import tempfile
from pathlib import Path

import pytest
from catalog import catalog_project
from developer import developer_database, developer_server  # noqa: F401 (fixtures)

from dbtoolkit import seed
from factories import UserFactory

pytest_plugins = ["pytester"]
# Projects that inner runs copy, with test suites of their own.
collect_ignore = ["examples"]

seeded_users = seed(UserFactory, 5)

# A run writes about 1.7 GB of temporary files, most of them the data directories that
# inner runs save into their caches. On disk, writing and removing them took a fifth of
# the suite's time. They go to RAM where /dev/shm has room, as dbtoolkit's servers do,
# unless TMPDIR says where. (Set here, before pytest picks its base temporary directory
# and starts xdist's workers, which inherit it, as do the inner runs.)
if (
    "TMPDIR" not in os.environ
    and os.access("/dev/shm", os.W_OK | os.X_OK)
    and shutil.disk_usage("/dev/shm").free > 4 * 2**30
):
    os.environ["TMPDIR"] = "/dev/shm"
    tempfile.tempdir = None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "catalog(settings=..., second_revision=..., own_cache=False): "
        "the variant of the catalog project the catalog fixture copies",
    )
    # anyio's own plugin registers it, where anyio is installed ([test], not [async]).
    config.addinivalue_line("markers", "anyio: run the test on anyio's runner")


@pytest.fixture(autouse=True)
def _clean_environment(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the outer run's options and dbtoolkit settings out of pytester's inner runs."""
    if "pytester" not in request.fixturenames:
        return
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    # An outer xdist worker's variables would make the inner run think it is one too.
    for name in list(os.environ):
        if name.startswith(("DBTOOLKIT_", "PYTEST_XDIST_")):
            monkeypatch.delenv(name)
    # Each inner run is a Python process of its own: without bytecode caching it compiles
    # again every module that has none, dbtoolkit's and Faker's assertion-rewritten
    # plugin package among them.
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)


@pytest.fixture(scope="session")
def inner_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where inner runs keep their pytest caches, one per project below it.

    Shared by the inner runs of this outer run, on all its xdist workers (in the base
    temporary directory that theirs are in), so that a project's template is initdb'd
    and migrated once for all of them; two runs that save the same history at once are
    fine, one of them wins. One cache per project, as in real use. A cache keeps three
    histories' data directories: one that saved a fourth would remove the oldest,
    perhaps while another worker's run copies it, so no project has more than three.
    Not for runs that look into the cache or must migrate a history that another run may
    have saved (they would find it migrated): those keep a cache of their own.
    """
    base = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        base = base.parent
    path = base / "inner-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def catalog(
    request: pytest.FixtureRequest, pytester: pytest.Pytester, inner_cache: Path
) -> pytest.Pytester:
    """Pytester in a copy of the catalog project, the variant the catalog marker names.

    ``@pytest.mark.catalog(settings=..., second_revision=...)`` as ``catalog_project``
    takes them; the inner runs share ``inner_cache`` unless ``own_cache=True`` (tests of
    the cache, and any that would change what another run finds there).
    """
    options: dict[str, object] = {}
    for marker in reversed(list(request.node.iter_markers("catalog"))):
        options.update(marker.kwargs)  # the closest (the test's own) last
    own_cache = options.pop("own_cache", False)
    cache_dir = None if own_cache else inner_cache / "catalog"
    catalog_project(pytester, cache_dir=cache_dir, **options)
    return pytester
