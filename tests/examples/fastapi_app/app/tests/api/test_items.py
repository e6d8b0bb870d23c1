from fastapi.testclient import TestClient
from sqlmodel import Session, select

from app.core.config import settings
from app.models import Item


def test_create_item(
    client: TestClient, superuser_token_headers: dict[str, str], db: Session
) -> None:
    data = {"title": "Foo", "description": "Fighters"}
    r = client.post(f"{settings.API_V1_STR}/items/", headers=superuser_token_headers, json=data)
    assert r.status_code == 200
    content = r.json()
    assert content["title"] == data["title"]
    assert db.exec(select(Item).where(Item.title == "Foo")).one().description == "Fighters"


def test_every_test_starts_without_items(
    client: TestClient, superuser_token_headers: dict[str, str], db: Session
) -> None:
    # The items other tests create are not here: each test is rolled back.
    assert db.exec(select(Item)).all() == []
    r = client.get(f"{settings.API_V1_STR}/items/", headers=superuser_token_headers)
    assert r.json() == []


def test_create_two_items_and_read_them_back(
    client: TestClient, superuser_token_headers: dict[str, str]
) -> None:
    for title in ("Foo", "Bar"):
        r = client.post(
            f"{settings.API_V1_STR}/items/", headers=superuser_token_headers, json={"title": title}
        )
        assert r.status_code == 200
    r = client.get(f"{settings.API_V1_STR}/items/", headers=superuser_token_headers)
    assert sorted(item["title"] for item in r.json()) == ["Bar", "Foo"]
