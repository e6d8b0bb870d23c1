from app import create_app
from app.extensions import db
from app.models import User
from sqlalchemy import func, select


def test_a_second_app_with_its_own_context_sees_the_same_rows():
    other = create_app({"TESTING": True})
    with other.app_context():
        db.session.add(User(username="linus"))
        db.session.commit()
        assert db.session.scalar(select(func.count()).select_from(User)) == 1
    with other.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == 1
