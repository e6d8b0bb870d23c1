"""Errors of dbtoolkit, written for the person running the tests.

Every message says what failed and names the option or file that fixes it. The
plugin reports these errors as their message alone, without a traceback.
"""

# What an async fixture or dbtoolkit.aio says without the async extra.
ASYNC_EXTRA = (
    "async fixtures need SQLAlchemy's asyncio support, asyncpg and pytest-asyncio; "
    'install them with pip install "dbtoolkit[async]"'
)


class DbtoolkitError(Exception):
    """Base class of all dbtoolkit errors."""


class ConfigError(DbtoolkitError):
    """A setting has a value dbtoolkit cannot use."""


class ServerError(DbtoolkitError):
    """No PostgreSQL server could be started or reached."""


class MigrationError(DbtoolkitError):
    """Alembic could not bring the test template to head."""


class OutsideDatabaseError(DbtoolkitError):
    """A connection to a database that is not one of the run's own was refused."""

    def __init__(self, message: str, target: str = "") -> None:
        super().__init__(message)
        self.target = target  # the refused database's URL, without its password


class HistoryError(MigrationError):
    """The Alembic history fails one of the migration checks."""


class IsolationError(DbtoolkitError):
    """A test escaped the transaction that isolates it."""


class NoSessionError(DbtoolkitError):
    """A factory was used where no test session is active."""


class LeakError(IsolationError):
    """Rows were committed outside the test's transaction while it ran."""


class LeakWarning(UserWarning):
    """The warning for committed rows, with ``--dbtoolkit-leaks=warn``."""


class DeferredConstraintError(DbtoolkitError):
    """A test left a deferred constraint violated, so its work could not have committed."""
