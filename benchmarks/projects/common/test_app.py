import os

from bench_models import User
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

# The application's engine, built at import from the URL dbtoolkit_env gives it.
engine = create_engine(os.environ["DATABASE_URL"])


def test_0(seeded_users):
    with Session(engine) as session:
        assert session.query(User).count() == 5
