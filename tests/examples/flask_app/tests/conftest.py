import pytest
from app import create_app
from app.extensions import db
from app.models import User


@pytest.fixture(scope="session")
def app():
    app = create_app({"TESTING": True})
    with app.app_context():
        yield app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="module")
def ada(app):
    # Shared by the module's tests, as many Flask test suites do.
    user = User(username="ada")
    db.session.add(user)
    db.session.commit()
    return user.id
