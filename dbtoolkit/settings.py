"""Settings: one name, three spellings, resolved once.

Every setting ``x_y`` is the CLI option ``--dbtoolkit-x-y``, the ini key
``dbtoolkit_x_y`` and the environment variable ``DBTOOLKIT_X_Y``. The first of
CLI, environment, ini and default that is set wins, and ``Settings.sources``
remembers which one it was, for the pytest header.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from dbtoolkit.errors import ConfigError

Source = Literal["cli", "env", "ini", "default"]


@dataclass(frozen=True)
class Option:
    """One setting's name, help text and default, as text."""

    name: str
    help: str
    default: str

    @property
    def cli(self) -> str:
        """The command line spelling, e.g. ``--dbtoolkit-alembic-ini``."""
        return "--dbtoolkit-" + self.name.replace("_", "-")

    @property
    def ini(self) -> str:
        """The ini key, also the argparse ``dest``."""
        return "dbtoolkit_" + self.name

    @property
    def env(self) -> str:
        """The environment variable."""
        return "DBTOOLKIT_" + self.name.upper()


OPTIONS = (
    Option("alembic_ini", "Path of the alembic.ini that migrates the test database", "alembic.ini"),
    Option(
        "factories",
        "Modules whose factory_boy factories create through each test's db_session "
        "(comma-separated on the command line and in the environment)",
        "",
    ),
    Option(
        "seed",
        "Base seed for Faker and factory_boy; each test's seed is derived from it and "
        "the test's node id",
        "0",
    ),
)


@dataclass(frozen=True)
class Settings:
    """The resolved settings of one pytest run."""

    alembic_ini: Path
    factories: tuple[str, ...]
    seed: int
    sources: Mapping[str, Source]

    def describe(self, name: str) -> str:
        """Return ``value (from source)`` for the header."""
        value = getattr(self, name)
        if isinstance(value, tuple):
            value = ", ".join(value) or "none"
        return f"{value} (from {self.sources[name]})"


def add_options(parser: pytest.Parser) -> None:
    """Register every setting as a CLI option and an ini key."""
    group = parser.getgroup("dbtoolkit", "dbtoolkit: isolated PostgreSQL tests")
    for option in OPTIONS:
        group.addoption(
            option.cli, dest=option.ini, default=None, help=f"{option.help} (env {option.env})"
        )
        if option.name == "factories":
            parser.addini(option.ini, option.help, type="linelist", default=None)
        else:
            parser.addini(option.ini, option.help, type="string", default=None)


def resolve(config: pytest.Config) -> Settings:
    """Resolve every setting once: CLI > environment > ini > default."""
    raw: dict[str, str | list[str]] = {}
    sources: dict[str, Source] = {}
    base: dict[str, Path] = {}
    for option in OPTIONS:
        cli = config.getoption(option.ini)
        ini = config.getini(option.ini)
        if cli is not None:
            raw[option.name], sources[option.name] = cli, "cli"
            base[option.name] = config.invocation_params.dir
        elif option.env in os.environ:
            raw[option.name], sources[option.name] = os.environ[option.env], "env"
            base[option.name] = config.invocation_params.dir
        elif ini:
            raw[option.name], sources[option.name] = ini, "ini"
            base[option.name] = config.inipath.parent if config.inipath else config.rootpath
        else:
            raw[option.name], sources[option.name] = option.default, "default"
            base[option.name] = config.rootpath

    seed_text = str(raw["seed"]).strip()
    try:
        seed = int(seed_text)
    except ValueError:
        raise ConfigError(
            f"dbtoolkit seed must be a whole number, got {seed_text!r} "
            f"(from {sources['seed']}); fix --dbtoolkit-seed, DBTOOLKIT_SEED or dbtoolkit_seed"
        ) from None

    factories = raw["factories"]
    if isinstance(factories, str):
        factories = factories.split(",")

    return Settings(
        alembic_ini=base["alembic_ini"] / str(raw["alembic_ini"]),
        factories=tuple(name.strip() for name in factories if name.strip()),
        seed=seed,
        sources=sources,
    )
