import pytest
from app.extensions import db
from app.models import Post, User
from sqlalchemy import func, select

pytestmark = pytest.mark.usefixtures("ada")


def test_create_user(client):
    response = client.post("/users", json={"username": "grace"})
    assert response.status_code == 201
    assert db.session.scalar(select(func.count()).select_from(User)) == 2


def test_a_duplicate_is_refused_and_the_session_goes_on(client):
    assert client.post("/users", json={"username": "edsger"}).status_code == 201
    assert client.post("/users", json={"username": "edsger"}).status_code == 409
    assert client.get("/users").json == {"users": ["ada", "edsger"]}


def test_only_the_shared_user_is_there(client):
    assert client.get("/users").json == {"users": ["ada"]}


def test_posts_through_the_session_and_the_client(client, ada):
    db.session.add(Post(title="Notes", author_id=ada))
    db.session.commit()
    response = client.post("/users/ada/posts", json={"title": "More notes"})
    assert response.json == {"posts": 2}


def test_no_posts_are_left(client):
    assert db.session.scalar(select(func.count()).select_from(Post)) == 0
    assert db.engine.url.database.startswith("dbtoolkit_")
