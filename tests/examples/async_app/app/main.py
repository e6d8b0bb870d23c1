from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import get_session
from app.models import Todo

app = FastAPI()
SessionDep = Annotated[AsyncSession, Depends(get_session)]


class TodoIn(BaseModel):
    title: str


class TodoOut(BaseModel):
    id: int
    title: str
    done: bool


@app.post("/todos", status_code=201)
async def create_todo(todo: TodoIn, session: SessionDep) -> TodoOut:
    row = Todo(title=todo.title)
    session.add(row)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise HTTPException(409, "a todo with this title exists") from None
    return TodoOut(id=row.id, title=row.title, done=row.done)


@app.get("/todos")
async def list_todos(session: SessionDep) -> list[TodoOut]:
    rows = await session.scalars(select(Todo).order_by(Todo.title))
    return [TodoOut(id=row.id, title=row.title, done=row.done) for row in rows]


@app.post("/todos/{todo_id}/done")
async def finish(todo_id: int, session: SessionDep) -> TodoOut:
    row = await session.get(Todo, todo_id)
    if row is None:
        raise HTTPException(404)
    row.done = True
    await session.commit()
    return TodoOut(id=row.id, title=row.title, done=row.done)
