from sqlalchemy import func, select

from shop.models import Customer, Order
from shop.orders import SessionLocal, place_order
from tests.factories import OrderFactory


def count(session, model):
    return session.scalar(select(func.count()).select_from(model))


def test_the_seed_is_laid(db_session, seeded_customers):
    assert count(db_session, Customer) == 3


def test_factories_create_through_the_tests_session(db_session):
    OrderFactory.create_batch(2)
    assert (count(db_session, Order), count(db_session, Customer)) == (2, 2)


def test_the_applications_commit_stays_inside_the_test(db_session, db_bind, seeded_customers):
    db_bind(SessionLocal)
    place_order(seeded_customers[0].email, "teapot")
    assert db_session.scalars(select(Order.item)).all() == ["teapot"]


def test_no_test_sees_another_tests_rows(db_session, seeded_customers):
    assert (count(db_session, Order), count(db_session, Customer)) == (0, 3)
