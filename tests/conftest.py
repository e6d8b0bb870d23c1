import os

import pytest
from developer import developer_database, developer_server  # noqa: F401 (fixtures)

from dbtoolkit import seed
from factories import UserFactory

pytest_plugins = ["pytester"]
# Projects that inner runs copy, with test suites of their own.
collect_ignore = ["examples"]

seeded_users = seed(UserFactory, 5)


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
