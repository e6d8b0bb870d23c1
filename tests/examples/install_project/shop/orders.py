"""Placing orders, through the application's own engine and sessionmaker."""

import os

from sqlalchemy import create_engine, select
from sqlalchemy.orm import sessionmaker

from shop.models import Customer, Order

engine = create_engine(
    os.environ.get("SHOP_DATABASE_URL", "postgresql+psycopg2://shop@localhost/shop")
)
SessionLocal = sessionmaker(engine)


def place_order(email: str, item: str) -> int:
    """Record an order for the customer with ``email`` and commit it."""
    with SessionLocal() as session:
        customer = session.scalars(select(Customer).where(Customer.email == email)).one()
        order = Order(customer=customer, item=item)
        session.add(order)
        session.commit()
        return order.id
