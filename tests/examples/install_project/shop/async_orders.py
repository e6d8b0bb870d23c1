"""Placing orders from async code: the same, on SQLAlchemy's asyncio extension."""

import os

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from shop.models import Customer, Order

engine = create_async_engine(
    os.environ.get("SHOP_ASYNC_DATABASE_URL", "postgresql+asyncpg://shop@localhost/shop")
)
# Attributes are not expired by commit: async code cannot load them lazily.
SessionLocal = async_sessionmaker(engine, expire_on_commit=False)


async def place_order(email: str, item: str) -> int:
    """Record an order for the customer with ``email`` and commit it."""
    async with SessionLocal() as session:
        customer = (await session.scalars(select(Customer).where(Customer.email == email))).one()
        order = Order(customer=customer, item=item)
        session.add(order)
        await session.commit()
        return order.id
