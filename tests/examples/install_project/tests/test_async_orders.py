import pytest

# Where the async extra is not installed, these tests are skipped and nothing async is
# imported: the sync tests need none of it.
pytest.importorskip("pytest_asyncio", reason='needs pip install "dbtoolkit[async]"')

from dbtoolkit import async_seed
from dbtoolkit.aio import create_async
from sqlalchemy import func, select

from shop import async_orders
from shop.models import Customer, Order
from tests.factories import CustomerFactory, OrderFactory

pytestmark = pytest.mark.asyncio

async_seeded_customers = async_seed(CustomerFactory, 3)


async def count(session, model):
    return await session.scalar(select(func.count()).select_from(model))


async def test_the_async_seed_is_laid(async_db_session, async_seeded_customers):
    assert await count(async_db_session, Customer) == 3


async def test_factories_create_through_the_async_session(async_db_session):
    await create_async(OrderFactory, item="kettle")
    assert (await count(async_db_session, Order), await count(async_db_session, Customer)) == (1, 1)


async def test_the_applications_commit_stays_inside_the_test(
    async_db_session, async_db_bind, async_seeded_customers
):
    async_db_bind(async_orders.SessionLocal)
    await async_orders.place_order(async_seeded_customers[0].email, "teapot")
    assert (await async_db_session.scalars(select(Order.item))).all() == ["teapot"]


async def test_no_async_test_sees_another_tests_rows(async_db_session):
    assert (await count(async_db_session, Order), await count(async_db_session, Customer)) == (0, 0)
