from flask import Blueprint, abort, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.models import Post, User

bp = Blueprint("api", __name__)


@bp.post("/users")
def create_user():
    user = User(username=request.json["username"])
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        abort(409)
    return {"id": user.id, "username": user.username}, 201


@bp.get("/users")
def list_users():
    users = db.session.scalars(select(User).order_by(User.username))
    return {"users": [user.username for user in users]}


@bp.post("/users/<username>/posts")
def create_post(username: str):
    user = db.session.scalars(select(User).where(User.username == username)).one_or_none()
    if user is None:
        abort(404)
    db.session.add(Post(title=request.json["title"], author=user))
    db.session.commit()
    return {"posts": len(user.posts)}, 201
