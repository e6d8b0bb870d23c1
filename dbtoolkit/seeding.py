"""How data is seeded: factory_boy factories bound to the current test's session.

Factories name no session of their own. ``bind`` points each one at
``current_session``, which returns the session that ``activate`` made current for
the test; polyfactory's ``SQLAlchemyFactory`` classes too (their ``__session__``, and
``__async_session__`` for the async test's). ``reseed`` and ``set_sequences`` make
Faker, factory_boy and polyfactory produce the same values for the same test on every
run, whatever the order the tests run in.
``prepare`` gives a test the seed layers it asks for on a ``SharedConnection``:
``lay`` creates a seed fixture's rows (a ``SeedSpec``) once, as one layer, for every
test that asks for them.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from dbtoolkit.errors import ConfigError, NoSessionError

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

    from dbtoolkit.isolation import SharedConnection

FactoryClass = type[Any]

T = TypeVar("T")


class Current(Generic[T]):
    """The running test's session (sync or async), made current for a block."""

    def __init__(self, missing: str) -> None:
        self._value: T | None = None
        self._missing = missing  # NoSessionError's message when no test made one current

    def get(self) -> T:
        """Return the current value, or raise NoSessionError outside a test that has one."""
        if self._value is None:
            raise NoSessionError(self._missing)
        return self._value

    @contextmanager
    def activate(self, value: T) -> Iterator[T]:
        """Make ``value`` the current one for the block."""
        previous, self._value = self._value, value
        try:
            yield value
        finally:
            self._value = previous


_session: Current[Session] = Current(
    "a factory tried to create a row outside a database test; request the "
    "db_session fixture (or a seed fixture such as seeded_users) in this test"
)


def current_session() -> Session:
    """Return the running test's session: the session factory of every bound factory."""
    return _session.get()


def activate(session: Session) -> AbstractContextManager[Session]:
    """Make ``session`` the one bound factories create through, for the block."""
    return _session.activate(session)


@contextmanager
def one_flush(factories: Iterable[FactoryClass]) -> Iterator[None]:
    """Within the block, factories add rows to the session without flushing each one.

    The session flushes them together afterwards, one INSERT per table.
    """
    saved = {cls: cls._meta.sqlalchemy_session_persistence for cls in _boy(factories)}
    for cls in saved:
        cls._meta.sqlalchemy_session_persistence = None
    try:
        yield
    finally:
        for cls, persistence in saved.items():
            cls._meta.sqlalchemy_session_persistence = persistence


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
        from factory.alchemy import SQLAlchemyModelFactory

        for _, value in inspect.getmembers(module, inspect.isclass):
            if (issubclass(value, SQLAlchemyModelFactory) and not value._meta.abstract) or (
                _is_polyfactory(value) and not value.__dict__.get("__is_base_factory__")
            ):
                found[value] = None
    return tuple(found)


def _is_polyfactory(cls: type[Any]) -> bool:
    """Whether ``cls`` is a polyfactory SQLAlchemyFactory (only if the project imported it)."""
    module = sys.modules.get("polyfactory.factories.sqlalchemy_factory")
    return module is not None and issubclass(cls, module.SQLAlchemyFactory)


def _boy(factories: Iterable[FactoryClass]) -> list[FactoryClass]:
    """The factory_boy factories among ``factories``."""
    factories = tuple(factories)
    if not factories:  # factory_boy need not be imported
        return []
    from factory.alchemy import SQLAlchemyModelFactory

    return [cls for cls in factories if issubclass(cls, SQLAlchemyModelFactory)]


def _async_session() -> Any:
    from dbtoolkit.aio import current_async_session  # only where the async extra is

    return current_async_session()


# Every factory ``bind`` bound in this process, flushed together. A run inside another
# (pytester's in-process runs) binds its own too; the outer run's stay bound.
_bound: list[FactoryClass] = []


def bind(factories: Iterable[FactoryClass]) -> None:
    """Make every factory create through ``current_session``."""
    factories = tuple(factories)
    _bound.extend(cls for cls in factories if cls not in _bound)
    boy = _boy(factories)
    for factory_class in factories:
        if factory_class in boy:
            factory_class._meta.sqlalchemy_session = None
            factory_class._meta.sqlalchemy_session_factory = current_session
        else:  # polyfactory
            factory_class.__session__ = current_session
            factory_class.__async_session__ = _async_session


def build_batch(factory: FactoryClass, count: int, attributes: Mapping[str, Any]) -> list[Any]:
    """Build ``count`` objects, unsaved, with a factory_boy or polyfactory factory."""
    if _boy([factory]):
        return list(factory.build_batch(count, **attributes))
    return list(factory.batch(count, **attributes))


def create_batch(factory: FactoryClass, count: int, attributes: Mapping[str, Any]) -> list[Any]:
    """Create ``count`` objects with a factory_boy or polyfactory factory."""
    if _boy([factory]):
        return list(factory.create_batch(count, **attributes))
    return list(factory.create_batch_sync(count, **attributes))


def create_flushed(
    session: Session, factory: FactoryClass, count: int, attributes: Mapping[str, Any]
) -> list[Any]:
    """Create ``count`` objects through ``session``, the rows of every table in one flush.

    factory_boy's create strategy runs in full (SubFactory, RelatedFactory and
    post-generation hooks); a polyfactory factory only builds, as its create commits.
    """
    with activate(session), one_flush((*_bound, factory)):
        if _boy([factory]):
            objects = list(factory.create_batch(count, **attributes))
        else:
            objects = build_batch(factory, count, attributes)
    session.add_all(objects)
    session.flush()
    return objects


def seed_for(base: int, nodeid: str) -> int:
    """Return the seed of one test: stable for its node id, changed by ``base``."""
    digest = hashlib.sha256(f"{base}:{nodeid}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def reseed(seed: int) -> None:
    """Seed Faker and factory_boy's random generator.

    What ``factory.random.reseed_random`` does (both get the state ``seed`` gives),
    without the throwaway generator and state copies: twice as fast, twice a test.
    Only those already imported: a run that uses none of them does not import them.
    """
    if "factory" in sys.modules:
        import factory.random

        factory.random.randgen.seed(seed)
        factory.random.randgen.state_set = True  # type: ignore[attr-defined]
    if "faker" in sys.modules:
        import faker.generator

        faker.generator.random.seed(seed)
    polyfactory = sys.modules.get("polyfactory.factories.base")
    if polyfactory is not None:
        polyfactory.BaseFactory.seed_random(seed)


def sequences(factories: Iterable[FactoryClass]) -> dict[FactoryClass, int]:
    """Return the next sequence number of each factory."""
    found = {}
    for factory_class in _boy(factories):
        found[factory_class] = factory_class._meta.next_sequence()
        factory_class.reset_sequence(found[factory_class], force=True)
    return found


def set_sequences(factories: Iterable[FactoryClass], values: Mapping[FactoryClass, int]) -> None:
    """Set each factory's next sequence number; a factory not in ``values`` restarts.

    Restarted sequences make a test's values independent of the tests before it.
    """
    for factory_class in _boy(factories):
        factory_class.reset_sequence(values.get(factory_class), force=True)


# How long a seed's layer may stay laid, widest first: wider layers lie below.
SCOPES = ("session", "module", "function")


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one per seed() call
class SeedSpec:
    """What a seed fixture lays: ``count`` rows from ``factory`` with ``attributes``."""

    factory: FactoryClass
    count: int
    attributes: Mapping[str, Any]
    scope: str = "function"

    @classmethod
    def checked(
        cls, factory: FactoryClass, count: int, attributes: Mapping[str, Any], scope: str
    ) -> SeedSpec:
        """A new spec, or a ConfigError that names what ``seed()`` was given wrong."""
        if count < 0:
            raise ConfigError(f"seed() needs a count of 0 or more, got {count!r}")
        if scope not in SCOPES:
            raise ConfigError(f"seed() takes scope {', '.join(SCOPES)}, got {scope!r}")
        return cls(factory, count, attributes, scope)


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one per setup
class FixtureLayer:
    """What a fixture wider than a test wrote through the application."""

    fixture: str


# A layer's key: its seed, and the module it belongs to when it is module-scoped; or
# a fixture's layer.
LayerKey = tuple[SeedSpec | FixtureLayer, str]


@dataclass(frozen=True)
class Laid:
    """A laid seed: its objects (detached) and the factories' sequences after it."""

    objects: list[Any]
    sequences: Mapping[FactoryClass, int]
    depth: int


def lay(
    spec: SeedSpec,
    connection: Connection,
    below: Laid | None,
    *,
    factories: tuple[FactoryClass, ...],
    base_seed: int,
) -> Laid:
    """Create a seed's rows on ``connection`` and commit them into its transaction.

    The values depend only on the seed, its depth and what is laid below it, so every
    test that shares them sees the same rows. The rows are flushed together, one
    INSERT per table.
    """
    depth = below.depth + 1 if below else 1
    set_sequences(factories, below.sequences if below else {})
    reseed(seed_for(base_seed, f"seed {spec.factory.__qualname__} x{spec.count} @{depth}"))
    from sqlalchemy.orm import Session

    session = Session(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    with activate(session), one_flush((*factories, spec.factory)):
        objects = create_batch(spec.factory, spec.count, spec.attributes)
    session.commit()
    session.close()  # detaches the objects; each test merges them into its own session
    return Laid(objects, sequences(factories), depth)


def prepare(
    connection: SharedConnection[Laid],
    keys: list[LayerKey],
    *,
    factories: tuple[FactoryClass, ...],
    base_seed: int,
    test_seed: int,
) -> dict[SeedSpec, Laid]:
    """Give a test the seed layers ``keys`` on ``connection``, laying those not there yet.

    Afterwards the factories' sequences continue after the seeds, and Faker is back
    on the test's own seed if laying drew from it.
    """
    laid_now = []

    def lay_one(key: LayerKey, on: Connection, below: Laid | None) -> Laid:
        laid_now.append(key)
        assert isinstance(key[0], SeedSpec), key
        return lay(key[0], on, below, factories=factories, base_seed=base_seed)

    laid = connection.prepare(keys, lay_one)  # type: ignore[arg-type]
    if laid:  # the test's own values continue the sequences after its seeds
        set_sequences(factories, laid[-1].sequences)
    if laid_now:
        reseed(test_seed)
    return {
        spec: layer
        for (spec, _), layer in zip(keys, laid, strict=True)
        if isinstance(spec, SeedSpec)
    }


def prepare_fixture_layers(connection: SharedConnection[Laid], keys: list[LayerKey]) -> None:
    """Keep only the fixtures' layers ``keys``: seeds are laid again on top of them later."""
    connection.prepare(keys, _unlayable)  # type: ignore[arg-type]


def _unlayable(key: LayerKey, on: Connection, below: Laid | None) -> Laid:
    raise AssertionError(f"a fixture's layer cannot be laid again: {key}")


def fixture_layer(connection: SharedConnection[Laid], fixture: str) -> LayerKey:
    """Close what a wider fixture wrote as a layer; return its key."""
    below = connection.layers[-1][1] if connection.layers else None
    key: LayerKey = (FixtureLayer(fixture), "")
    laid = Laid([], below.sequences, below.depth) if below else Laid([], {}, 0)
    connection.add_layer(key, laid)
    return key


def create_now(spec: SeedSpec, session: Session, factories: tuple[FactoryClass, ...]) -> list[Any]:
    """Create a seed's rows in the test itself, flushed together, and commit them."""
    with one_flush((*factories, spec.factory)):
        objects = create_batch(spec.factory, spec.count, spec.attributes)
    session.commit()
    return objects
