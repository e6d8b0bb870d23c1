"""pytest-postgresql's own per-test database, cloned from a template Alembic migrated."""

from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from faker import Faker
from pytest_postgresql import factories

ALEMBIC_INI = str(Path(__file__).with_name("alembic.ini"))


def migrate(host, port, user, dbname, password=None, autocommit=False):
    config = Config(ALEMBIC_INI)
    config.set_main_option("sqlalchemy.url", f"postgresql+psycopg2://{user}@{host}:{port}/{dbname}")
    command.upgrade(config, "head")


postgresql_proc = factories.postgresql_proc(load=[migrate])
fake = Faker()


@pytest.fixture
def seeded_users(postgresql):
    rows = [(fake.name(), f"user{k}@example.com") for k in range(5)]
    with postgresql.cursor() as cursor:
        cursor.executemany("INSERT INTO users (name, email) VALUES (%s, %s)", rows)
    postgresql.commit()
    return rows
