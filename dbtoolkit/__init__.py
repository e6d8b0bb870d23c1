"""dbtoolkit: real, migrated, isolated PostgreSQL for every test."""

from dbtoolkit.errors import DbtoolkitError
from dbtoolkit.fixtures import async_seed, seed
from dbtoolkit.isolation import isolated_session
from dbtoolkit.queries import count_queries

__all__ = ["DbtoolkitError", "async_seed", "count_queries", "isolated_session", "seed"]
