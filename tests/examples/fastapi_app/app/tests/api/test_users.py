from fastapi.testclient import TestClient
from sqlmodel import Session, select

from app import crud
from app.core.config import settings
from app.models import User, UserCreate
from app.tests.utils import random_email, random_lower_string


def test_read_users_counts_the_superuser(
    client: TestClient, superuser_token_headers: dict[str, str], db: Session
) -> None:
    r = client.get(f"{settings.API_V1_STR}/users/", headers=superuser_token_headers)
    assert r.status_code == 200
    emails = [user["email"] for user in r.json()["data"]]
    assert settings.FIRST_SUPERUSER in emails
    assert r.json()["count"] == len(db.exec(select(User)).all())


def test_create_user_new_email(
    client: TestClient, superuser_token_headers: dict[str, str], db: Session
) -> None:
    username, password = random_email(), random_lower_string()
    r = client.post(
        f"{settings.API_V1_STR}/users/",
        headers=superuser_token_headers,
        json={"email": username, "password": password},
    )
    assert 200 <= r.status_code < 300
    user = crud.get_user_by_email(session=db, email=username)
    assert user
    assert user.email == r.json()["email"]


def test_create_user_existing_username(
    client: TestClient, superuser_token_headers: dict[str, str], db: Session
) -> None:
    username, password = random_email(), random_lower_string()
    crud.create_user(session=db, user_create=UserCreate(email=username, password=password))
    r = client.post(
        f"{settings.API_V1_STR}/users/",
        headers=superuser_token_headers,
        json={"email": username, "password": password},
    )
    assert r.status_code == 400
    assert "_id" not in r.json()


def test_normal_user_cannot_list_users(
    client: TestClient, normal_user_token_headers: dict[str, str]
) -> None:
    r = client.get(f"{settings.API_V1_STR}/users/", headers=normal_user_token_headers)
    assert r.status_code == 403
