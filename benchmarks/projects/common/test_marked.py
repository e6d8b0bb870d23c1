import pytest
from bench_models import User


@pytest.mark.dbtoolkit(isolation="database")
def test_0(db_session, seeded_users):
    assert db_session.query(User).count() == 5
