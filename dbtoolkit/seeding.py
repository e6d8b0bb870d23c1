"""How data is seeded: factory_boy factories bound to the current test's session.

Factories name no session of their own. ``bind`` points each one at
``current_session``, which returns the session that ``activate`` made current for
the test. ``reseed`` makes Faker and factory_boy produce the same values for the same
test on every run, whatever the order the tests run in.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import factory.random
from factory.alchemy import SQLAlchemyModelFactory
from sqlalchemy.orm import Session

from dbtoolkit.errors import ConfigError, NoSessionError

FactoryClass = type[Any]

_active: Session | None = None


def current_session() -> Session:
    """Return the running test's session: the session factory of every bound factory."""
    if _active is None:
        raise NoSessionError(
            "a factory tried to create a row outside a database test; request the "
            "db_session fixture (or a seed fixture such as seeded_users) in this test"
        )
    return _active


@contextmanager
def activate(session: Session) -> Iterator[Session]:
    """Make ``session`` the one bound factories create through, for the block."""
    global _active
    previous, _active = _active, session
    try:
        yield session
    finally:
        _active = previous


def factory_classes(module_names: Iterable[str]) -> tuple[FactoryClass, ...]:
    """Import the modules and return the concrete SQLAlchemy factories they define or import."""
    found: dict[FactoryClass, None] = {}
    for name in module_names:
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            raise ConfigError(
                f"factories module {name!r} could not be imported: {type(exc).__name__}: {exc}; "
                "fix the module or the dbtoolkit_factories setting (--dbtoolkit-factories)"
            ) from None
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, SQLAlchemyModelFactory) and not value._meta.abstract:
                found[value] = None
    return tuple(found)


def bind(factories: Iterable[FactoryClass]) -> None:
    """Make every factory create through ``current_session``."""
    for factory_class in factories:
        factory_class._meta.sqlalchemy_session = None
        factory_class._meta.sqlalchemy_session_factory = current_session


def seed_for(base: int, nodeid: str) -> int:
    """Return the seed of one test: stable for its node id, changed by ``base``."""
    digest = hashlib.sha256(f"{base}:{nodeid}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def reseed(seed: int, factories: tuple[FactoryClass, ...] = ()) -> None:
    """Seed Faker and factory_boy's random generator, and restart the factories' sequences.

    Together they make a test's values independent of the tests that ran before it.
    """
    factory.random.reseed_random(seed)  # type: ignore[no-untyped-call]
    for factory_class in factories:
        factory_class.reset_sequence(force=True)
