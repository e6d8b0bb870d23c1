from fastapi import APIRouter
from sqlmodel import select

from app import crud
from app.api.deps import CurrentUser, SessionDep
from app.models import Item, ItemCreate, ItemPublic

router = APIRouter(prefix="/items", tags=["items"])


@router.get("/")
def read_items(session: SessionDep, current_user: CurrentUser) -> list[ItemPublic]:
    items = session.exec(select(Item).where(Item.owner_id == current_user.id)).all()
    return [ItemPublic.model_validate(item) for item in items]


@router.post("/")
def create_item(
    *, session: SessionDep, current_user: CurrentUser, item_in: ItemCreate
) -> ItemPublic:
    item = crud.create_item(session=session, item_in=item_in, owner_id=current_user.id)
    return ItemPublic.model_validate(item)
