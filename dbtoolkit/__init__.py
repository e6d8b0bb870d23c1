"""dbtoolkit: real, migrated, isolated PostgreSQL for every test."""

from dbtoolkit.errors import DbtoolkitError
from dbtoolkit.isolation import isolated_session
from dbtoolkit.plugin import seed

__all__ = ["DbtoolkitError", "isolated_session", "seed"]
