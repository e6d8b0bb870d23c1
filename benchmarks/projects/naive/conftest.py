"""The naive chain as the guide writes it."""

from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from bench_factories import UserFactory
from pytest_postgresql.janitor import DatabaseJanitor
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

ALEMBIC_INI = str(Path(__file__).with_name("alembic.ini"))


@pytest.fixture(scope="session")
def engine(postgresql_proc):
    proc = postgresql_proc
    with DatabaseJanitor(
        user=proc.user, host=proc.host, port=proc.port, dbname="naive", password=proc.password
    ):
        url = f"postgresql+psycopg2://{proc.user}@{proc.host}:{proc.port}/naive"
        config = Config(ALEMBIC_INI)
        config.set_main_option("sqlalchemy.url", url)
        command.upgrade(config, "head")
        engine = create_engine(url)
        yield engine
        engine.dispose()


@pytest.fixture
def db_session(engine):
    connection = engine.connect()
    transaction = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    UserFactory._meta.sqlalchemy_session = session
    yield session
    session.close()
    transaction.rollback()
    connection.close()


@pytest.fixture
def seeded_users(db_session):
    return UserFactory.create_batch(5)
