import pytest
from sqlalchemy import func, select

from app.models import Todo

pytestmark = pytest.mark.asyncio


async def test_create_and_list(client, session):
    response = await client.post("/todos", json={"title": "write tests"})
    assert response.status_code == 201
    response = await client.get("/todos")
    assert [todo["title"] for todo in response.json()] == ["write tests"]
    assert await session.scalar(select(func.count()).select_from(Todo)) == 1


async def test_a_duplicate_title_is_refused(client):
    assert (await client.post("/todos", json={"title": "once"})).status_code == 201
    assert (await client.post("/todos", json={"title": "once"})).status_code == 409
    assert len((await client.get("/todos")).json()) == 1


async def test_finish_a_todo_made_through_the_session(client, session):
    todo = Todo(title="from the session")
    session.add(todo)
    await session.commit()
    response = await client.post(f"/todos/{todo.id}/done")
    assert response.json()["done"] is True


async def test_starts_empty(client):
    assert (await client.get("/todos")).json() == []
