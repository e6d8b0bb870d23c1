from sqlalchemy import func, select

from dbtoolkit.models import User
from factories import UserFactory


def test_count_is_five(db_session, seeded_users):
    assert db_session.query(User).count() == 5


def test_can_add_one(db_session, seeded_users):
    db_session.add(UserFactory.build())
    db_session.flush()
    assert db_session.scalar(select(func.count()).select_from(User)) == 6


def test_seeded_users_are_five_users_with_ids(seeded_users):
    assert len(seeded_users) == 5
    assert all(isinstance(user, User) and user.id is not None for user in seeded_users)


def test_seeded_users_are_attached_to_the_test_session(db_session, seeded_users):
    assert all(user in db_session for user in seeded_users)
    seeded_users[0].name = "Renamed In This Test"
    db_session.flush()
    assert db_session.scalar(select(User.name).where(User.id == seeded_users[0].id)) == (
        "Renamed In This Test"
    )


def test_a_seed_requested_at_run_time_is_laid_in_the_test(request, db_session):
    users = request.getfixturevalue("seeded_users")
    assert len(users) == 5
    assert db_session.query(User).count() == 5
