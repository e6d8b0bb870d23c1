from bench_models import User


def test_0(db_session, seeded_users):
    assert db_session.query(User).count() == 5
