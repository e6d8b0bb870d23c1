"""dbtoolkit: real, migrated, isolated PostgreSQL for every test."""

from typing import TYPE_CHECKING, Any

from dbtoolkit.errors import DbtoolkitError
from dbtoolkit.fixtures import async_seed, seed

if TYPE_CHECKING:
    from dbtoolkit.isolation import isolated_session
    from dbtoolkit.queries import count_queries

__all__ = ["DbtoolkitError", "async_seed", "count_queries", "isolated_session", "seed"]


def __getattr__(name: str) -> Any:
    """Import the helpers that need SQLAlchemy when first used: the plugin imports this."""
    if name == "isolated_session":
        from dbtoolkit.isolation import isolated_session

        return isolated_session
    if name == "count_queries":
        from dbtoolkit.queries import count_queries

        return count_queries
    raise AttributeError(f"module 'dbtoolkit' has no attribute {name!r}")
