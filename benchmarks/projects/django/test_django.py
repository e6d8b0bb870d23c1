import pytest
from benchapp.models import User


@pytest.fixture
def seeded_users(db):
    users = [User(name=f"user {k}", email=f"user{k}@example.com") for k in range(5)]
    return User.objects.bulk_create(users)


def test_0(seeded_users):
    assert User.objects.count() == 5
